"""The one registry of what each runtime tells the monitor (see :mod:`.resources`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from stageflow.monitor.resources import MonitorSource, ServiceStats

if TYPE_CHECKING:
    from stageflow.config.loader import EnvContext
    from stageflow.runner import Runner
    from stageflow.state.store import Store


class LocalSource:
    """The local runtime: its process groups, ``run/<env>/logs/<service>-<color>.log``, its nginx access log."""

    def __init__(self, ctx: EnvContext, runner: Runner, store: Store) -> None:
        from stageflow.runtimes.local import LocalRuntime

        self.rt = LocalRuntime(ctx, runner)
        self.ctx, self.store = ctx, store

    def service_stats(self, window: float) -> list[ServiceStats]:
        """Through the runtime's own method."""
        return self.rt.service_stats(window)

    def log_files(self) -> dict[str, Path]:
        """Logs of the color that serves now (none when nothing was deployed)."""
        placement = self.store.env_state(self.ctx.name).placement  # the local runtime's: {slot: color, port}
        color = placement.get("slot") if placement else None
        if not isinstance(color, str):
            return {}
        return {name: self.rt.log_dir / f"{name}-{color}.log" for name, svc in self.ctx.config.services.items()
                if svc.command}

    def access_log(self) -> Path | None:
        """The env's private nginx log."""
        return self.rt.nginx_dir / "access.log"

    def ca_file(self) -> Path | None:
        """The self-signed certificate the runtime made for an https URL on loopback, if it did."""
        from stageflow.errors import OperationError

        if not self.rt.https:
            return None
        try:
            cert = self.rt.tls_paths()[0]
        except OperationError:
            return None  # a real host with a certificate from a public CA: the system's trust store
        return cert if cert.is_file() else None


SOURCES: dict[str, Callable[[EnvContext, Runner, Store], MonitorSource]] = {"local": LocalSource}


def source_for(ctx: EnvContext, runner: Runner, store: Store) -> MonitorSource | None:
    """The env's runtime's source, or None for a runtime that supplies none yet."""
    factory = SOURCES.get(ctx.env.runtime)
    return factory(ctx, runner, store) if factory else None
