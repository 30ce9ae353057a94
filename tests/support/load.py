"""Constant load through the public URL, counting every failed request (loopback, bounded)."""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Load:
    """Keeps requests flowing to one port until stopped; bounded in count and time."""

    port: int
    context: ssl.SSLContext | None = None
    max_requests: int = 20000
    max_seconds: float = 120.0
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _loop(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set() and self.ok + len(self.failures) < self.max_requests:
            if time.monotonic() - start > self.max_seconds:
                break
            try:
                conn: http.client.HTTPConnection
                if self.context is not None:
                    conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=self.context)
                else:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/health/")
                resp = conn.getresponse()
                resp.read()
                conn.close()
                if resp.status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"HTTP {resp.status}")
            except OSError as exc:
                self.failures.append(repr(exc))

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(2)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)
