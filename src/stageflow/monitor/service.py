"""Use cases of ``stageflow monitor``: one pass, the continuous loop, the alerts summary."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stageflow.errors import OperationError
from stageflow.monitor.engine import Cycle, Monitor
from stageflow.procs import proc_stat
from stageflow.state.records import StateDamaged
from stageflow.workspace import Workspace

Echo = Callable[[str], None]


def make_monitor(ws: Workspace, envs: list[str] | None, environ: Mapping[str, str] | None = None,
                 warn: Echo | None = None, **kw: Any) -> Monitor:
    """A monitor over ``envs`` (all when None) of the workspace's project."""
    return Monitor(ws.root, ws.store, ws.runner, envs, environ=environ, warn=warn or (lambda _m: None), **kw)


def run_once(monitor: Monitor, budget: float = 5.0) -> Cycle:
    """``monitor all`` / ``monitor env``: one cycle, then deliver what it queued within ``budget`` seconds."""

    async def go() -> Cycle:
        cycle = await monitor.cycle()
        await monitor.deliver(budget)
        return cycle

    return asyncio.run(go())


@dataclass
class Leader:
    """This process holds the project's one continuous monitor."""

    monitor: Monitor

    def take(self) -> None:
        """Refuse when another live continuous monitor of this project runs; take over a dead one's place."""
        st = self.monitor.state
        me, host = os.getpid(), socket.gethostname()
        with st.tx():
            try:
                row = st.leader()
            except StateDamaged:
                row = None  # a record that makes no sense vouches for no live monitor: take its place
            if row is not None and row.pid != me:
                state, ticks = proc_stat(row.pid)
                alive = state not in ("", "Z") and (row.start_ticks is None or ticks == row.start_ticks)
                fresh = time.time() - row.heartbeat < max(120.0, self.monitor.interval * 3)
                if (row.host != host and fresh) or (row.host == host and alive):
                    raise OperationError(
                        f"a continuous monitor already watches this project (pid {row.pid} on {row.host})",
                        hint="stop it first; two would send every alert twice")
            st.set_leader(host, me, proc_stat(me)[1], time.time())

    def beat(self) -> None:
        """Heartbeat."""
        self.monitor.state.beat(os.getpid(), time.time())

    def drop(self) -> None:
        """Clean exit."""
        self.monitor.state.drop_leader(os.getpid())


def describe_cycle(cycle: Cycle) -> str:
    """One line: how many checks and how they came out, what was queued."""
    counts: dict[str, int] = {}
    for o in cycle.observations:
        counts[o.severity] = counts.get(o.severity, 0) + 1
    parts = ", ".join(f"{counts[s]} {s}" for s in ("ok", "info", "warning", "critical") if s in counts)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cycle.ts))
    sent = "; ".join(f"{n.message.kind} {n.message.fingerprint} → {', '.join(n.queued) or 'no notifier'}"
                     for n in cycle.notices)
    return f"{when} {len(cycle.observations)} checks: {parts}" + (f"; {sent}" if sent else "")


async def continuous(monitor: Monitor, seconds: float, echo: Echo, *, metrics_port: int | None = None,
                     stop: asyncio.Event | None = None, cycles: int | None = None) -> None:
    """Check every ``seconds`` until stopped (SIGTERM/SIGINT); deliver alongside, never in the way."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    leader = Leader(monitor)
    leader.take()
    metrics = None
    if metrics_port is not None:
        from stageflow.monitor.metrics import Metrics

        metrics = Metrics(metrics_port)
    echo(f"monitoring {', '.join(w.ctx.name for w in monitor.watches)} every {seconds:g}s"
         + (f"; metrics on http://127.0.0.1:{metrics_port}/metrics" if metrics_port is not None else ""))

    async def sender() -> None:
        while not stop.is_set():
            try:
                await monitor.deliver(budget=max(1.0, seconds))
            except Exception as exc:  # delivery trouble is reported, never the end of monitoring
                echo(f"delivery: {type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    task = asyncio.create_task(sender())
    last_downsample = 0.0
    done = 0
    try:
        while not stop.is_set():
            started = time.monotonic()
            cycle = await monitor.cycle()
            echo(describe_cycle(cycle))
            if metrics is not None:
                metrics.update(cycle, monitor.state)
            leader.beat()
            if time.time() - last_downsample > 3600:
                mon = monitor.config.monitoring
                monitor.state.downsample(time.time(), mon.raw_retention, mon.retention)
                last_downsample = time.time()
            done += 1
            if cycles is not None and done >= cycles:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, seconds - (time.monotonic() - started)))
    finally:
        stop.set()
        await task
        # What is due goes out before a clean exit; anything left waits in the outbox for the next run.
        with contextlib.suppress(Exception):
            await monitor.deliver(budget=3.0)
        leader.drop()
        if metrics is not None:
            metrics.close()


def alerts_summary(monitor: Monitor, now: float | None = None) -> dict[str, Any]:
    """Active alerts, the last 24 h by severity, the noisiest checks, undelivered messages."""
    now = time.time() if now is None else now
    st = monitor.state
    active = [{"fingerprint": a.fingerprint, "env": a.env, "check": a.check_name, "target": a.target,
               "state": a.state, "severity": a.severity, "summary": a.summary, "value": a.value,
               "threshold": a.threshold, "unit": a.unit, "since": a.pending_since,
               "folded_under": a.folded_under} for a in st.alerts()]
    history = st.history(now - 86400, now)
    by_severity: dict[str, int] = {}
    noisy: dict[str, int] = {}
    for h in history:
        if h.transition in ("firing", "escalated"):
            by_severity[h.severity] = by_severity.get(h.severity, 0) + 1
        if h.transition in ("pending", "firing", "resolved", "cancelled"):
            noisy[h.fingerprint] = noisy.get(h.fingerprint, 0) + 1
    failed = [{"id": r.id, "notifier": r.notifier, "env": r.env, "kind": r.kind, "error": r.last_error}
              for r in st.outbox("failed")]
    pending = st.count_outbox("pending")
    return {
        "active": active,
        "last_24h": {"fired_by_severity": by_severity, "transitions": len(history)},
        "noisiest": [{"fingerprint": fp, "transitions": n}
                     for fp, n in sorted(noisy.items(), key=lambda kv: -kv[1])[:5]],
        "outbox": {"pending": pending, "failed": failed},
    }
