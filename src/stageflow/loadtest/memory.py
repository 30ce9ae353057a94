"""Memory of an environment's services, read through its runtime.

The load test needs one fact from a runtime: how much memory each service uses now. That is this
module's whole interface (:class:`MemorySource`); :class:`RuntimeMemory` answers it for every
runtime through the runtime protocol's ``service_stats`` (the local runtime: the resident memory of
each supervised process tree; compose: the engine's container stats), naming no runtime itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from stageflow.config.loader import EnvContext
    from stageflow.runner import Runner
    from stageflow.runtimes.base import Runtime


class MemorySource(Protocol):
    """Resident memory per service of one environment, in MB."""

    def memory(self) -> dict[str, float]:
        """``{service: MB}`` for the services running now (one that is not running is absent)."""
        ...


class RuntimeMemory:
    """A :class:`MemorySource` over any runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def memory(self) -> dict[str, float]:
        """Each service's resident memory now (no CPU window: only memory is read)."""
        return {s.service: s.rss_bytes / 2**20 for s in self.runtime.service_stats(0.0)}


def memory_source(ctx: EnvContext, runner: Runner) -> MemorySource:
    """The environment's memory source: its runtime's."""
    from stageflow.runtimes import runtime_for

    return RuntimeMemory(runtime_for(ctx, runner))
