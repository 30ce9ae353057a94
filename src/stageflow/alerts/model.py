"""What checks report and what notifiers send: plain data shared by the monitor and the alert path."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITIES = ("ok", "info", "warning", "critical")


def rank(severity: str) -> int:
    """Order of severities (ok < info < warning < critical); unknown counts as critical."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES) - 1


@dataclass
class Observation:
    """One rule's outcome in one check cycle: ``severity`` ok, info, warning or critical.

    ``fingerprint`` (env, check, target) keys the alert across cycles. ``depends_on`` names checks of
    the same environment this one folds under while they fail (the app's health under its database).
    """

    env: str
    check: str
    target: str
    severity: str
    summary: str
    value: float | None = None
    threshold: float | None = None
    unit: str = ""
    hint: str = ""
    details: list[str] = field(default_factory=list)
    metrics: list[tuple[str, float]] = field(default_factory=list)
    depends_on: tuple[str, ...] = ()
    #: False when there was too little to judge (error rate under the minimum request count): shown,
    #: sampled, but it neither fires nor resolves an alert.
    judged: bool = True

    @property
    def fingerprint(self) -> str:
        """``env/check/target``."""
        return f"{self.env}/{self.check}/{self.target}"

    @property
    def bad(self) -> bool:
        """Warning or critical: the rule's condition holds."""
        return rank(self.severity) >= rank("warning")


@dataclass
class Message:
    """One notification, independent of where it goes (each notifier renders its own payload).

    ``kind``: firing, escalated, reminder, resolved (alerts), deploy (a deploy event), digest.
    """

    kind: str
    env: str
    severity: str
    title: str
    check: str = ""
    target: str = ""
    fingerprint: str = ""
    summary: str = ""
    value: float | None = None
    threshold: float | None = None
    unit: str = ""
    hint: str = ""
    since: float | None = None
    duration: float | None = None
    ts: float = 0.0
    details: list[str] = field(default_factory=list)
    folded: list[str] = field(default_factory=list)
    deploy: dict[str, Any] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in the outbox)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        """Back from the outbox; unknown keys (a damaged or newer row) are ignored."""
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


def fmt_span(seconds: float | None) -> str:
    """``3m 20s``, ``2h 5m``."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    return f"{s // 3600}h {s % 3600 // 60}m"
