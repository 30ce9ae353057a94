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
    from stageflow.runtimes.base import Placement
    from stageflow.state.store import EnvState
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
    #: What the record says serves (``release`` is what really does, asked of the proxy).
    recorded: str | None = None
    #: Set when routing and the record disagree: what each says, and what repairs it.
    mismatch: str | None = None
    #: Why the lock may be taken over (its holder died, its lease expired), else None.
    lock_stale: str | None = None
    #: Per service, what the runtime knows (compose: containers, health, image, uptime, restarts).
    services: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dict(self.__dict__)


def status(ws: Workspace, env: str | None = None, environ: Mapping[str, str] | None = None) -> list[EnvStatus]:
    """State of every (or one) environment, with a live health probe."""
    import threading

    from stageflow.deploy.health import Probe
    from stageflow.deploy.lock import read_lock, stale_reason
    from stageflow.deploy.probe import probe_env
    from stageflow.runtimes import runtime_for
    from stageflow.runtimes.base import Placement

    config = load_project(ws.root)
    names = [resolve_env_name(config, env)] if env else list(config.environments)
    contexts: dict[str, EnvContext] = {}
    health: dict[str, tuple[bool, str]] = {}
    upstreams: dict[str, str | None] = {}
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
            p: Probe = probe_env(contexts[name], runtime_for(contexts[name], ws.runner, ws.store))
            health[name] = (p.ok, p.reason)
            upstreams[name] = p.upstream
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
        rt = runtime_for(ctx, ws.runner, ws.store) if ctx else None
        placement = Placement.from_json(st.placement) if st.placement else None
        # Every live unit of the env, whatever the record says: a crashed deploy may have left two releases.
        live = rt.status(placement) if rt else None
        lock = read_lock(ws.store, name)
        rows.append((name, st, ctx, rt, placement, live, lock))
    for t in probes:
        t.join()
    out = []
    for name, st, ctx, rt, placement, live, lock in rows:
        healthy, reason = health[name]
        section = config.environments[name]
        serving = rt.routed(upstreams.get(name)) if rt and st.current_release else None
        release_id = serving[1] if serving else st.current_release
        # A deploy in progress runs two releases and moves traffic before it records: not a mismatch.
        busy = lock is not None and stale_reason(lock) is None
        mismatch = None if busy or live is None or rt is None else _mismatch(
            st, placement, serving, live.releases, rt.describe("proxy", None))
        release = ws.store.release(release_id) if release_id else None
        out.append(EnvStatus(
            name, release_id, release.commit_sha if release else None, healthy, reason,
            ctx.env.url if ctx else section.url, section.runtime,
            st.deployed_at if st.current_release else None, st.previous_release,
            st.downtime, live.units if live else 0, lock.describe() if lock else None,
            live.restarts if live and st.current_release else 0,
            list(live.notes) if live and st.current_release else [],
            st.current_release, mismatch, stale_reason(lock) if lock else None,
            {k: dict(v) for k, v in live.services.items()} if live else {},
        ))
    return out


def _mismatch(st: EnvState, recorded: Placement | None, serving: tuple[Placement, str] | None,
              releases: tuple[str, ...], proxy: str) -> str | None:
    if not st.current_release:
        return None
    where = recorded.slot if recorded else "?"
    if serving and (serving[1] != st.current_release or serving[0].slot != where):
        return (f"{proxy} routes to {serving[1]} ({serving[0].slot}) but the record says {st.current_release} "
                f"({where}): a deploy was interrupted; the next deploy or rollback repairs it first")
    if len(releases) > 1:
        return (f"{len(releases)} releases run ({', '.join(releases)}) where the record says "
                f"{st.current_release}: the next deploy stops the one that does not serve")
    return None
