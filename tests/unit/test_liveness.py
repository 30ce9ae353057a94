"""Process liveness: the same pid *and* start time, zombies excluded; /proc fast path and psutil agree."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from stageflow.procs import proc_stat, running
from stageflow.runtimes.local import ProcInfo, _alive


def _info(pid: int, ticks: int | None) -> ProcInfo:
    return ProcInfo("web", "blue", pid, psutil.Process(pid).create_time(), "r1", 8000, ticks)


def test_alive_until_exit_then_zombie_then_gone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        state, ticks = proc_stat(proc.pid)
        assert state in {"S", "R"} and isinstance(ticks, int) and running(proc.pid)
        fast, slow = _info(proc.pid, ticks), _info(proc.pid, None)
        assert _alive(fast) and _alive(slow)
        # Another process that got the same pid later has another start time.
        assert not _alive(ProcInfo("web", "blue", proc.pid, 0.0, "r1", 8000, ticks - 1))
        proc.kill()
        # Not reaped yet: the process is a zombie now, which is not alive.
        for _ in range(100):
            if proc_stat(proc.pid)[0] == "Z":
                break
            time.sleep(0.02)
        assert proc_stat(proc.pid)[0] == "Z" and not running(proc.pid)
        assert not _alive(fast) and not _alive(slow)
    finally:
        proc.kill()
        proc.wait()
    assert proc_stat(proc.pid) == ("", None)
    assert not _alive(fast) and not _alive(slow)
