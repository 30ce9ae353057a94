"""The alert rule state machine: ok → pending → firing → resolved (back to ok), keyed by fingerprint.

Pure: an alert's stored state and one observation in, the new state and what happened out. A
condition fires only after it held ``consecutive`` checks in a row *and* for ``fire_after`` seconds,
and resolves the same way, so a check that flaps between good and bad never fires: each good
observation resets the pending count, each bad one the resolving count.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from stageflow.alerts.model import Observation, rank
from stageflow.state.monitoring import AlertRow

#: What a step can produce. ``firing``, ``escalated``, ``reminder`` and ``resolved`` are sent;
#: ``pending`` and ``cancelled`` (a pending condition that cleared) are only recorded.
SENT = ("firing", "escalated", "reminder", "resolved")


@dataclass(frozen=True)
class Timing:
    """How long a condition must hold before firing and before resolving, and the reminder interval."""

    fire_after: float = 0.0
    resolve_after: float = 0.0
    consecutive: int = 2
    reminder: float = 14400.0


def step(prev: AlertRow | None, obs: Observation, now: float, timing: Timing) -> tuple[AlertRow | None, list[str]]:
    """Advance one alert by one observation; returns its new state (None: nothing to store) and transitions."""
    if prev is None:
        if not obs.bad:
            return None, []
        prev = AlertRow(obs.fingerprint, obs.env, obs.check, obs.target, updated_at=now)
    a = replace(prev, value=obs.value, threshold=obs.threshold, unit=obs.unit, updated_at=now)
    out: list[str] = []
    if obs.bad:
        a.good_count, a.good_since = 0, None
        a.bad_count += 1
        a.summary, a.hint = obs.summary, obs.hint
        if a.state == "ok":
            a.state, a.pending_since, a.severity = "pending", now, obs.severity
            a.bad_count, a.folded_under, a.firing_since = 1, None, None
            out.append("pending")
        if a.state == "pending":
            a.severity = obs.severity
            held = now - (a.pending_since if a.pending_since is not None else now)
            if a.bad_count >= timing.consecutive and held >= timing.fire_after:
                a.state, a.firing_since, a.last_notified = "firing", now, now
                out.append("firing")
        elif a.state == "firing":
            if rank(obs.severity) > rank(a.severity):
                a.last_notified = now
                out.append("escalated")
            elif a.last_notified is not None and now - a.last_notified >= timing.reminder:
                a.last_notified = now
                out.append("reminder")
            a.severity = obs.severity
        return a, out
    a.bad_count = 0
    if a.state == "pending":
        a.state, a.pending_since = "ok", None
        out.append("cancelled")
    elif a.state == "firing":
        a.good_count += 1
        if a.good_since is None:
            a.good_since = now
        if a.good_count >= timing.consecutive and now - a.good_since >= timing.resolve_after:
            a.state = "ok"
            out.append("resolved")
    return a, out


def incident_duration(a: AlertRow, now: float) -> float:
    """How long the condition lasted: from when it was first seen bad until now."""
    start = a.pending_since if a.pending_since is not None else a.firing_since
    return max(0.0, now - start) if start is not None else 0.0
