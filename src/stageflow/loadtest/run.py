"""``stageflow loadtest ENV``: the k6 script, then a bounded load test of ENV's own URL.

k6 runs the script when it is installed; otherwise the Python engine (:mod:`.engine`) offers the
same load. Memory of the env's services is read through the runtime before and after, so the
summary (``.stageflow/reports/loadtest-<env>.json``) feeds both the performance and memory gates.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stageflow.config.loader import EnvContext
from stageflow.errors import OperationError, UsageError
from stageflow.loadtest.engine import LoadPlan, run_load, summarize
from stageflow.loadtest.memory import MemorySource
from stageflow.runner import Runner


@dataclass(frozen=True)
class LoadOptions:
    """Command-line overrides of ``loadtest:``."""

    rate: float | None = None
    duration: float | None = None
    engine: str = "auto"  # auto | python | k6


def report_path(root: Path, env: str) -> Path:
    """Where the summary of ``env``'s last load test is kept (what ``gate --env`` reads)."""
    return root / ".stageflow" / "reports" / f"loadtest-{env}.json"


def plan_for(ctx: EnvContext, opts: LoadOptions) -> LoadPlan:
    """The bounded plan from ``loadtest:`` and the overrides; load only ever goes to the env's URL."""
    cfg = ctx.config.loadtest
    rate = cfg.rate if opts.rate is None else opts.rate
    duration = cfg.duration if opts.duration is None else opts.duration
    if not 0 < rate <= 500:
        raise UsageError("--rate: must be between 0 and 500 requests per second")
    if not 0 < duration <= 3600:
        raise UsageError("--duration: must be between 0 and 3600 seconds")
    return LoadPlan(base_url=ctx.env.url, paths=tuple(cfg.paths), rate=rate, duration=duration,
                    max_requests=cfg.max_requests, concurrency=cfg.concurrency, timeout=cfg.timeout)


def _verify(ctx: EnvContext) -> ssl.SSLContext | bool:
    """Trust the certificate the env serves: TLS_CERT_FILE, or the local rehearsal's self-signed one."""
    if not ctx.env.url.startswith("https://"):
        return True
    named = ctx.app_vars.get("TLS_CERT_FILE")
    cert = (ctx.root / named) if named else ctx.state_dir / "tls" / ctx.name / "cert.pem"
    if not cert.is_file():
        return True
    context = ssl.create_default_context(cafile=str(cert))
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def basic_auth(ctx: EnvContext) -> tuple[str, str] | None:
    """The env's own basic-auth credentials when its site is behind basic auth (staging by default).

    The load test is the operator's own traffic, so it signs in like a reviewer would; the password
    is the one ``config nginx`` and the local runtime generated (``.stageflow/secrets/``, 0600).
    """
    from stageflow.fsutil import read_file
    from stageflow.generate.nginx import password_path, site_options

    opts = site_options(ctx.config, ctx.name, root=ctx.root)
    if not opts.basic_auth:
        return None
    raw = read_file(password_path(ctx.root, ctx.name), root=ctx.root, limit=4096)
    password = raw.decode("utf-8", "replace").strip() if raw else ""
    if not password:
        return None
    from stageflow.masking import masker

    masker.add(password)
    return opts.basic_auth_user, password


class _Sampler:
    """Reads memory at the start, every ``interval`` and at the end; keeps the peak."""

    def __init__(self, source: MemorySource, interval: float = 1.0) -> None:
        self.source = source
        self.interval = interval
        self.start: dict[str, float] = {}
        self.peak: dict[str, float] = {}
        self.end: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _take(self) -> dict[str, float]:
        now = self.source.memory()
        for k, v in now.items():
            self.peak[k] = max(self.peak.get(k, 0.0), v)
        return now

    def __enter__(self) -> _Sampler:
        self.start = self._take()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._take()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.end = self._take()

    def figures(self) -> dict[str, dict[str, float]]:
        return {
            svc: {"start_mb": round(self.start[svc], 1), "end_mb": round(self.end.get(svc, 0.0), 1),
                  "peak_mb": round(self.peak.get(svc, 0.0), 1)}
            for svc in self.start
        }


def run_loadtest(ctx: EnvContext, opts: LoadOptions, *, runner: Runner, memory: MemorySource | None,
                 k6: str | None, say: Callable[[str], None]) -> dict[str, Any]:
    """Write the k6 script, run the load (k6 or Python), write and return the summary."""
    from stageflow.fsutil import write_file
    from stageflow.generate.k6 import render_k6

    plan = plan_for(ctx, opts)
    script = ctx.state_dir / "loadtest" / f"{ctx.name}.js"
    write_file(script, render_k6(ctx.config.loadtest, ctx.config.gates, ctx.env.url), root=ctx.root)
    engine = opts.engine
    if engine == "k6" and k6 is None:
        raise UsageError("--engine k6: k6 is not installed", hint="install k6, or use --engine python")
    use_k6 = k6 is not None and engine in ("auto", "k6")
    say(f"load test of {ctx.name}: {plan.rate:g} req/s for {plan.duration:g}s (at most {plan.max_requests} "
        f"requests, {plan.concurrency} in flight) on {plan.base_url} {', '.join(plan.paths)} with "
        f"{'k6' if use_k6 else 'the Python engine (k6 is not installed)' if engine == 'auto' else 'the Python engine'}")
    started = datetime.now(UTC).isoformat(timespec="seconds")
    sampler = _Sampler(memory) if memory is not None else None
    with sampler or contextlib.nullcontext():
        if use_k6 and k6 is not None:
            summary = _run_k6(k6, script, plan, ctx, runner)
        else:
            import httpx

            with httpx.Client(verify=_verify(ctx), follow_redirects=False, auth=basic_auth(ctx),
                              limits=httpx.Limits(max_connections=plan.concurrency)) as client:
                summary = summarize(run_load(plan, client=client), plan)
    summary.update({"env": ctx.name, "started_at": started, "k6_script": str(script.relative_to(ctx.root))})
    summary["memory"] = sampler.figures() if sampler else None
    if summary["requests"] == 0:
        raise OperationError(f"load test of {ctx.name} made no requests", hint=f"is {ctx.env.url} up?")
    out = report_path(ctx.root, ctx.name)
    write_file(out, json.dumps(summary, indent=2) + "\n", root=ctx.root)
    statuses = summary.get("statuses") or {}
    if statuses and not any(k.isdigit() for k in statuses):
        # Not one answer: the figures describe a missing server, not a slow one.
        raise OperationError(f"load test of {ctx.name}: no request got an answer ({', '.join(statuses)})",
                             hint=f"is {ctx.name} deployed and {ctx.env.url} reachable?")
    return summary


_K6_TRENDS = (("p50", "med"), ("p95", "p(95)"), ("p99", "p(99)"), ("max", "max"), ("mean", "avg"))


def _run_k6(k6: str, script: Path, plan: LoadPlan, ctx: EnvContext, runner: Runner) -> dict[str, Any]:
    export = script.with_suffix(".summary.json")
    started = time.monotonic()
    result = runner.run([k6, "run", "--quiet", "--summary-export", str(export), str(script)],
                        env={"BASE_URL": ctx.env.url}, timeout=plan.duration + plan.timeout + 60, what="k6")
    # k6 exits 99 when a threshold fails: the figures are still valid, and the gate judges them.
    if result.returncode not in (0, 99) or not export.is_file():
        raise OperationError(f"k6 failed: {result.brief()}")
    from stageflow.gate import load_figures

    doc = json.loads(export.read_text())
    fig = load_figures(export)
    trend = doc["metrics"]["http_req_duration"]
    return {
        "kind": "stageflow-loadtest", "engine": "k6", "url": plan.base_url, "paths": list(plan.paths),
        "rate": plan.rate, "duration_s": round(time.monotonic() - started, 3), "requests": fig.requests,
        "errors": round(fig.error_rate / 100 * fig.requests), "error_rate": round(fig.error_rate / 100, 6),
        "dropped": int(doc["metrics"].get("dropped_iterations", {}).get("count", 0)),
        "throughput_rps": doc["metrics"].get("http_reqs", {}).get("rate", 0.0), "statuses": {},
        "latency": {k: round(float(trend.get(src, 0.0)) / 1000, 6) for k, src in _K6_TRENDS},
    }
