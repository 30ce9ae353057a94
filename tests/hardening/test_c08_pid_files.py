"""Class 8: a pid read back from disk gets a signal only when it is provably stageflow's own process."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stageflow.procs import is_ours, proc_stat
from tests.hardening.support import run
from tests.support.app import App, make_app, teardown_app


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A process stageflow did not start; it must survive everything below."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    a = make_app(tmp_path)
    yield a
    teardown_app(a)


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def test_is_ours_checks_every_fact(bystander: subprocess.Popen[bytes], tmp_path: Path) -> None:
    pid = bystander.pid
    ticks = proc_stat(pid)[1]
    assert is_ours(pid, start_ticks=ticks, argv_has="sleep")
    assert not is_ours(pid, start_ticks=(ticks or 0) + 1)
    assert not is_ours(pid, argv_has="nginx")
    assert not is_ours(pid, cwd_in=str(tmp_path))
    for bad in (0, 1, -1, os.getpid(), 1 << 40):
        assert not is_ours(bad)


@pytest.mark.parametrize("content", ["{pid}", "{pid}\n", "1", "-1", "0", "{me}", "garbage", "", "99999999999999999999",
                                     "\x00\x01"])
def test_down_never_signals_what_a_planted_nginx_pid_names(app: App, bystander: subprocess.Popen[bytes],
                                                           content: str) -> None:
    nginx_dir = app.root / ".stageflow" / "nginx" / "dev"
    nginx_dir.mkdir(parents=True, exist_ok=True)
    (nginx_dir / "nginx.pid").write_text(content.format(pid=bystander.pid, me=os.getpid()))
    try:
        proc = run(app.root, "down", "dev")
    finally:
        (nginx_dir / "nginx.pid").unlink()  # never leave a hostile pid file to anything after us
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    time.sleep(0.2)
    assert _alive(bystander)


def test_down_never_signals_a_forged_service_pid_file(app: App, bystander: subprocess.Popen[bytes]) -> None:
    run_dir = app.root / ".stageflow" / "run" / "dev"
    run_dir.mkdir(parents=True, exist_ok=True)
    import psutil

    # Everything right but the process: pid, create time and start ticks of the bystander.
    forged = {"service": "backend", "color": "blue", "pid": bystander.pid,
              "create_time": psutil.Process(bystander.pid).create_time(), "release": "r1", "port": 1,
              "start_ticks": proc_stat(bystander.pid)[1]}
    (run_dir / "backend-blue.json").write_text(json.dumps(forged))
    (run_dir / "backend-green.json").write_text('{"pid": "1; rm -rf /", "create_time": []}')
    proc = run(app.root, "down", "dev")
    assert proc.returncode == 0, proc.stderr
    time.sleep(0.2)
    assert _alive(bystander)


@pytest.mark.e2e
def test_a_damaged_pid_file_of_the_live_release_never_stops_it(practika: App) -> None:
    practika.sf("deploy", "dev")
    live = practika.status()["dev"]
    pid_file = next((practika.root / ".stageflow" / "run" / "dev").glob("backend-*.json"))
    pid_file.write_text("{garbage")
    failures: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                r = httpx.get(practika.url("dev"), timeout=5)
                if r.status_code != 200:
                    failures.append(str(r.status_code))
            except httpx.HTTPError as exc:
                failures.append(type(exc).__name__)
            time.sleep(0.02)

    t = threading.Thread(target=poll)
    t.start()
    try:
        practika.touch_commit()
        practika.sf("deploy", "dev")
    finally:
        stop.set()
        t.join()
    assert failures == [], failures
    assert practika.status()["dev"]["release"] != live["release"]
    assert practika.get("dev")[0] == 200
    # The old release's processes were stopped all the same (found by their instance tag), not orphaned.
    import psutil

    left = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("STAGEFLOW_RELEASE") == live["release"]:
                left.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    assert left == [], f"processes of the replaced release {live['release']} still run: {left}"
