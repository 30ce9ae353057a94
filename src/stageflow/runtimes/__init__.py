"""Runtimes: one module each behind :class:`stageflow.runtimes.base.Runtime`, registered here.

``RUNTIMES`` maps every value ``environments.<env>.runtime`` accepts to its class; a unit test
checks that the two agree. Shared code asks :func:`runtime_for` and never names a runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stageflow.runtimes.compose import ComposeRuntime
from stageflow.runtimes.local import LocalRuntime

if TYPE_CHECKING:
    from stageflow.config.loader import EnvContext
    from stageflow.runner import Runner
    from stageflow.runtimes.base import Runtime
    from stageflow.state.store import Store

RUNTIMES: dict[str, type[LocalRuntime] | type[ComposeRuntime]] = {
    "local": LocalRuntime,
    "compose": ComposeRuntime,
}


def runtime_for(ctx: EnvContext, runner: Runner, store: Store | None = None) -> Runtime:
    """The runtime of ``ctx``'s environment (``environments.<env>.runtime``)."""
    rt: Runtime = RUNTIMES[ctx.env.runtime](ctx, runner, store)
    return rt
