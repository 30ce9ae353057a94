"""Logs: error and traceback lines in the services' logs, 5xx, latency and throughput from the proxy's.

Each file is read from where the previous check stopped (its inode and offset are kept in the state
store), so every count is "since the last check". A file seen for the first time is read from its
end: old errors are history, not news. A rotated or truncated file is read from its start. At most
``MAX_READ`` bytes are read per check, from the end, so a log flood cannot stall the monitor.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stageflow.alerts.model import Observation
from stageflow.monitor.thresholds import Limits

MAX_READ = 8 * 2**20
_ERROR = re.compile(r"\b(ERROR|CRITICAL|FATAL)\b")
_TRACEBACK = "Traceback (most recent call last)"
_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+)[^"]*" (?P<status>\d{3}) \S+(?: "[^"]*" "[^"]*")?'
                     r'(?: rt=(?P<rt>\d+(?:\.\d+)?))?')
_NOISE = re.compile(r"0x[0-9a-fA-F]+|\d+(?:\.\d+)?")


@dataclass
class Cursor:
    """Where reading a file stopped, and the error kinds already seen in it."""

    path: str
    inode: int
    offset: int
    kinds: list[str] = field(default_factory=list)
    read_at: float | None = None


def read_new(path: Path, cursor: Cursor | None) -> tuple[str, Cursor]:
    """The text appended to ``path`` since ``cursor``, and the new cursor (no symlinks followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return "", Cursor(str(path), 0, 0, cursor.kinds if cursor else [])
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        kinds = cursor.kinds if cursor else []
        if cursor is None:
            return "", Cursor(str(path), st.st_ino, st.st_size, kinds)
        start = cursor.offset if cursor.inode == st.st_ino and cursor.offset <= st.st_size else 0
        start = max(start, st.st_size - MAX_READ)
        fh.seek(start)
        data = fh.read(st.st_size - start)
    # Stop at the last complete line: a line being written is read whole next time.
    cut = data.rfind(b"\n") + 1
    return data[:cut].decode("utf-8", "replace"), Cursor(str(path), st.st_ino, start + cut, kinds)


def error_kind(line: str) -> str:
    """A line with its numbers and addresses blanked: errors that differ only there are one kind."""
    return _NOISE.sub("N", line.strip())[:160]


@dataclass
class LogScan:
    """What a chunk of an application log holds."""

    errors: int = 0
    tracebacks: int = 0
    samples: dict[str, list[str]] = field(default_factory=dict)


def scan_app_log(text: str) -> LogScan:
    """Count error lines and tracebacks; keep the first lines of each kind (a traceback's kind is its last line)."""
    scan = LogScan()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if _TRACEBACK in line:
            scan.tracebacks += 1
            block = [line]
            j = i + 1
            while j < len(lines) and (lines[j].startswith((" ", "\t")) or not lines[j].strip()):
                block.append(lines[j])
                j += 1
            last = lines[j] if j < len(lines) else block[-1]
            if j < len(lines):
                block.append(last)
                j += 1
            scan.samples.setdefault(error_kind(last), [b for b in block if b.strip()][-4:])
            i = j
            continue
        if _ERROR.search(line):
            scan.errors += 1
            scan.samples.setdefault(error_kind(line), [line.strip()[:300]])
        i += 1
    return scan


@dataclass
class AccessScan:
    """Requests of a chunk of the proxy's access log."""

    requests: int = 0
    errors_5xx: int = 0
    times_ms: list[float] = field(default_factory=list)
    by_path: dict[str, list[float]] = field(default_factory=dict)


def scan_access_log(text: str) -> AccessScan:
    """Parse nginx "combined" lines (with stageflow's ``rt=`` request time when present)."""
    scan = AccessScan()
    for line in text.splitlines():
        m = _ACCESS.search(line)
        if m is None:
            continue
        scan.requests += 1
        if m.group("status").startswith("5"):
            scan.errors_5xx += 1
        if m.group("rt") is not None:
            ms = float(m.group("rt")) * 1000
            scan.times_ms.append(ms)
            scan.by_path.setdefault(m.group("path").split("?")[0][:200], []).append(ms)
    return scan


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


@dataclass
class LogCheck:
    """Error lines and tracebacks per service log since the last check."""

    env: str
    files: dict[str, Path]
    limits: Limits
    cursors: dict[str, Cursor]
    name: str = "log_errors"
    target: str = "logs"
    updated: list[Cursor] = field(default_factory=list)

    async def run(self) -> list[Observation]:
        """One observation per service log."""
        return await asyncio.to_thread(self._run)

    def _run(self) -> list[Observation]:
        out = []
        for service, path in self.files.items():
            text, cur = read_new(path, self.cursors.get(str(path)))
            scan = scan_app_log(text)
            new = [k for k in scan.samples if k not in cur.kinds]
            cur.kinds = [*cur.kinds, *new][-500:]
            self.updated.append(cur)
            count = scan.errors + scan.tracebacks
            sev = self.limits.severity(count) if count else "ok"
            details = [f"new: {' | '.join(scan.samples[k])}"[:400] for k in new[:3]]
            out.append(Observation(self.env, "log_errors", service, sev,
                                   f"{scan.errors} error line(s), {scan.tracebacks} traceback(s) since the last check"
                                   + (f"; {len(new)} new kind(s)" if new else ""), float(count), self.limits.shown,
                                   "lines", hint=f"read {path}" if sev != "ok" else "", details=details,
                                   metrics=[("log_errors", float(count))]))
        return out


@dataclass
class AccessLogCheck:
    """5xx error rate, latency percentiles and throughput from the proxy's access log."""

    env: str
    path: Path
    error_rate: Limits
    latency: Limits
    min_requests: int
    interval: float
    cursors: dict[str, Cursor]
    now: float = 0.0
    name: str = "error_rate"
    target: str = "nginx"
    updated: list[Cursor] = field(default_factory=list)

    async def run(self) -> list[Observation]:
        """Error rate (above ``min_requests`` only) and p95 against the response-time threshold."""
        return await asyncio.to_thread(self._run)

    def _run(self) -> list[Observation]:
        before = self.cursors.get(str(self.path))
        text, cur = read_new(self.path, before)
        self.updated.append(cur)
        scan = scan_access_log(text)
        rate = scan.errors_5xx / scan.requests * 100 if scan.requests else 0.0
        # Per second since the last read (a one-shot run may come any time), else per interval.
        last = before.read_at if before is not None else None
        elapsed = self.now - last if last is not None and self.now > last else self.interval
        rps = scan.requests / elapsed if elapsed > 0 else 0.0
        metrics = [("requests", float(scan.requests)), ("rps", rps), ("http_5xx", float(scan.errors_5xx))]
        if scan.requests < self.min_requests:
            sev, summary = "ok", (f"{scan.requests} request(s), {scan.errors_5xx} 5xx: below {self.min_requests}, "
                                  "the error rate is not judged")
        else:
            sev = self.error_rate.severity(rate)
            summary = f"{scan.errors_5xx} of {scan.requests} requests failed with 5xx ({rate:.1f}%)"
            metrics.append(("error_rate", rate))
        out = [Observation(self.env, "error_rate", "nginx", sev, summary, rate, self.error_rate.shown, "%",
                           hint=f"the app's log and {self.path}" if sev != "ok" else "", metrics=metrics,
                           judged=scan.requests >= self.min_requests)]
        if scan.times_ms:
            p50, p95, p99 = (percentile(scan.times_ms, q) for q in (50, 95, 99))
            slow = sorted(scan.by_path.items(), key=lambda kv: -percentile(kv[1], 95))[:5]
            lsev = self.latency.severity(p95)
            obs = Observation(self.env, "latency", "nginx", lsev,
                              f"p50 {p50:.0f}ms, p95 {p95:.0f}ms, p99 {p99:.0f}ms over {len(scan.times_ms)} requests "
                              f"({rps:.1f}/s)", p95, self.latency.shown, "ms",
                              hint="slowest: " + ", ".join(p for p, _ in slow[:3]) if lsev != "ok" else "",
                              metrics=[("p50_ms", p50), ("p95_ms", p95), ("p99_ms", p99)])
            obs.details = [f"{p}: p95 {percentile(v, 95):.0f}ms ({len(v)} requests)" for p, v in slow]
            # "metric|target": the engine stores each path as its own target (the report's slowest endpoints).
            obs.metrics += [(f"path_p95_ms|{p}", percentile(v, 95)) for p, v in slow]
            out.append(obs)
        return out
