"""Notifiers behind one small protocol, and the one registry that builds them from ``alerts:``.

A notifier is pure up to ``send``: ``validate`` checks its target, ``build_payload`` turns a
:class:`~stageflow.alerts.model.Message` into the exact JSON its service expects (tested byte for
byte), and ``send`` posts it through the HTTP client it is given. Shared code only ever sees the
protocol; this module is the one place that names the concrete kinds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from stageflow.alerts.model import Message, rank
from stageflow.config.models import Alerts, Route
from stageflow.errors import ConfigError

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class SendResult:
    """What one POST did: ``status`` None when no answer came (timeout, refused)."""

    status: int | None
    detail: str = ""
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        """2xx."""
        return self.status is not None and 200 <= self.status < 300


class Notifier(Protocol):
    """One destination of messages."""

    #: Registry key and the stable name outbox rows refer to (``slack``, ``webhook:ops``).
    name: str
    #: The config key path, for error messages (``alerts.slack.webhook``).
    key: str
    route: Route

    def validate(self) -> None:
        """Raise ConfigError naming the key when the target cannot work."""

    def build_payload(self, message: Message) -> dict[str, Any]:
        """The JSON body for one message (pure)."""

    async def send(self, client: httpx.AsyncClient, payload: dict[str, Any]) -> SendResult:
        """POST ``payload``; never raises for network errors (they are a result)."""


def check_url(url: str, key: str) -> None:
    """An http(s) URL with a host, or ConfigError naming ``key``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key}: must be an http(s) URL", hint="fix it in stageflow.yml or the variable it names")


async def post_json(client: httpx.AsyncClient, url: str, payload: dict[str, Any],
                    headers: dict[str, str] | None = None) -> SendResult:
    """POST JSON; map timeouts and connection errors to a result, read ``Retry-After``."""
    import httpx

    try:
        r = await client.post(url, json=payload, headers=headers)
    except httpx.TimeoutException:
        return SendResult(None, "timed out")
    except httpx.HTTPError as exc:
        return SendResult(None, f"{type(exc).__name__}: {exc}"[:200])
    return SendResult(r.status_code, r.text[:200], parse_retry_after(r.headers.get("retry-after")))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def routes(route: Route, message: Message) -> bool:
    """Does a message go to a notifier with this route?"""
    if message.kind == "deploy":
        envs = route.deploy_environments or route.environments
        return (not envs or message.env in envs) and message.deploy.get("status") in route.events
    if route.environments and message.env not in route.environments:
        return False
    return rank(message.severity) >= rank(route.min_severity)


Factory = Callable[[Any, int], Notifier]


def _registry() -> dict[str, tuple[Callable[[Alerts], Sequence[Any]], Factory]]:
    from stageflow.alerts.notifiers.slack import SlackNotifier
    from stageflow.alerts.notifiers.webhook import WebhookNotifier

    return {
        "slack": (lambda a: [a.slack] if a.slack else [], SlackNotifier.from_config),
        "webhook": (lambda a: a.webhooks, WebhookNotifier.from_config),
    }


def kinds() -> list[str]:
    """Every registered notifier kind."""
    return list(_registry())


def unresolved(value: str) -> str | None:
    """The first ``${VAR}`` still in a value (its variable was unset), else None."""
    import re

    m = re.search(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", value)
    return m.group(1) if m else None


def build_notifiers(alerts: Alerts, warn: Callable[[str], None]) -> list[Notifier]:
    """Every configured notifier; one whose variable is unset is left out with one warning."""
    out: list[Notifier] = []
    for kind, (sections, factory) in _registry().items():
        for i, section in enumerate(sections(alerts)):
            notifier = factory(section, i)
            target = getattr(notifier, "url", "")
            var = unresolved(target)
            if var is not None:
                warn(f"{notifier.key}: ${{{var}}} is not set: {kind} notifications are disabled")
                continue
            notifier.validate()
            out.append(notifier)
    return out
