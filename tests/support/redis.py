"""Pytest plugin: a real, private Redis server for tests, with a password, on 127.0.0.1 only.

The ``redis_server`` fixture starts ``redis-server`` on a free port with no persistence, in a
temporary directory, and stops it afterwards. Tests may ``stop()`` and ``start()`` it again (same
port and password) to play a cache outage. A missing binary fails under ``CI`` and skips elsewhere.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.support.postgres import free_port


@dataclass
class RedisServer:
    """One private redis-server process."""

    binary: str
    workdir: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        """A redis:// URL with the password in it."""
        return f"redis://:{self.password}@{self.host}:{self.port}/{db}"

    def client(self) -> redis.Redis:
        """A client for assertions."""
        return redis.Redis(host=self.host, port=self.port, password=self.password, socket_timeout=2)

    def start(self) -> None:
        """Start (again) and wait until it answers PING."""
        # The password goes in through stdin's config, not argv: `ps` would show it otherwise.
        config = (f"bind {self.host}\nport {self.port}\nrequirepass {self.password}\nsave \"\"\n"
                  f"appendonly no\ndir {self.workdir}\nprotected-mode yes\n")
        self.proc = subprocess.Popen([self.binary, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        assert self.proc.stdin is not None
        self.proc.stdin.write(config.encode())
        self.proc.stdin.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING within 15 s")

    def stop(self) -> None:
        """Stop it and wait until it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running private Redis; stopped after the test."""
    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists()
                                              else None)
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (CI is set, so this is an error: scripts/bootstrap.sh --dev)")
        pytest.skip("redis-server is not installed")
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(binary, workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
