"""HTTP health gate: per-attempt timeout, growing waits, a deadline, and a reason that says which."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Probe:
    """One health attempt."""

    ok: bool
    reason: str
    seconds: float


class Prober(Protocol):
    """Performs one HTTP GET and classifies it (passed in so logic is testable)."""

    def __call__(self, url: str, expect: int, timeout: float) -> Probe: ...


def http_probe(url: str, expect: int, timeout: float, *, cafile: Path | None = None) -> Probe:
    """GET ``url``: ok on status ``expect``; otherwise timeout, refused, or status + body excerpt.

    Uses the standard library: a probe is one GET, and httpx's import and TLS set-up would be most
    of the cost of ``stageflow status``.
    """
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    start = time.monotonic()
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        import ssl

        ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        if cafile:
            # The certificate we serve is the trust anchor itself (self-signed or a pinned leaf).
            ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        conn.request("GET", path, headers={"User-Agent": "stageflow-health", "Connection": "close"})
        resp = conn.getresponse()
        body = resp.read(4096).decode("utf-8", "replace")
        status = resp.status
    except TimeoutError:
        return Probe(False, f"timeout after {timeout:.1f}s", time.monotonic() - start)
    except ConnectionRefusedError:
        return Probe(False, "connection refused", time.monotonic() - start)
    except (OSError, http.client.HTTPException) as exc:
        return Probe(False, f"cannot connect: {exc}", time.monotonic() - start)
    finally:
        conn.close()
    took = time.monotonic() - start
    if status == expect:
        return Probe(True, f"HTTP {status} in {took * 1000:.0f}ms", took)
    excerpt = " ".join(body.split())[:160]
    return Probe(False, f"HTTP {status} (expected {expect}): {excerpt}", took)


@dataclass(frozen=True)
class GateResult:
    """Outcome of a health gate."""

    ok: bool
    attempts: int
    reason: str
    seconds: float


def wait_healthy(
    url: str,
    *,
    expect: int = 200,
    timeout: float = 5.0,
    interval: float = 1.0,
    deadline: float = 60.0,
    probe: Prober = http_probe,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    fail_fast: Callable[[], str | None] = lambda: None,
    on_attempt: Callable[[int, Probe], None] | None = None,
) -> GateResult:
    """Probe until healthy or ``deadline``; waits grow 1.5x per attempt, capped at 5s.

    ``fail_fast`` returns a reason to give up at once (the process already exited).
    """
    start = clock()
    wait = interval
    attempts = 0
    last = "no attempt made"
    while True:
        attempts += 1
        remaining = deadline - (clock() - start)
        p = probe(url, expect, max(0.1, min(timeout, remaining)))
        if on_attempt:
            on_attempt(attempts, p)
        if p.ok:
            return GateResult(True, attempts, p.reason, clock() - start)
        last = p.reason
        dead = fail_fast()
        if dead:
            return GateResult(False, attempts, f"{dead} (last probe: {last})", clock() - start)
        if clock() - start + wait > deadline:
            return GateResult(
                False, attempts, f"not healthy within {deadline:.0f}s after {attempts} attempts: {last}",
                clock() - start,
            )
        sleep(wait)
        wait = min(wait * 1.5, 5.0)


def watch(
    url: str, *, seconds: float, expect: int, timeout: float, probe: Prober = http_probe,
    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
) -> GateResult:
    """After cutover: every probe during ``seconds`` must pass; the first failure ends the watch."""
    start = clock()
    attempts = 0
    while True:
        attempts += 1
        p = probe(url, expect, timeout)
        if not p.ok:
            return GateResult(False, attempts, f"failed during the watch period: {p.reason}", clock() - start)
        if clock() - start >= seconds:
            return GateResult(True, attempts, f"{attempts} probes passed over {seconds:.0f}s", clock() - start)
        sleep(min(0.5, max(0.05, seconds / 6)))
