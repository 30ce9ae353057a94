"""The service supervisor, on real processes: restart after a late death, never after a failed start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from stageflow.runtimes.supervise import backoff, describe, parse

SUPERVISE = [sys.executable, "-I", "-m", "stageflow.runtimes.supervise"]


def start(tmp_path: Path, script: str, *opts: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "service.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([*SUPERVISE, *opts, "--", sys.executable, "-c", script],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def child_of(proc: subprocess.Popen[bytes], timeout: float = 10) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = psutil.Process(proc.pid).children()
        if kids:
            return kids[0]
        time.sleep(0.05)
    raise AssertionError("no child started")


def test_a_failed_start_is_not_restarted_and_its_status_is_kept(tmp_path: Path) -> None:
    proc, log = start(tmp_path, "import sys; print('boom'); sys.exit(3)")
    assert proc.wait(10) == 3
    text = log.read_text()
    assert "boom" in text and text.count("boom") == 1
    assert "exited with exit status 3" in text and "not restarted" in text


def test_a_late_death_is_restarted_and_a_stop_is_final(tmp_path: Path) -> None:
    script = "import time; print('up', flush=True); time.sleep(60)"
    record = tmp_path / "restarts.json"
    proc, log = start(tmp_path, script, "--grace", "0.3", "--record", str(record))
    try:
        first = child_of(proc)
        time.sleep(0.5)  # past the grace period: a death now is a crash, not a failed start
        first.kill()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            kids = psutil.Process(proc.pid).children()
            if kids and kids[0].pid != first.pid:
                break
            time.sleep(0.05)
        second = child_of(proc)
        assert second.pid != first.pid and second.is_running()
        deadline = time.monotonic() + 10  # the restarted service is up once it has said so
        while log.read_text().splitlines().count("up") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "exited with signal SIGKILL" in log.read_text() and "restart 1 in 1s" in log.read_text()
        doc = json.loads(record.read_text())
        assert doc["restarts"] == 1 and doc["last_exit"] == "signal SIGKILL" and doc["gave_up"] is False
        # TERM to the supervisor alone still reaches the service, and nothing restarts.
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 128 + signal.SIGTERM
        assert not second.is_running() or second.status() == psutil.STATUS_ZOMBIE
        assert log.read_text().splitlines().count("up") == 2
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_crash_loop_gives_up(tmp_path: Path) -> None:
    # Lives past the grace period, then dies: every restart counts, the third one is refused.
    script = "import time, sys; time.sleep(0.4); sys.exit(7)"
    record = tmp_path / "restarts.json"
    proc, log = start(tmp_path, script, "--grace", "0.2", "--max-restarts", "2", "--window", "60",
                      "--record", str(record))
    assert proc.wait(30) == 7
    assert json.loads(record.read_text()) | {"at": None} == {
        "restarts": 2, "last_exit": "exit status 7", "gave_up": True, "at": None}
    text = log.read_text()
    assert "restart 1 in 1s" in text and "restart 2 in 2s" in text
    assert "2 restarts in the last 60s: giving up" in text


def test_small_parts() -> None:
    assert [backoff(n) for n in (1, 2, 3, 6, 9)] == [1, 2, 4, 30, 30]
    assert describe(3) == "exit status 3" and describe(-9) == "signal SIGKILL"
    policy, cmd = parse(["--grace", "2", "--record", "/tmp/r.json", "--", "gunicorn", "--bind", "x"])
    assert policy.grace == 2 and policy.record == "/tmp/r.json" and cmd == ["gunicorn", "--bind", "x"]
    for bad in (["gunicorn"], ["--grace", "--"], ["--nope", "1", "--", "x"], ["--"], ["--grace", "soon", "--", "x"]):
        with pytest.raises(SystemExit):
            parse(bad)
