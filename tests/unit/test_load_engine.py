"""The load engine against a real HTTP server on 127.0.0.1: rate, bounds, errors, dropped requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from stageflow.loadtest.engine import LoadPlan, percentile, run_load, summarize


class Server:
    def __init__(self) -> None:
        self.hits: list[str] = []
        self.delay = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.hits.append(self.path)
                time.sleep(outer.delay)
                code = 500 if self.path.startswith("/fail") else 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def plan(url: str, **kw: Any) -> LoadPlan:
    # Room for every request of a test in flight at once: a loaded machine answers slowly, and
    # dropping is tested on its own (test_overload_is_dropped_not_queued).
    base: dict[str, Any] = {"base_url": url, "paths": ["/health/"], "rate": 50.0, "duration": 1.0,
                            "max_requests": 1000, "concurrency": 50, "timeout": 5.0}
    base.update(kw)
    return LoadPlan(**base)


def test_offers_the_rate_for_the_duration_and_stops(server: Server) -> None:
    p = plan(server.url, paths=["/a", "/b"], rate=40.0, duration=1.0)
    with httpx.Client() as client:
        started = time.monotonic()
        result = run_load(p, client=client)
        took = time.monotonic() - started
    assert result.requests == 40 and result.errors == 0 and result.dropped == 0
    assert sorted(set(server.hits)) == ["/a", "/b"] and server.hits.count("/a") == 20
    assert 0.9 <= took < 3.0  # requests are spread over the duration, not fired at once
    summary = summarize(result, p)
    assert summary["kind"] == "stageflow-loadtest" and summary["error_rate"] == 0.0
    assert 0 < summary["latency"]["p50"] <= summary["latency"]["p95"] <= summary["latency"]["p99"]
    assert summary["statuses"] == {"200": 40}


def test_max_requests_bounds_the_count(server: Server) -> None:
    with httpx.Client() as client:
        result = run_load(plan(server.url, rate=200.0, duration=5.0, max_requests=30), client=client)
    assert result.requests == 30 and len(server.hits) == 30 and result.elapsed < 2.0


def test_errors_and_refused_connections_count_as_failures(server: Server) -> None:
    with httpx.Client() as client:
        result = run_load(plan(server.url, paths=["/fail", "/ok"], rate=20.0), client=client)
    assert result.errors == 10 and summarize(result, plan(server.url))["error_rate"] == 0.5
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    with httpx.Client() as client:
        result = run_load(plan(dead, rate=10.0), client=client)
    assert result.errors == result.requests == 10 and set(result.statuses) == {"ConnectError"}


def test_overload_is_dropped_not_queued(server: Server) -> None:
    server.delay = 0.3
    with httpx.Client() as client:
        result = run_load(plan(server.url, rate=20.0, duration=1.0, concurrency=2), client=client)
    assert result.dropped > 0 and result.requests + result.dropped == 20
    assert len(server.hits) == result.requests  # never more than offered, never more than 2 at once


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50.0, 95.0, 99.0)
    assert percentile([], 95) == 0.0 and percentile([3.0], 99) == 3.0
