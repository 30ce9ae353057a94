"""Delivery from the durable outbox: retries by error kind, Retry-After, a pace per webhook, digests.

Messages are claimed with a lease by one sender at a time (a monitor, or a deploy flushing its own
events), so two processes never send the same row; a holder that died (same host, pid gone) is taken
over at once, otherwise when its lease runs out. Results: 2xx delivered; timeouts, connection errors,
5xx and 429 retried with exponential backoff (429 at least its ``Retry-After``); any other 4xx is a
configuration error (wrong or revoked URL), reported and not retried. Every attempt is recorded.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stageflow.alerts.model import Message, rank
from stageflow.alerts.notifiers import Notifier, SendResult
from stageflow.procs import proc_stat
from stageflow.state.monitoring import MonitorState, OutboxRow

if TYPE_CHECKING:
    import httpx

BACKOFF_CAP = 300.0


def backoff(attempts: int, base: float = 1.0) -> float:
    """Seconds before attempt ``attempts + 1``: 1, 2, 4 … capped at five minutes."""
    return float(min(BACKOFF_CAP, base * 2 ** max(0, attempts)))


def classify(result: SendResult) -> str:
    """``ok``, ``retry`` (worth trying again) or ``error`` (a configuration problem)."""
    if result.ok:
        return "ok"
    if result.status is None or result.status == 429 or result.status >= 500 or result.status == 408:
        return "retry"
    return "error"


def claimer_id() -> str:
    """``host|pid|start ticks``: unique to this process, checkable for liveness."""
    return f"{socket.gethostname()}|{os.getpid()}|{proc_stat(os.getpid())[1]}"


def dead_claimers(claimers: Sequence[str]) -> list[str]:
    """Claimers on this host whose process is gone (or is another process reusing the pid)."""
    host = socket.gethostname()
    dead = []
    for c in claimers:
        parts = c.split("|")
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        state, ticks = proc_stat(int(parts[1]))
        if state in ("", "Z") or (state != "?" and str(ticks) != parts[2]):
            dead.append(c)
    return dead


@dataclass
class Report:
    """What one drain did."""

    delivered: int = 0
    retried: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Delivery:
    """Sends what is due in the outbox through the notifiers it knows."""

    state: MonitorState
    notifiers: Sequence[Notifier]
    client: httpx.AsyncClient
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    digest: int = 5
    min_gap: float = 1.0
    lease: float = 30.0
    report_error: Callable[[str], None] = lambda _m: None
    _last_sent: dict[str, float] = field(default_factory=dict)
    me: str = field(default_factory=claimer_id)

    async def drain(self, budget: float | None = None) -> Report:
        """Send everything due now, pacing each notifier; stop starting new sends after ``budget`` s."""
        report = Report()
        start = self.clock()
        known = {n.name: n for n in self.notifiers}
        rows = self.state.claim(self.me, self.clock(), self.lease, list(known), dead_claimers(self.state.claimers()))
        by_notifier: dict[str, list[OutboxRow]] = {}
        for row in rows:
            by_notifier.setdefault(row.notifier, []).append(row)
        for name, batch in by_notifier.items():
            notifier = known[name]
            for group in self._groups(batch):
                if budget is not None and self.clock() - start > budget:
                    self.state.release([r.id for r in group])
                    continue
                await self._send(notifier, group, report)
        return report

    def _groups(self, batch: list[OutboxRow]) -> list[list[OutboxRow]]:
        """A burst of alert messages becomes one digest; deploy events always go one by one."""
        alerts = [r for r in batch if r.kind != "deploy"]
        single = [[r] for r in batch if r.kind == "deploy"]
        if len(alerts) > self.digest:
            return [*single, alerts]
        return [*single, *([r] for r in alerts)]

    async def _send(self, notifier: Notifier, group: list[OutboxRow], report: Report) -> None:
        gap = self.min_gap - (self.clock() - self._last_sent.get(notifier.name, -1e9))
        if gap > 0:
            await self.sleep(gap)
        ids = [r.id for r in group]
        try:
            if len(group) == 1:
                message = Message.from_dict(group[0].message)
            else:
                message = digest_message([Message.from_dict(r.message) for r in group], self.clock())
            payload = notifier.build_payload(message)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            # Rows read back from disk may be damaged: set them aside rather than stop delivering.
            self.state.failed(ids, f"damaged message: {type(exc).__name__}: {exc}"[:200])
            report.failed += len(ids)
            return
        result = await notifier.send(self.client, payload)
        now = self.clock()
        self._last_sent[notifier.name] = now
        kind = classify(result)
        what = f"HTTP {result.status}" if result.status is not None else result.detail
        self.state.record_attempt(ids, notifier.name, kind, result.status, result.detail, now)
        if kind == "ok":
            self.state.delivered(ids, now)
            report.delivered += len(ids)
        elif kind == "retry":
            wait = backoff(min(r.attempts for r in group))
            if result.retry_after is not None:
                wait = max(wait, min(result.retry_after, 3600.0))
            self.state.retry_later(ids, now + wait, what)
            report.retried += len(ids)
        else:
            msg = (f"{notifier.key}: {notifier.name} answered {what}: the URL is wrong or was revoked; "
                   f"{len(ids)} message(s) not sent")
            self.state.failed(ids, msg)
            report.failed += len(ids)
            report.errors.append(msg)
            self.report_error(msg)


def digest_message(messages: list[Message], now: float) -> Message:
    """One message standing for a burst."""
    worst = max(messages, key=lambda m: rank(m.severity) if m.kind != "resolved" else 0)
    envs = sorted({m.env for m in messages})
    firing = sum(1 for m in messages if m.kind != "resolved")
    title = f"{len(messages)} alert changes in {', '.join(envs)}: {firing} firing, {len(messages) - firing} resolved"
    items = [{"kind": m.kind, "severity": m.severity, "env": m.env, "check": m.check, "target": m.target,
              "summary": m.summary, "fingerprint": m.fingerprint} for m in messages]
    return Message(kind="digest", env=",".join(envs), severity=worst.severity if firing else "ok", title=title,
                   ts=now, items=items)
