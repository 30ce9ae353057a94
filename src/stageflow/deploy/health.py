"""HTTP health gate: per-attempt timeout, growing waits, a deadline, and a reason that says which."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Probe:
    """One health attempt."""

    ok: bool
    reason: str
    seconds: float
    #: The ``X-Stageflow-Upstream`` header: which upstream the proxy used (stageflow's probes only).
    upstream: str | None = None


class Prober(Protocol):
    """Performs one HTTP GET and classifies it (passed in so logic is testable)."""

    def __call__(self, url: str, expect: int, timeout: float) -> Probe: ...


EXCERPT_BYTES = 4096
_STATUS_LINE = re.compile(rb"HTTP/\d(?:\.\d)? (\d{3})")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_UPSTREAM = re.compile(rb"\r\nx-stageflow-upstream:[ \t]*([0-9A-Za-z.:\[\], ]{1,200})\r", re.IGNORECASE)


def http_probe(url: str, expect: int, timeout: float, *, cafile: Path | None = None,
               headers: Mapping[str, str] | None = None) -> Probe:
    """GET ``url``: ok on status ``expect``; otherwise timeout, refused, or status + body excerpt.

    ``timeout`` bounds the whole attempt (connect, TLS, response). A probe is one GET of a small
    document, so it speaks HTTP/1.0 over a socket: the server may not answer in chunks and closes
    when done. ``http.client`` would do the same at ~35 ms of import (its e-mail header parser and
    ``ssl``), a tenth of the start-up budget of ``stageflow status``; ``ssl`` loads only for https.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    request = http_request(url, headers)
    start = time.monotonic()
    deadline = start + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            sock = raw
            if parts.scheme == "https":
                sock = _tls(raw, host, cafile)
            sock.sendall(request)
            data = _read_response(sock, deadline)
    except TimeoutError:
        return Probe(False, f"timeout after {timeout:.1f}s", time.monotonic() - start)
    except ConnectionRefusedError:
        return Probe(False, "connection refused", time.monotonic() - start)
    except OSError as exc:
        return Probe(False, f"cannot connect: {exc}", time.monotonic() - start)
    return classify_response(data, expect, time.monotonic() - start)


def http_request(url: str, headers: Mapping[str, str] | None = None) -> bytes:
    """The probe's request for ``url``: one HTTP/1.0 GET that the server answers and closes."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authority = parts.netloc.rpartition("@")[2]  # never send credentials from the URL
    return (f"GET {target} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: stageflow-health\r\n"
            "Accept: */*\r\nConnection: close\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items() if v.isalnum()) + "\r\n").encode()


def classify_response(data: bytes, expect: int, took: float) -> Probe:
    """A probe's verdict on the bytes a server sent back (however they travelled: socket, ssh tunnel)."""
    head, _, body = data.partition(b"\r\n\r\n")
    m = _STATUS_LINE.match(head)
    if not m:
        return Probe(False, f"not an HTTP response: {' '.join(head[:80].decode('latin-1').split())!r}", took)
    status = int(m.group(1))
    up = _UPSTREAM.search(head + b"\r")
    upstream = up.group(1).decode() if up else None
    if status == expect:
        return Probe(True, f"HTTP {status} in {took * 1000:.0f}ms", took, upstream)
    excerpt = " ".join(body[:EXCERPT_BYTES].decode("utf-8", "replace").split())[:160]
    return Probe(False, f"HTTP {status} (expected {expect}): {excerpt}", took, upstream)


def _tls(raw: socket.socket, host: str, cafile: Path | None) -> socket.socket:
    import ssl

    ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    if cafile:
        # The certificate we serve is the trust anchor itself (self-signed or a pinned leaf).
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx.wrap_socket(raw, server_hostname=host)


def _read_response(sock: socket.socket, deadline: float) -> bytes:
    """The response head and up to EXCERPT_BYTES of body; stops early at a complete Content-Length."""
    buf = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(buf)
        buf += chunk
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > 65536:
                return bytes(buf)  # no head end in sight: not HTTP, classified by the caller
            continue
        m = _CONTENT_LENGTH.search(buf, 0, end + 2)
        wanted = min(int(m.group(1)), EXCERPT_BYTES) if m else EXCERPT_BYTES
        if len(buf) - end - 4 >= wanted:
            return bytes(buf)


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
