"""HTTP checks: status, response time, an optional JSON body condition, TLS certificate days left."""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from stageflow.alerts.model import Observation
from stageflow.monitor.thresholds import Limits

if TYPE_CHECKING:
    import httpx

#: The app's health answers fold under these checks of the same env while they fail.
DEPENDS_ON = ("postgres", "redis")


def json_field(body: Any, path: str) -> Any:
    """``a.b.c`` looked up in a decoded JSON body; a missing step gives None."""
    for part in path.split("."):
        if isinstance(body, dict):
            body = body.get(part)
        elif isinstance(body, list) and part.isdigit() and int(part) < len(body):
            body = body[int(part)]
        else:
            return None
    return body


def cert_days_left(host: str, port: int, timeout: float, now: float) -> float:
    """Days until the certificate served at host:port expires (read, not verified: expiry is the question)."""
    from cryptography import x509

    pem = ssl.get_server_certificate((host, port), timeout=timeout)
    cert = x509.load_pem_x509_certificate(pem.encode())
    return (cert.not_valid_after_utc - datetime.fromtimestamp(now, UTC)).total_seconds() / 86400


@dataclass
class HttpCheck:
    """GET one URL and judge it."""

    env: str
    target: str
    url: str
    client: httpx.AsyncClient
    response: Limits
    tls: Limits
    expect: int = 200
    conditions: dict[str, Any] = field(default_factory=dict)
    timeout: float = 10.0
    name: str = "http"

    async def run(self) -> list[Observation]:
        """One request; TLS expiry alongside for https."""
        import httpx

        obs: list[Observation] = []
        start = time.perf_counter()
        try:
            r = await self.client.get(self.url, timeout=self.timeout)
        except httpx.TimeoutException:
            return [self._down(f"no answer within {self.timeout:g}s", "timeout")]
        except httpx.HTTPError as exc:
            reason = "connection refused" if isinstance(exc, httpx.ConnectError) else type(exc).__name__
            return [self._down(f"{reason}: {self.url}", reason)]
        ms = (time.perf_counter() - start) * 1000
        problem = None
        if r.status_code != self.expect:
            problem = f"HTTP {r.status_code} (expected {self.expect}): {r.text[:120].strip()}"
        elif self.conditions:
            try:
                body = r.json()
            except ValueError:
                body = None
            for path, want in self.conditions.items():
                got = json_field(body, path)
                if got != want:
                    problem = f"body {path} is {got!r}, expected {want!r}"
                    break
        if problem:
            obs.append(Observation(self.env, "http", self.target, "critical", problem, float(r.status_code),
                                   hint=f"look at the {self.target} logs; stageflow status {self.env}",
                                   metrics=[("up", 0.0), ("response_ms", ms)], depends_on=DEPENDS_ON))
        else:
            obs.append(Observation(self.env, "http", self.target, "ok", f"HTTP {r.status_code} in {ms:.0f}ms",
                                   float(r.status_code), metrics=[("up", 1.0), ("response_ms", ms)],
                                   depends_on=DEPENDS_ON))
        sev = self.response.severity(ms)
        obs.append(Observation(self.env, "response_time", self.target, sev, f"{self.url} answered in {ms:.0f}ms",
                               ms, self.response.shown, "ms",
                               hint="slow answers: check CPU, the database and recent deploys" if sev != "ok" else "",
                               depends_on=DEPENDS_ON))
        parts = urlsplit(self.url)
        if parts.scheme == "https" and parts.hostname:
            obs.append(await self._tls(parts.hostname, parts.port or 443))
        return obs

    async def _tls(self, host: str, port: int) -> Observation:
        try:
            days = await asyncio.to_thread(cert_days_left, host, port, self.timeout, time.time())
        except (OSError, ValueError) as exc:
            return Observation(self.env, "tls", self.target, "warning", f"cannot read the certificate: {exc}")
        sev = self.tls.severity(days)
        return Observation(self.env, "tls", self.target, sev, f"certificate expires in {days:.0f} days", days,
                           self.tls.shown, "days", hint="renew the certificate" if sev != "ok" else "",
                           metrics=[("tls_days", days)])

    def _down(self, why: str, _kind: str) -> Observation:
        return Observation(self.env, "http", self.target, "critical", why, None,
                           hint=f"is it running? stageflow status {self.env}", metrics=[("up", 0.0)],
                           depends_on=DEPENDS_ON)
