"""Probing an environment's health through the path its users take (the runtime says which)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stageflow.config.loader import EnvContext
    from stageflow.deploy.health import Probe
    from stageflow.runtimes.base import Runtime


def probe_env(ctx: EnvContext, rt: Runtime, timeout: float = 2.0) -> Probe:
    """One probe through the proxy; ``Probe.upstream`` says which upstream answered when the proxy tells."""
    health = ctx.config.web_service[1].health
    url, prober = rt.public_probe()
    return prober(url, health.expect if health else 200, timeout)


def is_healthy(ctx: EnvContext, rt: Runtime, timeout: float = 2.0) -> tuple[bool, str]:
    """One quick probe of the env, through its proxy when it has one."""
    p = probe_env(ctx, rt, timeout)
    return p.ok, p.reason
