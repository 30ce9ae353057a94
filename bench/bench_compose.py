"""Benchmark: a production deploy on the compose runtime under constant load, side by side with a
plain `docker compose up -d` redeploy of the same stack; and the time from `rollback` to healthy.

Run: .venv/bin/python bench/bench_compose.py   (as root: scripts/docker-env.sh prepares Docker)

One stack (the example app with PostgreSQL, Redis and nginx containers), requests flowing through
its nginx container the whole time from two client threads. For each redeploy it counts failed
requests and the longest gap between two successful answers. Targets: stageflow 0 failed;
rollback to healthy < 10 s.
"""

from __future__ import annotations

import http.client
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.docker import docker, prepare_docker  # noqa: E402
from tests.support.stack import Stack, make_stack  # noqa: E402

ENV = "production"


@dataclass
class GapLoad:
    """Constant requests to one port; failures and the longest stretch without a successful answer."""

    port: int
    ok: int = 0
    failed: int = 0
    last_ok: float = field(default_factory=time.monotonic)
    longest_gap: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _loop(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set() and time.monotonic() - start < 600:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/health/")
                good = conn.getresponse().status == 200
                conn.close()
            except OSError:
                good = False
            now = time.monotonic()
            with self._lock:
                if good:
                    self.ok += 1
                    self.longest_gap = max(self.longest_gap, now - self.last_ok)
                    self.last_ok = now
                else:
                    self.failed += 1
                    time.sleep(0.01)

    def __enter__(self) -> GapLoad:
        self.last_ok = time.monotonic()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(2)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(1.0)  # requests keep flowing a moment after the redeploy returns
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)


def new_version(stack: Stack, n: int) -> None:
    (stack.root / "notes" / "marker.py").write_text(f"VERSION_MARK = {n}\n")
    stack.commit(f"version {n}")


def wait_healthy(stack: Stack, deadline: float = 60.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        try:
            if stack.get(ENV).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit("the stack did not become healthy")


def main() -> None:
    images = prepare_docker()
    with tempfile.TemporaryDirectory(prefix="stageflow-bench-compose-") as tmp:
        stack = make_stack(Path(tmp), images, envs=(ENV,))
        try:
            stack.sf("full", "--yes")
            new_version(stack, 2)
            with GapLoad(stack.ports[ENV]) as ours:
                t = time.monotonic()
                stack.sf("deploy", ENV, "--yes")
                ours_s = time.monotonic() - t
            target = stack.get(ENV).json()["version"]
            previous = stack.status()[ENV]["previous"]
            seen: dict[str, float] = {}

            def watch_version(stop: threading.Event) -> None:
                while not stop.is_set():
                    try:
                        if stack.get(ENV).json().get("version") == previous:
                            seen.setdefault("serving", time.monotonic())
                    except (httpx.HTTPError, ValueError):
                        pass
                    time.sleep(0.05)

            stop = threading.Event()
            watcher = threading.Thread(target=watch_version, args=(stop,), daemon=True)
            watcher.start()
            t = time.monotonic()
            stack.sf("rollback", ENV, "--yes")
            rollback_s = time.monotonic() - t
            stop.set()
            watcher.join(5)
            serving_s = seen.get("serving", float("nan")) - t
            assert target != previous
            steps = ", ".join(f"{s['name']} {s['seconds']:.1f} s" for s in stack.last_deployment(ENV)["steps"]
                              if s.get("seconds") is not None)

            # The same stack redeployed the plain way: the service's image replaced, `up -d`.
            releases = [r for r in docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
                        if r.startswith(f"{stack.project}/backend:")]
            tag = f"{stack.project}-backend:{ENV}"
            current = docker("image", "inspect", "-f", "{{.Id}}", tag).stdout.strip()
            other = next(r for r in releases
                         if docker("image", "inspect", "-f", "{{.Id}}", r).stdout.strip() != current)
            docker("tag", other, tag)
            compose = ["compose", "-f", "docker-compose.prod.yml", "-p", f"{stack.project}-{ENV}"]
            with GapLoad(stack.ports[ENV]) as plain:
                t = time.monotonic()
                r = docker(*compose, "up", "-d", "--no-deps", "--force-recreate", "backend", cwd=stack.root,
                           timeout=300)
                plain_s = time.monotonic() - t
                assert r.returncode == 0, r.stderr
                wait_healthy(stack, 120)
        finally:
            stack.teardown()
    print("| production redeploy under constant load | stageflow (compose runtime) | plain `docker compose up -d` |")
    print("|---|---|---|")
    print(f"| failed requests | {ours.failed} of {ours.ok + ours.failed} "
          f"| {plain.failed} of {plain.ok + plain.failed} |")
    print(f"| longest gap between successful answers | {ours.longest_gap:.2f} s | {plain.longest_gap:.2f} s |")
    print(f"| command wall time | {ours_s:.1f} s | {plain_s:.1f} s |")
    print(f"\n`rollback production`: the previous release serves after {serving_s:.1f} s (target < 10 s); "
          f"the command (watch and drain included) returns after {rollback_s:.1f} s")
    print(f"where the rollback's time goes (journal): {steps}")


if __name__ == "__main__":
    main()
