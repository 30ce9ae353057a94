"""Benchmark: the monitor watching 1,000 HTTP endpoints every 10 s, next to a bare asyncio loop and
Prometheus + blackbox_exporter probing the same targets, measured side by side in this one run.

Run: .venv/bin/python bench/bench_monitor.py [--seconds 30] [--endpoints 1000] [--interval 10]
(needs nginx, and the Debian packages prometheus and prometheus-blackbox-exporter for the third row).

The targets are 1,000 paths of one private nginx on 127.0.0.1 (``return 200``, so the server's own
cost is small and not counted). Each contender runs alone for a warm-up interval and then the
measured window; its checks are counted from that nginx's access log (what was really requested),
its CPU from the kernel's counters for its processes, its peak RSS by sampling every 0.2 s.
Targets: at most 1.5 ms of CPU per check and under 100 MB RSS for the monitor, ahead of the
Prometheus + blackbox_exporter pair.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGEFLOW = Path(sys.executable).parent / "stageflow"

BARE_LOOP = '''
import asyncio, sys, time
PORT, N, INTERVAL = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

async def get(path, sem):
    async with sem:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", PORT), 10)
            w.write(f"GET {path} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n".encode())
            data = await asyncio.wait_for(r.read(), 10)
            w.close()
            return data.startswith(b"HTTP/1.1 200")
        except (OSError, asyncio.TimeoutError):
            return False

async def main():
    sem = asyncio.Semaphore(200)
    while True:
        start = time.monotonic()
        await asyncio.gather(*(get(f"/t/{i}", sem) for i in range(N)))
        await asyncio.sleep(max(0.0, INTERVAL - (time.monotonic() - start)))

asyncio.run(main())
'''


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    """Until something accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.contextmanager
def target_server(tmp: Path) -> Iterator[tuple[int, Path]]:
    """A private nginx answering 200 on every path; yields its port and access log."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    prefix = tmp / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    prefix.chmod(0o755)
    log = prefix / "access.log"
    user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(textwrap.dedent(f"""\
        {user}worker_processes 1;
        pid {prefix}/nginx.pid;
        error_log {prefix}/error.log warn;
        events {{ worker_connections 4096; }}
        http {{
            access_log {log};
            client_body_temp_path {prefix}/tmp/b; proxy_temp_path {prefix}/tmp/p;
            fastcgi_temp_path {prefix}/tmp/f; uwsgi_temp_path {prefix}/tmp/u; scgi_temp_path {prefix}/tmp/s;
            keepalive_requests 100000;
            server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok\\n"; }} }}
        }}
        """))
    proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield port, log
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class Result:
    """One contender's figures."""

    name: str
    checks: int
    cpu_seconds: float
    peak_rss_mb: float
    note: str = ""

    @property
    def ms_per_check(self) -> float:
        """CPU milliseconds per check."""
        return self.cpu_seconds / self.checks * 1000 if self.checks else float("nan")


def cpu_of(procs: list[psutil.Process]) -> float:
    """User + system seconds of these processes and their children."""
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def rss_of(procs: list[psutil.Process]) -> float:
    """Resident MB of these processes and their descendants."""
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            for q in [p, *p.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += q.memory_info().rss
    return total / 2**20


def measure(name: str, start: Callable[[], list[subprocess.Popen[bytes]]], log: Path, warmup: float,
            seconds: float, note: str = "") -> Result:
    """Run a contender: warm-up, then the measured window; stop it."""
    procs = start()
    ps = [psutil.Process(p.pid) for p in procs]
    peak = 0.0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_of(ps))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        time.sleep(warmup)
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{name}: exited with {p.returncode} during the warm-up")
        lines0, cpu0 = _lines(log), cpu_of(ps)
        time.sleep(seconds)
        lines1, cpu1 = _lines(log), cpu_of(ps)
    finally:
        stop.set()
        sampler.join()
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
    return Result(name, lines1 - lines0, cpu1 - cpu0, peak, note)


def _lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def monitor_project(tmp: Path, port: int, n: int) -> Path:
    """An app root whose one env lists the ``n`` endpoints."""
    root = tmp / "app"
    (root / ".stageflow").mkdir(parents=True)
    cfg = {
        "project": "bench",
        "services": {"web": {"command": "true", "port": 8000, "health": {"path": "/health/"}}},
        "database": {"engine": "none"},
        "environments": {"dev": {"url": f"http://127.0.0.1:{port}"}},
        "nginx": {"enabled": "off"},
        "monitoring": {"timeout": "5s", "endpoints": [{"url": f"http://127.0.0.1:{port}/t/{i}", "name": f"t{i}"}
                                                      for i in range(n)]},
    }
    (root / "stageflow.yml").write_text(yaml.safe_dump(cfg))
    return root


def blackbox_pair(tmp: Path, port: int, n: int, interval: float) -> Callable[[], list[subprocess.Popen[bytes]]]:
    """Start blackbox_exporter and a Prometheus that scrapes it once per target per interval."""
    bb_port, prom_port = free_port(), free_port()
    (tmp / "blackbox.yml").write_text("modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n"
                                      "    http: {preferred_ip_protocol: ip4}\n")
    prom = {
        "global": {"scrape_interval": f"{interval:g}s", "scrape_timeout": "5s"},
        "scrape_configs": [{
            "job_name": "blackbox", "metrics_path": "/probe", "params": {"module": ["http_2xx"]},
            "static_configs": [{"targets": [f"http://127.0.0.1:{port}/t/{i}" for i in range(n)]}],
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": f"127.0.0.1:{bb_port}"},
            ],
        }],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(prom))

    def start() -> list[subprocess.Popen[bytes]]:
        bb = subprocess.Popen(["prometheus-blackbox-exporter", f"--config.file={tmp / 'blackbox.yml'}",
                               f"--web.listen-address=127.0.0.1:{bb_port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(bb_port)
        pr = subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                               f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return [bb, pr]

    return start


def main() -> None:
    """Run the three contenders one after the other on the same targets and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=30.0, help="measured window per contender")
    args = ap.parse_args()
    n, interval = args.endpoints, args.interval
    warmup = interval + 2
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="stageflow-bench-monitor-") as tmp_s:
        tmp = Path(tmp_s)
        tmp.chmod(0o755)
        with target_server(tmp) as (port, log):
            root = monitor_project(tmp, port, n)
            env = {**os.environ, "PYTHONDONTWRITEBYTECODE": ""}
            results.append(measure("stageflow monitor continuous", lambda: [subprocess.Popen(
                [str(STAGEFLOW), "monitor", "continuous", f"{interval:g}"], cwd=root, env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)], log, warmup, args.seconds,
                "httpx, thresholds, alert states and samples in SQLite"))
            results.append(measure("bare asyncio loop", lambda: [subprocess.Popen(
                [sys.executable, "-c", BARE_LOOP, str(port), str(n), f"{interval:g}"])], log, warmup, args.seconds,
                "raw sockets, no parsing, no state"))
            if shutil.which("prometheus") and shutil.which("prometheus-blackbox-exporter"):
                results.append(measure("prometheus + blackbox_exporter", blackbox_pair(tmp, port, n, interval), log,
                                       warmup, args.seconds, "probes only (no alerting rules)"))
            else:
                print("prometheus / prometheus-blackbox-exporter not installed: third row skipped "
                      "(apt-get install prometheus prometheus-blackbox-exporter)")
    print(f"\n{n} endpoints every {interval:g}s; {args.seconds:g}s measured per contender after {warmup:g}s warm-up\n")
    print(f"{'contender':<32} {'checks':>7} {'CPU s':>7} {'ms/check':>9} {'peak RSS':>9}  note")
    for r in results:
        print(f"{r.name:<32} {r.checks:>7} {r.cpu_seconds:>7.2f} {r.ms_per_check:>9.3f} {r.peak_rss_mb:>7.0f}MB  "
              f"{r.note}")
    mon = results[0]
    for other in results[1:]:
        print(f"monitor vs {other.name}: CPU/check ×{mon.ms_per_check / other.ms_per_check:.2f}, "
              f"RSS ×{mon.peak_rss_mb / other.peak_rss_mb:.2f}")
    ok = mon.ms_per_check <= 1.5 and mon.peak_rss_mb < 100
    print(f"targets (≤ 1.5 ms CPU per check, < 100 MB RSS): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
