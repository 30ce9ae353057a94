"""``stageflow status``: what runs where, and whether it is healthy.

Kept apart from the deploy pipeline so that this read-only command imports only what it uses: it
is the command people run in loops and scripts, and its start-up time is measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stageflow.config.loader import EnvContext, load_env_context, load_project, resolve_env_name
from stageflow.errors import ConfigError

if TYPE_CHECKING:
    from stageflow.workspace import Workspace


@dataclass(frozen=True)
class EnvStatus:
    """One row of ``status``."""

    env: str
    release: str | None
    commit: str | None
    healthy: bool
    reason: str
    url: str
    runtime: str
    deployed_at: str | None
    previous: str | None
    downtime: bool
    processes: int
    locked_by: str | None
    restarts: int = 0
    #: Per service, when its supervisor restarted it: "backend restarted 2× (last: signal SIGKILL at …)".
    supervisor: list[str] = field(default_factory=list)
    #: Per service, what the runtime knows (compose: containers, health, image, uptime, restarts).
    services: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dict(self.__dict__)


def status(ws: Workspace, env: str | None = None, environ: Mapping[str, str] | None = None) -> list[EnvStatus]:
    """State of every (or one) environment, with a live health probe."""
    import threading

    from stageflow.deploy.lock import read_lock
    from stageflow.deploy.probe import is_healthy
    from stageflow.runtimes import runtime_for
    from stageflow.runtimes.base import Placement

    config = load_project(ws.root)
    names = [resolve_env_name(config, env)] if env else list(config.environments)
    contexts: dict[str, EnvContext] = {}
    health: dict[str, tuple[bool, str]] = {}
    for name in names:
        try:
            contexts[name] = load_env_context(ws.root, name, environ)
        except ConfigError as exc:
            # One environment's missing secret must not hide the others: report it in its row.
            if env:
                raise
            health[name] = (False, f"config error: {exc}")
    states = {name: ws.store.env_state(name) for name in names}

    def probe(name: str) -> None:
        try:
            health[name] = is_healthy(contexts[name], runtime_for(contexts[name], ws.runner, ws.store))
        except Exception as exc:
            # A probe that breaks is a row that says so, not a crash of the whole command.
            health[name] = (False, f"probe failed: {type(exc).__name__}: {exc}")

    # Probes wait on the network: start them first, side by side, and read the rest meanwhile.
    probes = []
    for name in names:
        if name in health:
            continue
        st = states[name]
        if not st.current_release:
            # After `stageflow down` the previous release is kept, and the state's time is the stop.
            stopped = f"stopped at {(st.deployed_at or '?')[:19]}; last release {st.previous_release}"
            health[name] = (False, stopped if st.previous_release else "not deployed")
            continue
        t = threading.Thread(target=probe, args=(name,), name=f"probe-{name}", daemon=True)
        t.start()
        probes.append(t)
    rows = []
    for name in names:
        st = states[name]
        ctx = contexts.get(name)
        placement = Placement.from_json(st.placement) if st.placement else None
        live = (runtime_for(ctx, ws.runner, ws.store).status(placement) if ctx and placement
                and st.current_release else None)
        release = ws.store.release(st.current_release) if st.current_release else None
        lock = read_lock(ws.store, name)
        rows.append((name, st, ctx, live, release, lock))
    for t in probes:
        t.join()
    out = []
    for name, st, ctx, live, release, lock in rows:
        healthy, reason = health[name]
        section = config.environments[name]
        out.append(EnvStatus(
            name, st.current_release, release["commit_sha"] if release else None, healthy, reason,
            ctx.env.url if ctx else section.url, section.runtime,
            st.deployed_at if st.current_release else None, st.previous_release,
            st.downtime, live.units if live else 0, lock.describe() if lock else None,
            live.restarts if live else 0, list(live.notes) if live else [],
            {k: dict(v) for k, v in live.services.items()} if live else {},
        ))
    return out
