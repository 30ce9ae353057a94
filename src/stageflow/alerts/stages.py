"""The notification path as stages with one signature: fold → dedup → silence → route and record.

Each stage takes the notices of one cycle and returns the ones that go on; a stage that holds one
back says why in the alert history. The last stage writes the survivors into the durable outbox,
one row per notifier, in the same transaction as the alert states that caused them; delivery
(retries by error kind, rate limits, digests) happens later from there (:mod:`.delivery`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from stageflow.alerts.model import Message
from stageflow.alerts.notifiers import Notifier, routes
from stageflow.config.models import Silence
from stageflow.state.monitoring import AlertRow, MonitorState, Transition


@dataclass
class Notice:
    """A message on its way, with the alert it belongs to (None for deploy events)."""

    message: Message
    dedup_key: str
    alert: AlertRow | None = None
    depends_on: tuple[str, ...] = ()
    queued: list[str] = field(default_factory=list)


class Stage(Protocol):
    """One step of the notification path."""

    def __call__(self, notices: list[Notice]) -> list[Notice]:
        """The notices that go on."""


Record = Callable[[Notice, str, str], None]


def history_recorder(state: MonitorState, now: float) -> Record:
    """A ``record(notice, transition, note)`` writing to the alert history."""

    def record(n: Notice, transition: str, note: str) -> None:
        m = n.message
        state.add_transition(Transition(now, m.fingerprint or f"{m.env}/deploy/{m.deploy.get('status', '')}", m.env,
                                        m.check or "deploy", m.target, transition, m.severity, m.value,
                                        m.summary or m.title, None, note))

    return record


@dataclass
class Fold:
    """Fold an alert under a failing dependency of the same env (the app's health under its database).

    The dependency's message lists what it folds; the folded alert remembers it, so its resolution
    stays quiet too, and it speaks up on its own if it still fails once the dependency is back.
    """

    failing: Callable[[str, str], str | None]
    record: Record

    def __call__(self, notices: list[Notice]) -> list[Notice]:
        """Drop folded notices; name them on their parent's."""
        out: list[Notice] = []
        by_fp = {n.message.fingerprint: n for n in notices}
        for n in notices:
            parent = next((p for c in n.depends_on if (p := self.failing(n.message.env, c))), None)
            if parent is None or n.message.kind == "resolved":
                out.append(n)
                continue
            if n.alert is not None:
                n.alert.folded_under = parent
            if parent in by_fp:
                by_fp[parent].message.folded.append(f"{n.message.check} ({n.message.target})")
            self.record(n, "folded", f"under {parent}")
        return out


@dataclass
class Dedup:
    """Nothing twice: a notice whose key was queued before (a re-run of the same cycle) is dropped."""

    state: MonitorState
    record: Record

    def __call__(self, notices: list[Notice]) -> list[Notice]:
        """Keep notices never queued."""
        out = []
        for n in notices:
            if self.state.queued(n.dedup_key):
                self.record(n, "duplicate", n.dedup_key)
            else:
                out.append(n)
        return out


def silenced_by(silences: Sequence[Silence], env: str, check: str, now: float) -> Silence | None:
    """The first silence or maintenance window covering (env, check) at ``now``."""
    when = datetime.fromtimestamp(now, UTC)
    for s in silences:
        if not (fnmatch.fnmatchcase(env, s.env) and fnmatch.fnmatchcase(check, s.check)):
            continue
        if s.start and when < _aware(s.start):
            continue
        if s.end and when >= _aware(s.end):
            continue
        if s.daily:
            start, end = s.daily.split("-")
            minute = when.hour * 60 + when.minute
            a, b = (int(start[:2]) * 60 + int(start[3:]), int(end[:2]) * 60 + int(end[3:]))
            inside = a <= minute < b if a <= b else (minute >= a or minute < b)
            if not inside:
                continue
        return s
    return None


def _aware(ts: str) -> datetime:
    d = datetime.fromisoformat(ts)
    return d if d.tzinfo else d.replace(tzinfo=UTC)


@dataclass
class Silencer:
    """Hold back alerts under a silence, a maintenance window, or while their env is being deployed.

    A silenced firing alert is marked, so it is announced once the silence is over if it still fires.
    """

    silences: Sequence[Silence]
    deploying: Callable[[str], bool]
    now: float
    record: Record

    def __call__(self, notices: list[Notice]) -> list[Notice]:
        """Keep notices no silence covers (deploy events are never silenced)."""
        out = []
        for n in notices:
            m = n.message
            if m.kind == "deploy":
                out.append(n)
                continue
            why = None
            if self.deploying(m.env):
                why = f"{m.env} is being deployed"
            elif s := silenced_by(self.silences, m.env, m.check, self.now):
                why = f"silence {s.env}/{s.check}" + (f" ({s.comment})" if s.comment else "")
            if why is None:
                out.append(n)
                continue
            if n.alert is not None and m.kind != "resolved":
                n.alert.folded_under = "silence"
            self.record(n, "silenced", why)
        return out


@dataclass
class RouteAndRecord:
    """Queue each notice for every notifier whose route takes it; record where it went."""

    state: MonitorState
    notifiers: Sequence[Notifier]
    now: float
    record: Record

    def __call__(self, notices: list[Notice]) -> list[Notice]:
        """Write the outbox rows."""
        for n in notices:
            for notifier in self.notifiers:
                if routes(notifier.route, n.message) and self.state.enqueue(
                        notifier.name, n.message.env, n.message.kind, n.dedup_key, n.message.to_dict(), self.now):
                    n.queued.append(notifier.name)
            self.record(n, "queued", ", ".join(n.queued) or "no notifier takes it")
        return notices


def run(stages: Sequence[Stage], notices: list[Notice]) -> list[Notice]:
    """Pass notices through the stages in order."""
    for stage in stages:
        notices = stage(notices)
    return notices
