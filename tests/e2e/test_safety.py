"""Deploy safety against real processes: zero downtime under load, crashed deploys, concurrent deploys."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest

from tests.support.app import App, step_started, wait_for
from tests.support.load import Load

pytestmark = pytest.mark.e2e


def test_zero_failed_requests_during_good_and_broken_deploys(practika: App) -> None:
    practika.sf("deploy", "production")
    practika.touch_commit("v2")
    with Load(practika.ports["production"], practika.ssl_context()) as load:
        time.sleep(0.5)
        practika.sf("deploy", "production")
        time.sleep(0.5)
    assert load.failures == [], load.failures[:5]
    assert load.ok > 50
    v2 = practika.status()["production"]["release"]
    practika.break_health()
    with Load(practika.ports["production"], practika.ssl_context()) as load:
        time.sleep(0.5)
        failed = practika.sf("deploy", "production", check=False)
        time.sleep(0.5)
    assert failed.returncode == 1
    assert load.failures == [], load.failures[:5]
    assert load.ok > 50
    assert practika.get("production")[1]["version"] == v2


def test_kill_9_mid_deploy_next_deploy_takes_over_and_leaves_no_orphans(practika: App) -> None:
    practika.sf("deploy", "staging")
    before = practika.status()["staging"]["release"]
    practika.touch_commit("v2")
    proc = practika.spawn("deploy", "staging")
    assert wait_for(lambda: step_started(practika, "health"), timeout=120), "deploy never reached health"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    # the new release's processes outlived the deploy
    colors = {p.environ()["STAGEFLOW_INSTANCE"].rsplit("::", 1)[1] for p in practika.instance_processes()}
    assert colors == {"blue", "green"}
    lock = practika.sf("lock", "status", "staging").stdout
    assert "STALE" in lock and "gone" in lock
    assert practika.get("staging")[1]["version"] == before  # the old one kept serving
    out = practika.sf("deploy", "staging")
    assert "taking over a stale lock" in out.stdout
    st = practika.status()["staging"]
    assert st["healthy"] and st["release"] != before
    procs = practika.instance_processes()
    tags = {p.environ()["STAGEFLOW_INSTANCE"] for p in procs if "::staging::" in p.environ()["STAGEFLOW_INSTANCE"]}
    assert len(tags) == 1, tags  # only the serving color is left
    history = json.loads(practika.sf("history", "staging", "--json").stdout)
    assert history[1]["outcome"] == "crashed"
    assert "unlocked" in practika.sf("lock", "status", "staging").stdout


def test_second_concurrent_deploy_is_refused_with_holder_details(practika: App) -> None:
    practika.sf("deploy", "dev")
    practika.touch_commit("v2")
    first = practika.spawn("deploy", "dev")
    assert wait_for(lambda: step_started(practika, "preflight"), timeout=60)
    second = practika.sf("deploy", "dev", check=False)
    assert second.returncode == 1
    assert "locked by" in second.stderr and f"pid {first.pid}" in second.stderr and "since" in second.stderr
    assert first.wait(timeout=240) == 0
    assert practika.status()["dev"]["healthy"]


def test_full_refuses_up_front_while_a_later_environment_is_being_deployed(practika: App) -> None:
    practika.sf("deploy", "dev")
    dev_before = practika.status()["dev"]["release"]
    practika.touch_commit("v2")
    staging = practika.spawn("deploy", "staging")
    assert wait_for(lambda: step_started(practika, "preflight"), timeout=60)
    full = practika.sf("full", check=False)
    assert full.returncode == 1
    assert "environment staging is locked by" in full.stderr and "nothing was promoted" in full.stderr
    assert practika.status()["dev"]["release"] == dev_before  # dev was not touched
    assert staging.wait(timeout=240) == 0


def _nginx_processes(practika: App, env: str) -> list[psutil.Process]:
    here = str(practika.root / ".stageflow" / "nginx" / env)
    found = []
    for p in psutil.process_iter(["name", "cwd", "status"]):
        if p.info["name"] == "nginx" and p.info["cwd"] == here and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(p)
    return found


def test_kill_9_of_the_nginx_master_next_deploy_and_down_recover(practika: App) -> None:
    practika.sf("deploy", "dev")
    master = int((practika.root / ".stageflow/nginx/dev/nginx.pid").read_text())
    os.kill(master, signal.SIGKILL)
    # Its workers outlive it and keep serving the release; status still sees it healthy.
    assert wait_for(lambda: all(p.pid != master for p in _nginx_processes(practika, "dev")), timeout=10)
    assert _nginx_processes(practika, "dev")
    assert practika.status()["dev"]["healthy"] is True
    practika.touch_commit("after the proxy crash")
    out = practika.sf("deploy", "dev")
    assert "nginx master died and its workers still hold port" in out.stdout
    dep = practika.last_deployment("dev")
    cutover = next(s for s in dep["steps"] if s["name"] == "cutover")
    assert "started; replaced" in cutover["detail"] and "orphaned worker(s) of a dead master" in cutover["detail"]
    assert practika.status()["dev"]["healthy"] is True
    # The same crash, then `down`: nothing of this env's proxy is left listening.
    os.kill(int((practika.root / ".stageflow/nginx/dev/nginx.pid").read_text()), signal.SIGKILL)
    practika.sf("down", "dev")
    assert wait_for(lambda: not _nginx_processes(practika, "dev"), timeout=10), _nginx_processes(practika, "dev")


def test_a_lost_state_database_adopts_what_nginx_serves_without_downtime(practika: App) -> None:
    practika.sf("deploy", "dev")
    first = practika.get("dev")[1]["version"]
    for f in (practika.root / ".stageflow").glob("state.db*"):
        f.unlink()
    practika.touch_commit("after losing the state")
    with Load(practika.ports["dev"]) as load:
        time.sleep(0.5)
        out = practika.sf("deploy", "dev")
        time.sleep(0.5)
    assert load.failures == [], load.failures[:5]
    assert load.ok > 20
    assert f"adopted {first}" in out.stdout and "sweep" not in out.stdout
    st = practika.status()["dev"]
    assert st["healthy"] and st["release"] not in (None, first) and st["previous"] == first
    colors = {p.environ()["STAGEFLOW_INSTANCE"].rsplit("::", 1)[1] for p in practika.instance_processes()}
    assert len(colors) == 1  # the adopted release was drained and stopped like any old one
