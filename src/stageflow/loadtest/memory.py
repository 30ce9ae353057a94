"""Memory of an environment's services, read through its runtime.

The load test needs one fact from a runtime: how much memory each service uses now. That is this
module's whole interface (:class:`MemorySource`), so the runtime protocol being designed elsewhere
can grow without this code changing; a runtime plugs in with one line in :data:`SOURCES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from stageflow.config.loader import EnvContext
    from stageflow.runner import Runner


class MemorySource(Protocol):
    """Resident memory per service of one environment, in MB."""

    def memory(self) -> dict[str, float]:
        """``{service: MB}`` for the processes serving now (a service that is not running is absent)."""
        ...


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants (a supervisor, gunicorn and its workers), in MB."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue  # a worker that exits mid-read no longer holds memory
    return total / 2**20


class LocalMemory:
    """The local runtime's services: the live color's supervised process trees."""

    def __init__(self, ctx: EnvContext, runner: Runner) -> None:
        from stageflow.runtimes.local import COLORS, LocalRuntime

        self.runtime = LocalRuntime(ctx, runner)
        self.colors = COLORS

    def memory(self) -> dict[str, float]:
        """Every live service process of the colour nginx routes to (or of any colour without a proxy)."""
        serving = self.runtime.serving_color()
        colors = [serving[0]] if serving else list(self.colors)
        out: dict[str, float] = {}
        for color in colors:
            for info in self.runtime.processes(color):
                out[info.service] = out.get(info.service, 0.0) + tree_rss_mb(info.pid)
        return out


#: runtime name → how to read its services' memory.
SOURCES: dict[str, Callable[[EnvContext, Runner], MemorySource]] = {
    "local": LocalMemory,
}


def memory_source(ctx: EnvContext, runner: Runner) -> MemorySource | None:
    """The environment's memory source, or None when its runtime cannot tell."""
    factory = SOURCES.get(ctx.env.runtime)
    return factory(ctx, runner) if factory else None
