"""Health gate logic with a scripted prober and a fake clock: no sleeping."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from stageflow.deploy.health import Probe, http_probe, wait_healthy, watch


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def scripted(*results: Probe) -> object:
    seq = list(results)

    def probe(url: str, expect: int, timeout: float) -> Probe:
        return seq.pop(0) if len(seq) > 1 else seq[0]

    return probe


def test_growing_waits_until_healthy() -> None:
    clock = FakeClock()
    bad = Probe(False, "connection refused", 0.0)
    res = wait_healthy("u", interval=1.0, deadline=60, probe=scripted(bad, bad, bad, Probe(True, "HTTP 200", 0)),  # type: ignore[arg-type]
                       sleep=clock.sleep, clock=clock)
    assert res.ok and res.attempts == 4
    assert clock.sleeps == [1.0, 1.5, 2.25]


def test_deadline_reason_names_the_last_failure() -> None:
    clock = FakeClock()
    res = wait_healthy("u", interval=1.0, deadline=10, probe=scripted(Probe(False, "HTTP 503 (expected 200): down", 0)),  # type: ignore[arg-type]
                       sleep=clock.sleep, clock=clock)
    assert not res.ok
    assert "not healthy within 10s" in res.reason and "HTTP 503" in res.reason
    assert sum(clock.sleeps) <= 10
    assert max(clock.sleeps) <= 5.0


def test_fail_fast_when_process_died() -> None:
    clock = FakeClock()
    res = wait_healthy("u", deadline=60, probe=scripted(Probe(False, "connection refused", 0)),  # type: ignore[arg-type]
                       sleep=clock.sleep, clock=clock, fail_fast=lambda: "the web process exited")
    assert not res.ok and res.attempts == 1 and res.reason.startswith("the web process exited")


def test_watch_stops_at_first_failure() -> None:
    clock = FakeClock()
    res = watch("u", seconds=5, expect=200, timeout=1,
                probe=scripted(Probe(True, "ok", 0), Probe(False, "timeout after 1.0s", 0)),  # type: ignore[arg-type]
                sleep=clock.sleep, clock=clock)
    assert not res.ok and res.attempts == 2 and "timeout" in res.reason


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = 200 if self.path == "/ok" else 503
        body = b'{"status": "error", "reason": "db down"}' if code == 503 else b"{}"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.path == "/slow":
            threading.Event().wait(2)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()


def test_real_http_probe_reasons(server: int) -> None:
    assert http_probe(f"http://127.0.0.1:{server}/ok", 200, 2).ok
    bad = http_probe(f"http://127.0.0.1:{server}/health", 200, 2)
    assert not bad.ok and bad.reason.startswith("HTTP 503 (expected 200)") and "db down" in bad.reason
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = http_probe(f"http://127.0.0.1:{port}/", 200, 2)
    assert refused.reason == "connection refused"


def _serve_raw(reply: bytes | None, *, close: bool) -> tuple[int, threading.Event]:
    """A one-connection TCP server answering ``reply`` (None: never answers)."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    done = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        conn.recv(4096)
        if reply is not None:
            conn.sendall(reply)
        if close:
            conn.close()
        done.wait(10)
        conn.close()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], done


def test_probe_returns_at_content_length_even_when_the_server_keeps_the_connection() -> None:
    port, done = _serve_raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n{}", close=False)
    try:
        p = http_probe(f"http://127.0.0.1:{port}/health/", 200, 5)
        assert p.ok and p.seconds < 2, p
    finally:
        done.set()


def test_probe_names_a_silent_server_and_a_non_http_one() -> None:
    port, done = _serve_raw(None, close=False)
    try:
        p = http_probe(f"http://127.0.0.1:{port}/", 200, 0.5)
        assert not p.ok and p.reason == "timeout after 0.5s" and p.seconds < 2
    finally:
        done.set()
    port, done = _serve_raw(b"SSH-2.0-OpenSSH_9.2\r\n", close=True)
    try:
        p = http_probe(f"http://127.0.0.1:{port}/", 200, 2)
        assert not p.ok and p.reason.startswith("not an HTTP response: 'SSH-2.0"), p
    finally:
        done.set()


def test_probe_over_tls_trusts_only_the_given_certificate(tmp_path: Path) -> None:
    import ssl

    from stageflow.runtimes.local import _self_signed

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    _self_signed(cert, key, "127.0.0.1")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    try:
        assert http_probe(f"https://127.0.0.1:{port}/ok", 200, 5, cafile=cert).ok
        bad = http_probe(f"https://127.0.0.1:{port}/health", 200, 5, cafile=cert)
        assert bad.reason.startswith("HTTP 503 (expected 200)") and "db down" in bad.reason
        untrusted = http_probe(f"https://127.0.0.1:{port}/ok", 200, 5)
        assert not untrusted.ok and "CERTIFICATE_VERIFY_FAILED" in untrusted.reason, untrusted
    finally:
        srv.shutdown()
