"""Supervisor of one service process of the local runtime: restarts it when it dies after starting well.

Run as ``python -m stageflow.runtimes.supervise [--grace S] [--max-restarts N] [--window S]
[--record FILE] -- CMD...``;
the local runtime starts one per service, as the leader of the service's process group, with the
service's environment, working directory and log file. The pid file names the supervisor.

* A child that exits within ``--grace`` seconds of its first start is not restarted: the supervisor
  exits with the child's status, so a release that cannot start fails its health gate at once (and
  the deploy quotes its last log lines) instead of crash-looping until the deadline.
* A child that dies later (a crash, the OOM killer, ``kill -9``) is started again after 1, 2, 4 …
  30 s, each time with a line in the service log. More than ``--max-restarts`` restarts within
  ``--window`` seconds means it is broken, not unlucky: the supervisor gives up and exits.
* With ``--record FILE`` every restart (and giving up) is also written there as JSON, for
  ``stageflow status``: ``{"restarts": 2, "last_exit": "signal SIGKILL", "at": "…", "gave_up": false}``.
* TERM, INT and QUIT stop it: the signal goes to the child, which is awaited, and nothing restarts.
  HUP, USR1 and USR2 are passed on. ``stageflow`` stops a service by signalling the whole process
  group, so the child is never left behind.

Standard library only: one of these runs per service, for as long as the app runs.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
PASS_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


@dataclass(frozen=True)
class Policy:
    """When to restart."""

    grace: float = 10.0
    max_restarts: int = 5
    window: float = 300.0
    record: str | None = None


def backoff(attempt: int) -> float:
    """Seconds to wait before restart number ``attempt`` (1-based): 1, 2, 4, … capped at 30."""
    return float(min(30, 2 ** (attempt - 1)))


def describe(returncode: int) -> str:
    """``exit status 3`` or ``signal SIGKILL``."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


class Supervisor:
    """Runs ``cmd`` under ``policy``; ``log`` writes one line to the service log."""

    def __init__(self, cmd: Sequence[str], policy: Policy, log: Callable[[str], None]) -> None:
        self.cmd = list(cmd)
        self.policy = policy
        self.log = log
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.total_restarts = 0

    def record(self, code: int, *, gave_up: bool) -> None:
        """Leave the restart count where ``stageflow status`` reads it (atomically; best effort)."""
        if not self.policy.record:
            return
        doc = {"restarts": self.total_restarts, "last_exit": describe(code),
               "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "gave_up": gave_up}
        from stageflow.errors import StageflowError
        from stageflow.fsutil import write_file

        record = Path(self.policy.record)
        # Best effort: the service log has the same line; status just will not count it.
        with contextlib.suppress(OSError, StageflowError):
            write_file(record, json.dumps(doc), root=record.parent, mode=0o600)

    def on_signal(self, signum: int, _frame: object) -> None:
        """Stop signals end supervision; every handled signal reaches the child."""
        if signum in STOP_SIGNALS:
            self.stopping = True
        if self.child is not None:
            self.child.send_signal(signum)  # a no-op once the child has been reaped

    def run(self) -> int:
        """Supervise until stopped or given up; the last child's status as an exit code."""
        restarts: collections.deque[float] = collections.deque()
        first = True
        exit_code = 0
        while not self.stopping:
            started = time.monotonic()
            self.child = subprocess.Popen(self.cmd)
            code = self.child.wait()
            ran = time.monotonic() - started
            exit_code = code if code >= 0 else 128 - code
            if self.stopping:
                return exit_code
            if first and ran < self.policy.grace:
                self.log(f"exited with {describe(code)} {ran:.1f}s after starting: not restarted")
                return exit_code
            first = False
            now = time.monotonic()
            while restarts and now - restarts[0] > self.policy.window:
                restarts.popleft()
            if len(restarts) >= self.policy.max_restarts:
                self.log(f"exited with {describe(code)}; {len(restarts)} restarts in the last "
                         f"{self.policy.window:.0f}s: giving up")
                self.record(code, gave_up=True)
                return exit_code
            restarts.append(now)
            self.total_restarts += 1
            self.record(code, gave_up=False)
            delay = backoff(len(restarts))
            self.log(f"exited with {describe(code)} after {ran:.1f}s; restart {len(restarts)} in {delay:.0f}s")
            self._sleep(delay)
        return exit_code

    def _sleep(self, seconds: float) -> None:
        """Sleep, cut short by a stop signal."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def parse(argv: Sequence[str]) -> tuple[Policy, list[str]]:
    """``[--grace S] [--max-restarts N] [--window S] [--record FILE] -- CMD...``."""
    if "--" not in argv:
        raise SystemExit("usage: python -m stageflow.runtimes.supervise [--grace S] [--max-restarts N] "
                         "[--window S] [--record FILE] -- CMD...")
    split = list(argv).index("--")
    opts, cmd = list(argv[:split]), list(argv[split + 1:])
    numbers = {"--grace": 10.0, "--max-restarts": 5.0, "--window": 300.0}
    record: str | None = None
    while opts:
        name = opts.pop(0)
        if name not in (*numbers, "--record") or not opts:
            raise SystemExit(f"supervise: unknown or incomplete option {name!r}")
        value = opts.pop(0)
        if name == "--record":
            record = value
        else:
            try:
                numbers[name] = float(value)
            except ValueError:
                raise SystemExit(f"supervise: {name} needs a number, got {value!r}") from None
    if not cmd:
        raise SystemExit("supervise: no command after --")
    return Policy(numbers["--grace"], int(numbers["--max-restarts"]), numbers["--window"], record), cmd


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    policy, cmd = parse(sys.argv[1:] if argv is None else argv)

    def log(line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        sys.stderr.write(f"--- {stamp} stageflow supervisor (pid {os.getpid()}): {line} ---\n")
        sys.stderr.flush()

    sup = Supervisor(cmd, policy, log)
    for sig in (*STOP_SIGNALS, *PASS_SIGNALS):
        signal.signal(sig, sup.on_signal)
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())
