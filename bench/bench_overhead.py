"""Benchmark: stageflow's own overhead per deploy, and CLI start-up next to `python -c pass`.

Run: .venv/bin/python bench/bench_overhead.py   (needs nginx; builds a scratch Practika app)

Start-up is measured on a warm project (the validated-config cache filled, bytecode compiled), as
people meet it from the second command on; `status` probes dev, staging and production live.

Overhead = wall time of `stageflow deploy dev` minus the time spent waiting on the app (release
command, health gate, watch period, draining the old release) and on pg_dump. A promotion (`full`)
is split the same way into stageflow's own time and the app's waits; its first run shows the
virtualenv built once and reused by the later environments. Targets: overhead under 1 s, `full`'s
own time under 1.5 s for three environments, start-up under 300 ms. Every figure is measured side
by side in this one run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.app import ENVS, STAGEFLOW, VENVS, make_app, teardown_app  # noqa: E402

WAITING = {"migrate", "health", "watch", "stop-old"}


def timed(argv: list[str], cwd: Path, runs: int, warmup: int = 3) -> float:
    """Median wall seconds of ``argv`` over ``runs`` runs, after ``warmup`` untimed ones.

    The warm-up matters for `status`: the first requests a freshly deployed app serves are slow on
    the app's side (each gunicorn worker opens its database connection), which is not start-up.
    """
    for _ in range(warmup):
        subprocess.run(argv, cwd=cwd, capture_output=True, check=True)
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, cwd=cwd, capture_output=True, check=True)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def _waiting(dep: dict[str, Any]) -> float:
    """Seconds one deployment spent waiting on the app (and on pg_dump), not on stageflow."""
    waiting = sum(s["seconds"] or 0 for s in dep["steps"] if s["name"] in WAITING)
    waiting += sum(s["seconds"] or 0 for s in dep["steps"] if s["name"] == "backup" and "sql" in s["detail"])
    return float(waiting)


def _step(dep: dict[str, Any], name: str) -> tuple[float, str]:
    step = next(s for s in dep["steps"] if s["name"] == name)
    return float(step["seconds"] or 0), str(step["detail"])


def main() -> None:
    """Deploy a scratch app a few times and print the figures."""
    with tempfile.TemporaryDirectory(prefix="stageflow-bench-") as tmp:
        app = make_app(Path(tmp))
        try:
            # A virtualenv directory of its own, empty: the first promotion builds the venv once
            # (pip is not ours to measure) and the other environments reuse it. It leaves all three
            # environments running, so `status` below probes three live apps, production over TLS.
            cfg = app.root / "stageflow.yml"
            cfg.write_text(cfg.read_text().replace(str(VENVS / "shared"), str(Path(tmp) / "venvs")))
            app.commit("bench: a venv directory of its own")
            app.sf("full")
            first = {env: _step(app.last_deployment(env), "release") for env in ENVS}
            app.touch_commit("bench full")
            t = time.perf_counter()
            app.sf("full")
            full_wall = time.perf_counter() - t
            full_deps = [app.last_deployment(env) for env in ENVS]
            full_waits = sum(_waiting(dep) for dep in full_deps)
            overheads, walls = [], []
            ours: dict[str, list[float]] = {}
            for i in range(3):
                app.touch_commit(f"bench {i}")
                t = time.perf_counter()
                app.sf("deploy", "dev")
                wall = time.perf_counter() - t
                dep = app.last_deployment("dev")
                walls.append(wall)
                overheads.append(wall - _waiting(dep))
                in_steps = 0.0
                for step in dep["steps"]:
                    if step["name"] not in WAITING:
                        ours.setdefault(step["name"], []).append(step["seconds"] or 0)
                    in_steps += step["seconds"] or 0
                ours.setdefault("(start-up, lock, sweep, exit)", []).append(wall - in_steps)
            base = timed([sys.executable, "-c", "pass"], app.root, 20)
            help_t = timed([str(STAGEFLOW), "--help"], app.root, 20)
            status_t = timed([str(STAGEFLOW), "status"], app.root, 20)
        finally:
            teardown_app(app)
    print("first promotion, venv built once (release step per env):")
    for env, (secs, detail) in first.items():
        print(f"    {env:<11} {secs:7.3f} s   {detail.split('; ')[-1]}")
    ours_full = full_wall - full_waits
    print(f"full (3 envs) wall time             {full_wall:7.3f} s")
    print(f"    stageflow's own time            {ours_full:7.3f} s   target < 1.5 s   "
          f"{'OK' if ours_full < 1.5 else 'MISSED'}")
    print(f"    the app's waits                 {full_waits:7.3f} s   (release command, health gate, watch, drain)")
    for dep in full_deps:
        secs, detail = _step(dep, "release")
        print(f"    release step {dep['env']:<11}    {secs:7.3f} s   {detail.split('; ')[-1]}")
    ov = statistics.median(overheads)
    print(f"deploy wall time (median of 3)      {statistics.median(walls):7.3f} s")
    print(f"stageflow overhead per deploy       {ov:7.3f} s   target < 1 s   {'OK' if ov < 1 else 'MISSED'}")
    for name, values in ours.items():
        print(f"    of which {name:<27}{statistics.median(values) * 1000:7.1f} ms")
    print(f"python -c pass                      {base * 1000:7.1f} ms  (1.00x)")
    for name, t in (("stageflow --help", help_t), ("stageflow status", status_t)):
        ok = "OK" if t < 0.3 else "MISSED"
        print(f"{name:<36}{t * 1000:7.1f} ms  ({t / base:.2f}x python -c pass)   target < 300 ms   {ok}")


if __name__ == "__main__":
    main()
