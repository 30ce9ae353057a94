"""Probing an environment's health through the path its users take (the proxy when there is one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stageflow.contexts import host_port
from stageflow.deploy.health import Prober, http_probe

if TYPE_CHECKING:
    from stageflow.config.loader import EnvContext
    from stageflow.runtimes.local import LocalRuntime


def svc_health(ctx: EnvContext) -> str:
    """Health path of the web service."""
    health = ctx.config.web_service[1].health
    return health.path if health else "/"


def probe_url(ctx: EnvContext, rt: LocalRuntime) -> str:
    """The health URL through the proxy (https when the env's URL is), on the address it listens on."""
    scheme = "https" if rt.https and rt.nginx_binary else "http"
    return f"{scheme}://{host_port(rt.listen_host, ctx.env.url_port)}{svc_health(ctx)}"


def proxy_prober(rt: LocalRuntime) -> Prober:
    """A prober that trusts the certificate the proxy serves."""
    if not (rt.https and rt.nginx_binary):
        return http_probe
    cert = rt.tls_paths()[0]
    return lambda url, expect, timeout: http_probe(url, expect, timeout, cafile=cert)


def is_healthy(ctx: EnvContext, rt: LocalRuntime, timeout: float = 2.0) -> tuple[bool, str]:
    """One quick probe of the env."""
    health = ctx.config.web_service[1].health
    p = proxy_prober(rt)(probe_url(ctx, rt), health.expect if health else 200, timeout)
    return p.ok, p.reason
