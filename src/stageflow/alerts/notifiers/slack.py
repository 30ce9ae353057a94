"""Slack incoming webhooks: one attachment coloured by severity (green when resolved)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from stageflow.alerts.model import Message, fmt_span
from stageflow.alerts.notifiers import SendResult, check_url, post_json
from stageflow.config.models import Route, SlackAlerts

if TYPE_CHECKING:
    import httpx

COLORS = {"critical": "#d40e0d", "warning": "#e8a317", "info": "#439fe0", "ok": "#2eb886", "resolved": "#2eb886"}
DEPLOY_COLORS = {"deployed": "#2eb886", "promoted": "#2eb886", "failed": "#d40e0d", "rolled_back": "#e8a317"}


def fmt_value(value: float | None, unit: str) -> str:
    """``93.5%``, ``2310ms``, ``-`` — short and unit-aware."""
    if value is None:
        return "-"
    text = f"{value:.0f}" if abs(value) >= 100 or value == int(value) else f"{value:.1f}"
    return f"{text}{unit}" if unit in ("%", "ms", "s") else f"{text} {unit}".rstrip()


def fmt_ts(ts: float | None) -> str:
    """UTC time of a Unix timestamp, to the minute."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass
class SlackNotifier:
    """Posts to a Slack incoming webhook."""

    url: str
    route: Route
    channel: str | None = None
    name: str = "slack"
    key: str = "alerts.slack.webhook"

    @classmethod
    def from_config(cls, section: SlackAlerts, index: int) -> SlackNotifier:
        """From ``alerts.slack``."""
        return cls(url=section.webhook, route=section, channel=section.channel)

    def validate(self) -> None:
        """The webhook is an http(s) URL."""
        check_url(self.url, self.key)

    def build_payload(self, message: Message) -> dict[str, Any]:
        """Slack's ``text`` + one attachment with the fields an on-call person needs."""
        if message.kind == "deploy":
            body = self._deploy(message)
        elif message.kind == "digest":
            body = self._digest(message)
        else:
            body = self._alert(message)
        if self.channel:
            body["channel"] = self.channel
        return body

    def _alert(self, m: Message) -> dict[str, Any]:
        resolved = m.kind == "resolved"
        head = {"firing": "FIRING", "escalated": "ESCALATED", "reminder": "STILL FIRING",
                "resolved": "RESOLVED"}.get(m.kind, m.kind.upper())
        severity = m.severity.upper()
        text = f"[{head}] {severity} {m.env}: {m.title}"
        fields = [
            {"title": "Environment", "value": m.env, "short": True},
            {"title": "Check", "value": f"{m.check} ({m.target})", "short": True},
            {"title": "Value", "value": f"{fmt_value(m.value, m.unit)} (threshold {fmt_value(m.threshold, m.unit)})"
             if m.threshold is not None else fmt_value(m.value, m.unit), "short": True},
            {"title": "Since", "value": fmt_ts(m.since), "short": True},
        ]
        if resolved:
            fields.append({"title": "Lasted", "value": fmt_span(m.duration), "short": True})
        if m.folded:
            fields.append({"title": "Also affected", "value": ", ".join(m.folded), "short": False})
        lines = [m.summary, *m.details[:5]]
        if m.hint and not resolved:
            lines.append(f"Hint: {m.hint}")
        return {
            "text": text,
            "attachments": [{
                "color": COLORS["resolved" if resolved else m.severity],
                "title": f"{severity} · {m.env} · {m.check}" + (" — resolved" if resolved else ""),
                "text": "\n".join(line for line in lines if line),
                "fields": fields,
                "footer": "stageflow monitor",
                "ts": int(m.ts),
            }],
        }

    def _deploy(self, m: Message) -> dict[str, Any]:
        d = m.deploy
        status = str(d.get("status", ""))
        text = f"{m.env}: {m.title}"
        fields = [{"title": k.capitalize(), "value": str(d[k]), "short": True}
                  for k in ("release", "commit", "actor", "outcome") if d.get(k)]
        if d.get("duration") is not None:
            fields.append({"title": "Duration", "value": fmt_span(float(d["duration"])), "short": True})
        return {"text": text, "attachments": [{
            "color": DEPLOY_COLORS.get(status, COLORS["info"]), "title": f"{status.replace('_', ' ')} · {m.env}",
            "text": str(d.get("error") or ""), "fields": fields, "footer": "stageflow", "ts": int(m.ts)}]}

    def _digest(self, m: Message) -> dict[str, Any]:
        lines = [f"{'✓' if i['kind'] == 'resolved' else '•'} {i['severity'].upper()} {i['env']} {i['check']} "
                 f"({i['target']}): {i['summary']}" + (" — resolved" if i["kind"] == "resolved" else "")
                 for i in m.items]
        return {"text": m.title, "attachments": [{"color": COLORS.get(m.severity, COLORS["info"]),
                                                   "title": m.title, "text": "\n".join(lines),
                                                   "footer": "stageflow monitor", "ts": int(m.ts)}]}

    async def send(self, client: httpx.AsyncClient, payload: dict[str, Any]) -> SendResult:
        """POST to the webhook."""
        return await post_json(client, self.url, payload)
