"""Pytest plugin: a recording HTTP receiver on 127.0.0.1 standing in for Slack and webhooks.

It records every POST (path, JSON body, time) and answers what the test scripts: 200 by default,
or a queue of answers (``answer(500, 500)``, ``answer((429, {"Retry-After": "2"}))``, ``always(404)``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

Answer = int | tuple[int, dict[str, str]]


@dataclass
class Received:
    """One request as it arrived."""

    path: str
    body: Any
    ts: float
    status: int


@dataclass
class Receiver:
    """The server, what it got, and what it will answer next."""

    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    answers: deque[Answer] = field(default_factory=deque)
    default: Answer = 200
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """Base URL."""
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def answer(self, *answers: Answer) -> None:
        """Answer the next requests with these, in order; then the default again."""
        with self.lock:
            self.answers.extend(answers)

    def always(self, answer: Answer) -> None:
        """Answer every request with ``answer`` from now on."""
        with self.lock:
            self.answers.clear()
            self.default = answer

    def delivered(self, path: str | None = None) -> list[Any]:
        """Bodies answered with 2xx (what a sender may count as delivered)."""
        with self.lock:
            return [r.body for r in self.received if 200 <= r.status < 300 and (path is None or r.path == path)]

    def wait_for(self, count: int, timeout: float = 15.0, path: str | None = None) -> list[Any]:
        """Wait until ``count`` bodies were delivered; return them (fails the test on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.delivered(path)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"receiver got {len(self.delivered(path))} message(s), expected {count}: "
                             f"{[r.body for r in self.received]}")

    def _next(self) -> Answer:
        with self.lock:
            return self.answers.popleft() if self.answers else self.default


def _handler(rec: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            answer = rec._next()
            status, headers = (answer, {}) if isinstance(answer, int) else answer
            with rec.lock:
                rec.received.append(Received(self.path, body, time.time(), status))
            payload = b"ok" if status < 300 else b"no"
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def start_receiver() -> Receiver:
    """A running receiver on a free loopback port (stop with ``server.shutdown()``)."""
    rec = Receiver(server=ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler))
    rec.server.RequestHandlerClass = _handler(rec)
    threading.Thread(target=rec.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return rec


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A recording receiver for the test."""
    rec = start_receiver()
    try:
        yield rec
    finally:
        rec.server.shutdown()
        rec.server.server_close()
