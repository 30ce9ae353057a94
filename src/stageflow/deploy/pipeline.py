"""The deploy pipeline: read facts, plan, apply — every step journaled and timed.

lock → pre-flight → backup → release → release command → start new → health gate → cutover →
watch → stop old → record. Failure before cutover discards the new release and the old one keeps
serving; failure after cutover rolls back to the previous release. The database is never restored
automatically.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from stageflow.config.durations import format_duration
from stageflow.config.loader import EnvContext
from stageflow.deploy import preflight as pf
from stageflow.deploy.health import wait_healthy, watch
from stageflow.deploy.lock import EnvLock
from stageflow.deploy.release import (
    GitFacts,
    build_release,
    prune_releases,
    read_git,
    release_path,
    remove_release,
    rollback_target,
)
from stageflow.errors import LockHeldError, OperationError, UsageError
from stageflow.fsutil import inside, make_dirs, narrow_mode
from stageflow.masking import masker
from stageflow.runtimes import runtime_for
from stageflow.runtimes.base import Placement, Runtime
from stageflow.workspace import Workspace

if TYPE_CHECKING:
    from stageflow.deploy.backup import DatabaseTarget
    from stageflow.runner import Runner


class StepFailed(OperationError):
    """A pipeline step failed; the message says which and why."""


@dataclass
class DeployOptions:
    """How to run one deploy."""

    dry_run: bool = False
    skip_checks: tuple[str, ...] = ()
    kind: str = "deploy"  # deploy | promote | rollback | restart (the serving release again, rolling)


@dataclass
class DeployReport:
    """What a deploy did."""

    env: str
    release: str | None
    outcome: str
    deployment_id: int | None
    downtime: bool = False
    plan: list[Step] = field(default_factory=list)
    error: str | None = None


Phase = Literal["prepare", "start", "traffic", "finish"]


@dataclass(frozen=True)
class Step:
    """One step of a deploy plan: its journal name, what it does, and what a failure of it undoes.

    ``phase`` decides the recovery: ``prepare`` (nothing runs yet: discard the new release),
    ``start`` (the new release runs beside the old: stop it), ``traffic`` (traffic moved: route it
    back), ``finish`` (the new release serves: nothing to undo).
    """

    name: str
    detail: str
    phase: Phase

    def __str__(self) -> str:
        return f"{self.name:<9} {self.detail}"


@dataclass
class StepHandle:
    """Lets a running step set its outcome detail."""

    detail: str = ""
    outcome: str = "ok"


class Journal:
    """Writes each step to the state store and the workflow log, with timings."""

    def __init__(self, ws: Workspace, env: str, dep_id: int) -> None:
        self.ws, self.env, self.dep_id = ws, env, dep_id

    @contextmanager
    def step(self, name: str) -> Iterator[StepHandle]:
        """Journal one step; an exception marks it failed and propagates."""
        sid = self.ws.store.start_step(self.dep_id, name)
        self.ws.log.write(f"[{self.env}] {name} …", echo=False)
        handle = StepHandle()
        start = time.monotonic()
        try:
            yield handle
        except BaseException as exc:
            took = time.monotonic() - start
            why = str(exc) or type(exc).__name__
            # The step's own detail says how far it got; the exception says what went wrong.
            detail = f"{handle.detail}; failed: {why}" if handle.detail and why not in handle.detail else (
                handle.detail or why)
            if isinstance(exc, KeyboardInterrupt):
                detail = "interrupted"
            self.ws.store.finish_step(sid, "failed", detail, took)
            self.ws.log.write(f"[{self.env}] ✗ {name:<10} {format_duration(took):>7}  {detail}", level="ERROR")
            raise
        took = time.monotonic() - start
        self.ws.store.finish_step(sid, handle.outcome, handle.detail, took)
        mark = {"ok": "✓", "warn": "!", "skipped": "-"}.get(handle.outcome, "·")
        self.ws.log.write(f"[{self.env}] {mark} {name:<10} {format_duration(took):>7}  {handle.detail}")

    def note(self, name: str, outcome: str, detail: str) -> None:
        """Record an instantaneous step (e.g. a decision)."""
        sid = self.ws.store.start_step(self.dep_id, name)
        self.ws.store.finish_step(sid, outcome, detail, 0.0)
        self.ws.log.write(f"[{self.env}] {'↺' if name == 'rollback' else '·'} {name:<10} {detail}")


class Deadline:
    """The global deadline of one deploy."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock, self.start = seconds, clock, clock()

    @property
    def remaining(self) -> float:
        """Seconds left."""
        return self.seconds - (self.clock() - self.start)

    def check(self, before: str) -> None:
        """Raise when the deadline has passed."""
        if self.remaining <= 0:
            raise StepFailed(f"global deadline of {self.seconds:.0f}s exceeded before {before}")


def backup_target(ctx: EnvContext) -> DatabaseTarget | None:
    """The backup module's DatabaseTarget for this environment (None for ``engine: none``)."""
    from stageflow.deploy.backup import DatabaseTarget

    db = ctx.database
    if db.engine == "sqlite":
        p = Path(db.path)
        return DatabaseTarget(engine="sqlite", path=p if p.is_absolute() else ctx.root / p)
    if db.engine == "postgres":
        return DatabaseTarget(
            engine="postgres", host=db.host, port=int(db.port), user=db.user, password=db.password, name=db.name
        )
    return None


def backups_dir(ctx: EnvContext) -> Path:
    """Where this environment's backups go (the path only: see :func:`open_backups_dir`)."""
    d = Path(ctx.config.backups.dir)
    return (d if d.is_absolute() else ctx.root / d) / ctx.name


def open_backups_dir(ctx: EnvContext) -> Path:
    """:func:`backups_dir`, made (0700) when missing; inside the app no part of it may be a symlink,
    so a backup can never be written, listed or pruned through one that leads out of the app."""
    from stageflow.fsutil import inside, make_dirs

    path = backups_dir(ctx)
    return make_dirs(path, root=ctx.root if inside(ctx.root, path) else None)


def database_access(ws: Workspace, ctx: EnvContext, rt: Runtime | None = None
                    ) -> tuple[DatabaseTarget, Runner] | Literal["none"] | None:
    """The env's database as its runtime reaches it: (target, runner); None when it does not run yet;
    ``"none"`` for ``engine: none``."""
    target = backup_target(ctx)
    if target is None:
        return "none"
    return (rt or runtime_for(ctx, ws.runner, ws.store)).database(target)


def take_backup(ws: Workspace, ctx: EnvContext, dep_id: int | None, rt: Runtime | None = None) -> str:
    """Back up the env's database, record it, apply retention; return a one-line detail."""
    from datetime import UTC, datetime

    from stageflow.deploy.backup import create_backup, database_exists, prune_backups

    access = database_access(ws, ctx, rt)
    if access == "none":
        return "skipped: database engine is none"
    if access is None:
        return "skipped: the database does not run yet (the deploy starts it)"
    target, runner = access
    if not database_exists(target, runner):
        return f"skipped: no database yet ({target.describe()})"
    dest = open_backups_dir(ctx)
    result = create_backup(
        target, dest, env=ctx.name, runner=runner, fmt=ctx.config.backups.format, now=lambda: datetime.now(UTC)
    )
    if result is None:
        return f"skipped: no database yet ({target.describe()})"
    ws.store.add_backup(ctx.name, result.path, result.checksum, result.size, result.format, result.engine, dep_id)
    for removed in prune_backups(dest, keep=ctx.config.backups.keep, protect=[result.path]):
        ws.store.forget_backup(removed)
    return f"{result.path.name} ({result.size} bytes, sha256 {result.checksum[:12]})"


def _db_size(ctx: EnvContext) -> int:
    db = ctx.database
    if db.engine == "sqlite":
        p = Path(db.path)
        p = p if p.is_absolute() else ctx.root / p
        return p.stat().st_size if p.exists() else 0
    return 0


def check_database(ws: Workspace, ctx: EnvContext, rt: Runtime | None = None) -> pf.Check:
    """The database is reachable (PostgreSQL: a real query; SQLite: its directory is usable)."""
    db = ctx.database
    if db.engine == "none":
        return pf.Check("database", "pass", "no database configured")
    if db.engine == "sqlite":
        p = Path(db.path)
        p = p if p.is_absolute() else ctx.root / p
        parent = p.parent
        while not parent.exists():
            parent = parent.parent
        if not os.access(parent, os.W_OK):
            return pf.Check("database", "fail", f"{parent} is not writable for the SQLite database")
        return pf.Check("database", "pass", f"SQLite at {p}" + ("" if p.exists() else " (created by the release)"))
    from stageflow.commands.postgres import pg_env, psql_command

    access = database_access(ws, ctx, rt)
    if access is None:
        return pf.Check("database", "pass", "PostgreSQL does not run yet: the deploy starts it")
    assert access != "none"  # engine is postgres here
    target, runner = access
    # The database itself, not the server: migrations need it to exist and to let the app's role in.
    r = runner.run(psql_command(target, "SELECT 1", database=target.name), env=pg_env(target), timeout=20)
    if not r.ok:
        if f'database "{target.name}" does not exist' in f"{r.stderr} {r.stdout}":
            return pf.Check("database", "fail", (
                f"database {target.name} does not exist on {target.host}:{target.port}; create it (as a "
                f"superuser, or a role with CREATEDB): createdb -h {target.host} -p {target.port} "
                f"-O {target.user} {target.name}"))
        return pf.Check("database", "fail", f"{target.describe()} unreachable: {r.brief(200)}")
    return pf.Check("database", "pass", f"{target.describe()} reachable")


def run_preflight(ws: Workspace, ctx: EnvContext, rt: Runtime, facts: GitFacts | None, new: Placement,
                  active: Placement | None, skip: tuple[str, ...]) -> list[pf.Check]:
    """All checks, in order; skipped ones are recorded as such."""
    checks: list[pf.Check] = []
    for name in pf.CHECK_NAMES:
        if name in skip or name in ctx.env.skip_checks:
            checks.append(pf.Check(name, "skipped", "skipped by --skip-check" if name in skip else "skipped by config"))
            continue
        if name == "git":
            if facts is None:
                checks.append(pf.Check("git", "pass", "deploying an existing release"))
            else:
                tracked = pf.check_tracked(pf.tracked_state(ctx.root, ctx.config, ws.runner))
                checks.append(tracked or pf.check_git(facts, ctx.require_clean_git))
        elif name == "runtime":
            checks.append(rt.preflight(new, active))
        elif name == "config":
            checks.append(pf.check_config(ctx, ws.runner))
        elif name == "disk":
            checks.append(pf.check_disk(backups_dir(ctx), ctx.config.backups.min_free_mb, _db_size(ctx)))
        elif name == "database":
            checks.append(check_database(ws, ctx, rt))
    return checks


def placement_of(raw: dict[str, object] | None) -> Placement | None:
    """The stored placement record as the runtime's :class:`Placement` (None when absent or damaged)."""
    return Placement.from_json(raw) if raw else None


def plan(ctx: EnvContext, rt: Runtime, current: str | None, placement: Placement | None, kind: str,
         release: str | None) -> list[Step]:
    """The steps of one deploy, in order: what ``--dry-run`` prints and what :func:`apply` runs."""
    new = rt.next_placement(placement)
    target = release or ("the release before the current one" if kind == "rollback" else "a new release of HEAD")
    steps: list[Step] = []
    if kind not in ("rollback", "restart"):
        steps += [
            Step("preflight", ", ".join(pf.CHECK_NAMES), "prepare"),
            Step("backup", f"the {ctx.database.engine} database into {backups_dir(ctx)}", "prepare"),
            Step("release", f"build {target} (git archive) {rt.describe('prepare', new)}", "prepare"),
        ]
        svc = ctx.config.web_service[1]
        steps.append(Step("migrate", f"release command: {svc.release}" if svc.release else "no release command",
                          "prepare"))
    else:
        steps += [
            Step("preflight", ", ".join(pf.CHECK_NAMES), "prepare"),
            Step("release", f"reuse {target} {rt.describe('prepare', new)}", "prepare"),
        ]
    where = rt.describe("stop", placement).strip()
    old = (f"{current} {where}" if where else current) if current else "nothing (first deploy)"
    if rt.zero_downtime:
        url, _ = rt.public_probe()
        steps += [
            Step("start", f"{target} {rt.describe('start', new)}", "start"),
            Step("health", f"gate on {rt.probe_url(new)}", "start"),
            Step("cutover", rt.describe("cutover", new), "traffic"),
            Step("watch", f"{url} for {ctx.env.watch:.0f}s", "traffic"),
            Step("stop-old", f"{old}, draining {ctx.env.drain:.0f}s", "finish"),
        ]
    else:
        steps += [
            Step("stop-old", f"{old} first ({rt.describe('no-proxy', None)})", "start"),
            Step("start", f"{target} {rt.describe('start', new)}", "start"),
            Step("health", f"gate on {rt.probe_url(new)}", "start"),
        ]
    steps.append(Step("record", "the release becomes current; the old one becomes previous", "finish"))
    return steps


def deploy_env(ws: Workspace, ctx: EnvContext, opts: DeployOptions, *, release: str | None = None,
               facts: GitFacts | None = None, rt: Runtime | None = None) -> DeployReport:
    """Deploy ``release`` (or a new release of HEAD) to ``ctx``'s environment.

    ``rt`` replaces the environment's runtime (tests pass an in-memory one).
    """
    for name in opts.skip_checks:
        if name not in pf.CHECK_NAMES:
            raise UsageError(f"unknown check {name!r} for --skip-check", hint=f"known: {', '.join(pf.CHECK_NAMES)}")
    masker.extend(ctx.secret_values)
    # Facts first: a missing repository must fail before any state is written.
    if release is None and facts is None and opts.kind != "rollback":
        facts = read_git(ctx.root, ws.runner)
    store = ws.store
    rt = rt or runtime_for(ctx, ws.runner, store)
    state = store.env_state(ctx.name)
    steps = plan(ctx, rt, state.current_release, placement_of(state.placement), opts.kind, release)
    if opts.dry_run:
        return DeployReport(ctx.name, release, "planned", None, plan=steps)

    deadline = Deadline(ctx.env.deadline)
    lock = EnvLock(store, ctx.name, ws.actor, ws.command, warn=lambda m: ws.log.write(m, level="WARN"),
                   host_lock=rt.host_lock())
    try:
        lock.acquire()
    except LockHeldError as exc:
        ws.audit(ctx.name, "refused", str(exc))
        raise
    dep_id = 0
    try:
        if lock.took_over:
            n = store.abandon_running(ctx.name, f"deploy process {lock.took_over.pid} died")
            ws.log.write(f"[{ctx.name}] marked {n} interrupted deployment(s) as crashed", level="WARN")
            ws.audit(ctx.name, "took-over", f"stale lock of {lock.took_over.describe()}: {lock.took_over_reason}; "
                                            f"{n} interrupted deployment(s) marked crashed")
        if lock.took_over_host:
            ws.audit(ctx.name, "took-over", f"stale lock on the target host of {lock.took_over_host.describe()}")
        state = store.env_state(ctx.name)
        dep_id = store.start_deployment(ctx.name, opts.kind, ws.actor, os.getpid(), state.current_release)
        ws.audit(ctx.name, "started", f"{opts.kind} deployment {dep_id}")
        report = _Apply(ws, ctx, rt, opts, dep_id, release, facts, deadline).run()
        ws.audit(ctx.name, report.outcome, f"{opts.kind} deployment {dep_id}: release {report.release}")
        return report
    except BaseException as exc:
        if dep_id:
            msg = str(exc) if not isinstance(exc, KeyboardInterrupt) else "interrupted"
            store.finish_deployment(dep_id, "failed", msg)
            ws.audit(ctx.name, "failed", f"{opts.kind} deployment {dep_id}: {msg}")
        raise
    finally:
        lock.release()
        if dep_id:
            # deployed / promoted / rolled back / failed, to the notifiers (queued; never fails the deploy)
            from stageflow.alerts.deploys import notify_deploy

            notify_deploy(ws, ctx, dep_id)


class _Apply:
    """One deploy being applied: recovery first, then the plan's steps, each journaled."""

    def __init__(self, ws: Workspace, ctx: EnvContext, rt: Runtime, opts: DeployOptions, dep_id: int,
                 release: str | None, facts: GitFacts | None, deadline: Deadline) -> None:
        self.ws, self.ctx, self.rt, self.opts, self.dep_id = ws, ctx, rt, opts, dep_id
        self.release, self.facts, self.deadline = release, facts, deadline
        self.store = ws.store
        self.j = Journal(ws, ctx.name, dep_id)
        self.state = self.store.env_state(ctx.name)
        self.old = placement_of(self.state.placement)
        self.old_release = self.state.current_release
        self.built_here = False
        self.downtime = False
        self.cut_over = False
        self.rdir: Path | None = None

    # recovery of an interrupted deploy, before anything new starts ------------------------------
    def recover(self) -> None:
        """After a crash: make routing and the record agree, *then* sweep.

        Never stops what the proxy routes to. A deploy killed after its cutover left the proxy on a
        release the record does not name: if that release had not finished its watch and the
        recorded one still answers, the proxy goes back to the recorded one first; otherwise (it
        passed its watch, or the recorded one is gone, or nothing is recorded) what serves is adopted
        and recorded. A release command the killed deploy left running is awaited before anything else.
        """
        ws, ctx, rt, j, store = self.ws, self.ctx, self.rt, self.j, self.store
        settled = rt.settle_release_command(wait=max(10.0, self.deadline.remaining / 2))
        if settled:
            j.note("recover", "warn", settled)
            ws.audit(ctx.name, "recovered", settled)
        state = store.env_state(ctx.name)
        old, old_release = placement_of(state.placement), state.current_release
        routed = rt.serving()
        proxy = rt.describe("proxy", None)
        if routed is not None and (old_release is None or old is None or routed[0].slot != old.slot):
            r_place, r_release = routed
            watched = store.watched(ctx.name, r_release)
            if old_release and old and not watched and rt.alive(old) and self._answers(old):
                how = rt.cut_over(old)
                msg = (f"an interrupted deploy left {proxy} on {r_release} ({r_place.slot}) before its watch ended: "
                       f"pointed {proxy} back at the recorded {old_release} ({old.slot}) and drained ({how}) "
                       "before stopping anything")
                j.note("repair", "warn", msg)
            else:
                why = ("no record of what serves" if not old_release else
                       f"{r_release} passed its watch before the deploy was interrupted" if watched else
                       f"the recorded {old_release} no longer answers")
                previous = old_release if old_release and old_release != r_release else state.previous_release
                store.set_env_state(ctx.name, r_release, previous, r_place.as_json(), False)
                old, old_release = routed
                msg = f"{why}: adopted {r_release} ({r_place.slot}), which {proxy} routes to"
                j.note("adopt", "warn", msg)
            ws.audit(ctx.name, "recovered", msg)
        elif routed is None and old is not None and rt.zero_downtime and rt.alive(old):
            # The proxy routes where nothing lives (the new release died too): back to the record.
            repaired = rt.repair_routing(old)
            if repaired:
                msg = f"{proxy} pointed at a dead upstream; {repaired} ({old_release})"
                j.note("repair", "warn", msg)
                ws.audit(ctx.name, "recovered", msg)
        # Only now, with the proxy on a release we keep: what no record of it vouches for is an orphan.
        killed = rt.sweep_orphans(old if old and old_release else None)
        if killed:
            msg = f"stopped {len(killed)} orphan(s) of an interrupted deploy: {', '.join(killed)}"
            j.note("sweep", "warn", msg)
            ws.audit(ctx.name, "swept", msg)
        self.state = store.env_state(ctx.name)  # recovering may have recorded what serves
        self.old, self.old_release = old, old_release
        store.set_deployment_previous(self.dep_id, self.state.current_release)
        if self.release is None and self.opts.kind == "rollback":
            self.release = rollback_target(store, ctx.name, self.state.current_release)
            if self.release is None:
                raise StepFailed(f"{ctx.name} has no earlier release to roll back to")
        self.old_alive = bool(old and rt.alive(old))
        self.new = rt.next_placement(old)

    def _answers(self, placement: Placement) -> bool:
        """The web service of ``placement`` passes one health probe on its own address."""
        health = self.ctx.config.web_service[1].health
        _, prober = self.rt.public_probe()
        return prober(self.rt.probe_url(placement), health.expect if health else 200, 2.0).ok

    def run(self) -> DeployReport:
        """Recover, then apply every step of the plan; undo by the failing step's phase."""
        self.recover()
        steps = plan(self.ctx, self.rt, self.old_release, self.old, self.opts.kind, self.release)
        handlers: dict[str, Callable[[StepHandle], None]] = {
            "preflight": self.preflight, "backup": self.backup, "release": self.prepare_release,
            "migrate": self.migrate, "start": self.start, "health": self.health, "cutover": self.cutover,
            "watch": self.watch, "stop-old": self.stop_old, "record": self.record,
        }
        for step in steps:
            if step.phase in ("prepare", "start"):
                # Once traffic moved, finishing (drain, record) beats stopping half-way.
                self.deadline.check(step.name)
            try:
                with self.j.step(step.name) as handle:
                    handlers[step.name](handle)
            except BaseException as exc:
                self.undo(step, exc)
                raise
        note = " (with downtime: no zero-downtime cutover)" if self.downtime else ""
        self.ws.log.write(f"[{self.ctx.name}] deployed {self.release} → {self.ctx.env.url}{note}")
        return DeployReport(self.ctx.name, self.release, "succeeded", self.dep_id, self.downtime)

    # undo ------------------------------------------------------------------------------------------
    def discard_new(self) -> None:
        if self.release and self.built_here and not self.store.release_in_use(self.release):
            remove_release(self.store, self.release)

    def undo(self, step: Step, exc: BaseException) -> None:
        rt, j = self.rt, self.j
        if step.phase == "prepare":
            if step.name == "migrate":
                self.discard_new()
            return
        if step.phase == "start":
            rt.stop(self.new, 2.0)
            if not rt.zero_downtime and self.old_alive and self.old_release and self.old:
                # Stop-then-start: bring the old release back rather than leave nothing serving.
                old_dir = release_path(self.store, self.old_release)
                rt.prepare(self.old_release, old_dir)
                rt.start(self.old_release, old_dir, self.old)
            j.note("rollback", "ok", f"discarded {self.release}; " + (
                f"{self.old_release} keeps serving" if self.old_release else "nothing was serving before"))
            self.discard_new()
        elif step.phase == "traffic":
            if self.cut_over and self.old_alive and self.old:
                rt.cut_over(self.old)
                j.note("rollback", "ok", f"traffic back on {self.old_release} ({self.old.slot}); "
                                         f"{self.release} stopped")
            else:
                j.note("rollback", "ok", f"{self.release} stopped; " + (
                    f"{self.old_release} keeps serving" if self.old_alive else "nothing was serving before"))
            rt.stop(self.new, 2.0)
            if not self.cut_over:  # refused before traffic moved (bad input at the cutover): nothing to keep
                self.discard_new()
        else:
            return
        self.store.finish_deployment(self.dep_id, "failed", str(exc), self.downtime)

    # the steps -------------------------------------------------------------------------------------
    def preflight(self, s: StepHandle) -> None:
        checks = run_preflight(self.ws, self.ctx, self.rt, self.facts if self.release is None else None,
                               self.new, self.old if self.old_alive else None, self.opts.skip_checks)
        for c in checks:
            self.ws.log.write(f"    {c.name:<9} {c.status:<7} {c.reason}",
                              level="WARN" if c.status == "fail" else "INFO")
            if c.status == "skipped" and c.name in self.opts.skip_checks:
                self.ws.audit(self.ctx.name, "skip-check", f"pre-flight check {c.name} skipped by --skip-check")
        s.detail = pf.summarize(checks)
        failed = [c for c in checks if c.status == "fail"]
        if failed:
            raise StepFailed(f"pre-flight failed: {failed[0].name}: {failed[0].reason}")
        if any(c.status == "warn" for c in checks):
            s.outcome = "warn"

    def backup(self, s: StepHandle) -> None:
        s.detail = take_backup(self.ws, self.ctx, self.dep_id, self.rt)
        if s.detail.startswith("skipped"):
            s.outcome = "skipped"

    def prepare_release(self, s: StepHandle) -> None:
        if self.release is None:
            assert self.facts is not None
            self.release = build_release(
                self.ctx.root, self.ctx.state_dir, self.facts, self.store, self.ws.runner,
                self.ctx.config.releases.requirements, include_dirty=not self.ctx.require_clean_git)
            self.built_here = True
            s.detail = f"built {self.release} from {self.facts.head[:7]}"
        else:
            s.detail = f"reusing {self.release}"
        self.rdir = release_path(self.store, self.release)
        self.store.set_deployment_release(self.dep_id, self.release)
        s.detail += f"; {self.rt.prepare(self.release, self.rdir)}"

    def migrate(self, s: StepHandle) -> None:
        assert self.release is not None and self.rdir is not None
        db = self.ctx.database
        if db.engine == "sqlite":
            sqlite_path = Path(db.path) if Path(db.path).is_absolute() else self.ctx.root / db.path
            make_dirs(sqlite_path.parent, root=self.ctx.root if inside(self.ctx.root, sqlite_path) else None)
        cmd = self.rt.release_command(self.release, self.rdir, timeout=max(10.0, self.deadline.remaining))
        s.detail = cmd or "no release command"
        if cmd is None:
            s.outcome = "skipped"
        if db.engine == "sqlite":
            # The app made it under its umask; it holds the app's data: 0600, like its -wal/-shm.
            for suffix in ("", "-wal", "-shm", "-journal"):
                p = sqlite_path.with_name(sqlite_path.name + suffix)
                narrow_mode(p, 0o600, root=self.ctx.root if inside(self.ctx.root, p) else None)

    def start(self, s: StepHandle) -> None:
        assert self.release is not None and self.rdir is not None
        s.detail = self.rt.start(self.release, self.rdir, self.new)

    def health(self, s: StepHandle) -> None:
        health = self.ctx.config.web_service[1].health
        assert health is not None
        _, prober = self.rt.public_probe()  # the runtime's prober also speaks to its units directly
        gate = wait_healthy(
            self.rt.probe_url(self.new), expect=health.expect, timeout=health.timeout, interval=health.interval,
            deadline=min(health.deadline, max(1.0, self.deadline.remaining)), probe=prober,
            fail_fast=lambda: self.rt.exited(self.new),
        )
        s.detail = f"{gate.reason} ({gate.attempts} attempt(s))"
        if not gate.ok:
            raise StepFailed(f"health gate failed for {self.release}: {gate.reason}")

    def cutover(self, s: StepHandle) -> None:
        detail = self.rt.cut_over(self.new)
        self.cut_over = True
        s.detail = detail

    def watch(self, s: StepHandle) -> None:
        health = self.ctx.config.web_service[1].health
        assert health is not None
        url, prober = self.rt.public_probe()
        w = watch(url, seconds=self.ctx.env.watch, expect=health.expect, timeout=health.timeout, probe=prober)
        s.detail = w.reason
        if not w.ok:
            raise StepFailed(f"{self.release} {w.reason}")

    def stop_old(self, s: StepHandle) -> None:
        if not self.old:
            s.detail, s.outcome = "nothing was running", "skipped"
            return
        # Stopped even when its record says it is dead: a damaged record must not leave it running.
        n = self.rt.stop(self.old, self.ctx.env.drain)
        if not self.old_alive:
            s.detail, s.outcome = (f"stopped {n} unit(s) of {self.old_release} its record no longer named", "warn") \
                if n else ("nothing was running", "skipped")
            return
        if self.rt.zero_downtime:
            s.detail = f"drained and stopped {n} unit(s) of {self.old_release} ({self.old.slot})"
        else:
            self.downtime = True
            s.detail, s.outcome = f"stopped {self.old_release} first (downtime)", "warn"

    def record(self, s: StepHandle) -> None:
        previous = self.old_release if self.old_release != self.release else self.state.previous_release
        self.store.set_env_state(self.ctx.name, self.release, previous, self.rt.settle(self.new).as_json(),
                                 self.downtime)
        self.store.finish_deployment(self.dep_id, "succeeded", None, self.downtime)
        s.detail = f"{self.release} current, {previous or 'none'} previous"
        # Retention after every successful deploy, across envs (a release two envs served goes once
        # neither keeps it), so release directories do not pile up — crashed deploys' ones included.
        keep = self.ctx.config.releases.keep
        pruned = prune_releases(self.store, self.ctx.config, list(self.ctx.config.environments), keep)
        if pruned:
            s.detail += f"; releases.keep={keep}: removed {len(pruned)} old release(s)"
            self.ws.log.write(f"[{self.ctx.name}] releases.keep={keep}: removed {', '.join(pruned)}")
