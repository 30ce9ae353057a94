"""A generic JSON webhook: flat, documented fields (a superset of ``{"status", "environment"}``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stageflow.alerts.model import Message
from stageflow.alerts.notifiers import SendResult, check_url, post_json
from stageflow.config.models import Route, WebhookAlerts

if TYPE_CHECKING:
    import httpx


@dataclass
class WebhookNotifier:
    """Posts one JSON object per message."""

    url: str
    route: Route
    name: str = "webhook"
    key: str = "alerts.webhooks[0].url"

    @classmethod
    def from_config(cls, section: WebhookAlerts, index: int) -> WebhookNotifier:
        """From one entry of ``alerts.webhooks``."""
        return cls(url=section.url, route=section, name=f"webhook:{section.name or index}",
                   key=f"alerts.webhooks[{index}].url")

    def validate(self) -> None:
        """The URL is http(s)."""
        check_url(self.url, self.key)

    def build_payload(self, message: Message) -> dict[str, Any]:
        """Deploys: status, environment, release, commit, actor, duration, outcome. Alerts: the alert's fields."""
        m = message
        if m.kind == "deploy":
            return {"type": "deploy", "environment": m.env, **m.deploy, "ts": m.ts}
        if m.kind == "digest":
            return {"type": "digest", "status": "digest", "environment": m.env, "title": m.title,
                    "alerts": m.items, "ts": m.ts}
        return {
            "type": "alert", "status": "resolved" if m.kind == "resolved" else "firing", "event": m.kind,
            "severity": m.severity, "environment": m.env, "check": m.check, "target": m.target,
            "fingerprint": m.fingerprint, "summary": m.summary, "value": m.value, "threshold": m.threshold,
            "unit": m.unit, "since": m.since, "duration": m.duration, "hint": m.hint, "details": m.details,
            "folded": m.folded, "ts": m.ts,
        }

    async def send(self, client: httpx.AsyncClient, payload: dict[str, Any]) -> SendResult:
        """POST the JSON."""
        return await post_json(client, self.url, payload)
