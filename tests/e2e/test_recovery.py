"""Crash recovery under constant load through nginx: `kill -9` of stageflow at the dangerous points of
a deploy, then the next command, with every request counted.

The app is a tiny real HTTP server (no requirements file, so no virtualenv) that answers with the
release it runs, and an optional release command that logs when it starts and ends.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.app import STAGEFLOW, App, step_started, teardown_app, wait_for
from tests.support.load import Load
from tests.support.tiny import make_tiny

pytestmark = pytest.mark.e2e

@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[App]:
    app = make_tiny(tmp_path, watch="2s", drain="3s")
    yield app
    teardown_app(app)


@pytest.fixture
def tiny_release(tmp_path: Path) -> Iterator[App]:
    app = make_tiny(tmp_path, watch="500ms", drain="1s", release=True)
    yield app
    teardown_app(app)


def _serves(app: App) -> str:
    r = httpx.get(f"http://127.0.0.1:{app.ports['staging']}/health/", timeout=5)
    return str(r.json()["version"])


def _kill_at(app: App, step: str, *extra_env: str) -> None:
    """Start a deploy of a new commit and `kill -9` it as soon as ``step`` has started."""
    app.touch_commit(f"to be killed at {step}")
    env = dict(e.split("=", 1) for e in extra_env)
    proc = subprocess.Popen([str(STAGEFLOW), "deploy", "staging"], cwd=app.root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env={**os.environ, **env})
    assert wait_for(lambda: step_started(app, step), timeout=60, interval=0.02), f"never reached {step}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _colors(app: App) -> set[str]:
    return {p.environ()["STAGEFLOW_INSTANCE"].rsplit("::", 1)[1] for p in app.instance_processes()}


def _audit(app: App) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = json.loads(app.sf("history", "--audit", "--json").stdout)
    return rows


@pytest.mark.parametrize("next_command", ["deploy", "rollback"])
def test_kill_9_after_cutover_then_next_command_drops_no_request(tiny: App, next_command: str) -> None:
    tiny.sf("deploy", "staging")
    tiny.touch_commit("v1")
    tiny.sf("deploy", "staging")
    v0, v1 = json.loads(tiny.sf("history", "staging", "--json").stdout)[1]["release_id"], _serves(tiny)
    _kill_at(tiny, "watch")
    v2 = _serves(tiny)
    assert v2 not in (v0, v1)  # nginx routes to the unconfirmed release

    # status says what really serves, and that the record disagrees
    st = tiny.status()["staging"]
    assert st["release"] == v2 and st["recorded"] == v1, st
    assert st["processes"] == 2 and "nginx routes to" in st["mismatch"], st
    assert "gone" in st["lock_stale"]
    text = tiny.sf("status").stdout
    assert "MISMATCH" in text and "STALE" in text
    # history shows the dead deploy as crashed before any command marks it
    dead = tiny.last_deployment("staging")
    assert dead["outcome"] == "crashed" and "gone" in dead["error"]

    with Load(tiny.ports["staging"]) as load:
        time.sleep(0.5)
        out = tiny.sf(next_command, "staging")
        time.sleep(0.5)
    assert load.failures == [], load.failures[:5]
    assert load.ok > 50
    assert "pointed nginx back at the recorded" in out.stdout
    expected = v0 if next_command == "rollback" else None
    final = _serves(tiny)
    assert final == expected if expected else final not in (v0, v1, v2)
    st = tiny.status()["staging"]
    assert st["release"] == st["recorded"] == final and st["mismatch"] is None and st["processes"] == 1
    assert len(_colors(tiny)) == 1
    outcomes = {e["outcome"] for e in _audit(tiny)}
    assert {"took-over", "recovered", "swept"} <= outcomes, outcomes


def test_kill_9_while_draining_the_old_release_adopts_the_watched_one(tiny: App) -> None:
    tiny.sf("deploy", "staging")
    v0 = _serves(tiny)
    _kill_at(tiny, "stop-old")
    v1 = _serves(tiny)
    assert v1 != v0
    tiny.touch_commit("v2")
    with Load(tiny.ports["staging"]) as load:
        time.sleep(0.3)
        out = tiny.sf("deploy", "staging")
        time.sleep(0.3)
    assert load.failures == [], load.failures[:5]
    assert f"passed its watch before the deploy was interrupted: adopted {v1}" in out.stdout
    st = tiny.status()["staging"]
    assert st["previous"] == v1 and st["release"] not in (v0, v1) and st["processes"] == 1


def _intervals(log: Path) -> list[tuple[float, float]]:
    lines = [ln.split() for ln in log.read_text().splitlines()]
    starts = [float(t) for k, t in lines if k == "start"]
    ends = [float(t) for k, t in lines if k == "end"]
    return list(zip(starts, ends, strict=True))


def test_an_orphaned_release_command_is_awaited_never_run_twice_at_once(tiny_release: App) -> None:
    app = tiny_release
    app.sf("deploy", "staging")
    v0 = _serves(app)
    _kill_at(app, "migrate", "MIGRATION_SECONDS=4")
    orphans = [p for p in app.instance_processes() if p.environ()["STAGEFLOW_INSTANCE"].endswith("::release")]
    assert orphans, "the release command should outlive the killed deploy"
    with Load(app.ports["staging"]) as load:
        out = app.sf("deploy", "staging", env={"MIGRATION_SECONDS": "1"})
    assert load.failures == [], load.failures[:5]
    assert "release command of an interrupted deploy" in out.stdout and "waited for it to finish" in out.stdout
    runs = _intervals(app.root.parent / "migrations.log")
    assert len(runs) == 3
    for (_, end), (start, _) in itertools.pairwise(runs):
        assert start >= end, runs  # never two at once
    assert not any(p.is_running() for p in orphans)
    assert _serves(app) != v0
    assert "recovered" in {e["outcome"] for e in _audit(app)}


def test_rollback_without_to_walks_further_back_each_time(tiny: App) -> None:
    releases = []
    for i in range(3):
        if i:
            tiny.touch_commit(f"v{i}")
        tiny.sf("deploy", "staging")
        releases.append(_serves(tiny))
    with Load(tiny.ports["staging"]) as load:
        tiny.sf("rollback", "staging")
        first = _serves(tiny)
        tiny.sf("rollback", "staging")
        second = _serves(tiny)
    assert load.failures == [], load.failures[:5]
    assert (first, second) == (releases[1], releases[0])  # not back and forth between the last two
    third = tiny.sf("rollback", "staging", check=False)
    assert third.returncode == 1 and "no earlier release" in third.stderr
    assert "rolled back away from" in third.stderr
    rows = json.loads(tiny.sf("history", "staging", "--json").stdout)
    marked = {r["release_id"] for r in rows if r["rolled_back"]}
    assert marked == {releases[2], releases[1]}
    assert "(rolled back away from)" in tiny.sf("history", "staging").stdout
    assert any(e["outcome"] == "refused" and "no earlier release" in e["detail"] for e in _audit(tiny))
    # naming a release is always possible, and clears its mark
    tiny.sf("rollback", "staging", "--to", releases[2])
    assert _serves(tiny) == releases[2]


def test_deploys_apply_releases_keep_crashed_releases_included(tiny: App) -> None:
    cfg = tiny.root / "stageflow.yml"
    cfg.write_text(cfg.read_text() + "releases: {keep: 2}\n")
    tiny.commit("keep two releases")
    tiny.sf("deploy", "staging")
    _kill_at(tiny, "health")  # its release directory is left behind
    crashed = tiny.last_deployment("staging")["release_id"]
    for i in range(3):
        tiny.touch_commit(f"v{i}")
        tiny.sf("deploy", "staging")
    kept = sorted(p.name for p in (tiny.root / ".stageflow" / "releases").iterdir() if not p.name.startswith("."))
    st = tiny.status()["staging"]
    assert kept == sorted([st["release"], st["previous"]]), kept
    assert crashed not in kept
