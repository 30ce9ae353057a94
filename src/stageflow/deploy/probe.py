"""Probing an environment's health through the path its users take (the proxy when there is one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stageflow.contexts import host_port
from stageflow.deploy.health import Probe, Prober, http_probe

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
    p = probe_env(ctx, rt, timeout)
    return p.ok, p.reason


def probe_env(ctx: EnvContext, rt: LocalRuntime, timeout: float = 2.0) -> Probe:
    """One probe through the proxy that also asks it which upstream answered (``Probe.upstream``)."""
    health = ctx.config.web_service[1].health
    cafile = rt.tls_paths()[0] if rt.https and rt.nginx_binary else None
    headers = rt.probe_headers() if rt.nginx_binary else {}
    return http_probe(probe_url(ctx, rt), health.expect if health else 200, timeout, cafile=cafile, headers=headers)
