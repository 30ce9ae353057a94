"""The one protocol every runtime implements, and the records it shares with the pipeline.

The deploy pipeline (``stageflow.deploy``) drives a runtime only through :class:`Runtime`: it never
knows whether a release runs as supervised processes behind a private nginx (``local``) or as
containers behind an nginx container (``compose``). Where a release runs is the runtime's own
:class:`Placement`, stored as an opaque record with the environment's state.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from stageflow.deploy.backup import DatabaseTarget
    from stageflow.deploy.health import Prober
    from stageflow.deploy.lock import HostLock
    from stageflow.deploy.preflight import Check
    from stageflow.monitor.resources import ServiceStats
    from stageflow.runner import Runner


@dataclass(frozen=True)
class Placement:
    """Where one release of an environment runs, in the runtime's own terms.

    ``slot`` names it (local: the color ``blue``/``green``); ``data`` is whatever else the runtime
    needs to find it again (local: the port). Stored as JSON; the pipeline only passes it around.
    """

    slot: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The stored form."""
        return {"slot": self.slot, **dict(self.data)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Placement | None:
        """Back from the stored form; None when it is damaged (state on disk is not trusted)."""
        slot = raw.get("slot")
        if not isinstance(slot, str) or not slot:
            return None
        return cls(slot, {k: v for k, v in raw.items() if k != "slot"})


@dataclass(frozen=True)
class RuntimeStatus:
    """What ``status`` shows of a placement: live units (processes, containers) and their restarts."""

    #: Live units of the env (every placement: an interrupted deploy may have left two releases).
    units: int
    #: Restarts of the placement's units (by their supervisor or the engine).
    restarts: int = 0
    notes: tuple[str, ...] = ()
    #: Releases the live units run (more than one: a deploy was interrupted, or one is under way).
    releases: tuple[str, ...] = ()
    #: Per service (containers: health, image, uptime); free-form for ``status --json``.
    services: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


class Runtime(Protocol):
    """Runs one environment's services; one instance per (environment, command)."""

    name: ClassVar[str]

    @property
    def zero_downtime(self) -> bool:
        """True when a new release can start beside the old one and traffic moves at cutover."""
        ...

    # reading the world --------------------------------------------------------------------------
    def next_placement(self, current: Placement | None) -> Placement:
        """Where a new release starts, given where the current one runs."""
        ...

    def serving(self) -> tuple[Placement, str] | None:
        """(placement, release) that the proxy routes to right now, when it is live; None when unknown."""
        ...

    def routed(self, upstream: str | None) -> tuple[Placement, str] | None:
        """What the proxy routes to: as ``upstream`` (the probe's answer, when the proxy said) names, else
        as the proxy's own configuration says."""
        ...

    def alive(self, placement: Placement) -> bool:
        """True when something of ``placement`` still runs."""
        ...

    def describe(self, action: str, placement: Placement | None) -> str:
        """Runtime words for a plan line: ``prepare``, ``start``, ``probe``, ``cutover``, ``stop``."""
        ...

    def preflight(self, new: Placement, active: Placement | None) -> Check:
        """The ``runtime`` pre-flight check (the engine/proxy answers, the new placement is free)."""
        ...

    # recovering from an interrupted deploy --------------------------------------------------------
    def sweep_orphans(self, keep: Placement | None) -> list[str]:
        """Stop what this env runs that no record vouches for, except ``keep``; return what stopped."""
        ...

    def settle_release_command(self, wait: float) -> str | None:
        """Let a release command an interrupted deploy left running finish (up to ``wait`` s), then stop
        it; say what happened, or None when there was none."""
        ...

    def repair_routing(self, placement: Placement) -> str | None:
        """Point the proxy back at ``placement`` when it routes elsewhere; say what was done, or None."""
        ...

    # a deploy ---------------------------------------------------------------------------------------
    def prepare(self, release: str, release_dir: Path) -> str:
        """Make ``release`` runnable (local: its virtualenv; compose: its image); return a detail."""
        ...

    def release_command(self, release: str, release_dir: Path, timeout: float) -> str | None:
        """Run the web service's release command (migrations) once; return it, or None without one."""
        ...

    def start(self, release: str, release_dir: Path, placement: Placement) -> str:
        """Start every service of ``release`` at ``placement``; return a detail."""
        ...

    def settle(self, placement: Placement) -> Placement:
        """``placement`` as it runs now, for the record (compose: with the containers ``start`` made)."""
        ...

    def probe_url(self, placement: Placement) -> str:
        """The health URL of ``placement`` itself (before any traffic goes there)."""
        ...

    def exited(self, placement: Placement) -> str | None:
        """Why the web service of ``placement`` already died (the health gate fails fast), else None."""
        ...

    def cut_over(self, placement: Placement) -> str:
        """Move traffic to ``placement`` (validated, reloaded); return a detail."""
        ...

    def public_probe(self) -> tuple[str, Prober]:
        """The health URL users reach (through the proxy), and the prober for it and for :meth:`probe_url`."""
        ...

    def stop(self, placement: Placement, drain: float) -> int:
        """Stop ``placement`` gracefully (``drain`` seconds), then for good; return how many units stopped."""
        ...

    # operating ---------------------------------------------------------------------------------------
    def status(self, placement: Placement | None) -> RuntimeStatus:
        """Live units of the env, and what the supervisors of ``placement`` recorded."""
        ...

    def service_stats(self, window: float = 0.5) -> list[ServiceStats]:
        """CPU and memory of each live service over ``window`` seconds (the monitor's resource source)."""
        ...

    def exec_command(self, placement: Placement, release: str, release_dir: Path, service: str,
                     argv: Sequence[str]) -> tuple[list[str], dict[str, str] | None, Path | None]:
        """(argv, environment, cwd) running ``argv`` as ``service`` of the serving release does.

        An environment of None means the command needs none of its own (``docker compose exec``).
        """
        ...

    def logs_command(self, placement: Placement, service: str | None, follow: bool, since: str | None,
                     lines: int) -> list[str]:
        """The argv that prints (``follow``: streams) the logs of ``placement``."""
        ...

    def database(self, target: DatabaseTarget) -> tuple[DatabaseTarget, Runner] | None:
        """How the database tools reach ``target`` (backups, restores, pre-flight): the target as seen
        from where they run, and the runner that runs them there. None: the database does not run yet."""
        ...

    def down(self) -> int:
        """Stop everything of this env, the proxy included; return how many units stopped."""
        ...

    def host_lock(self) -> HostLock | None:
        """The env's lock record on the target host, when the target is shared (a Docker Engine two
        checkouts may deploy to); None when this machine's state is the only place (local)."""
        ...

    def prune(self, keep: Collection[str]) -> list[str]:
        """``cleanup``: remove what this env's runtime holds for releases outside ``keep`` (compose:
        release images; exited containers and dangling images of this project too). Never touches
        another project's things. Returns what it removed, one short line each."""
        ...
