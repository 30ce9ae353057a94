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
from typing import TYPE_CHECKING

from stageflow.config.durations import format_duration
from stageflow.config.loader import EnvContext
from stageflow.contexts import host_port
from stageflow.deploy import preflight as pf
from stageflow.deploy.health import wait_healthy, watch
from stageflow.deploy.lock import EnvLock
from stageflow.deploy.probe import probe_url, proxy_prober, svc_health
from stageflow.deploy.release import GitFacts, build_release, read_git, release_path, remove_release
from stageflow.errors import LockHeldError, OperationError, UsageError
from stageflow.fsutil import inside, make_dirs, narrow_mode
from stageflow.masking import masker
from stageflow.runtimes.local import LocalRuntime, other_color
from stageflow.workspace import Workspace

if TYPE_CHECKING:
    from stageflow.deploy.backup import DatabaseTarget


class StepFailed(OperationError):
    """A pipeline step failed; the message says which and why."""


@dataclass
class DeployOptions:
    """How to run one deploy."""

    dry_run: bool = False
    skip_checks: tuple[str, ...] = ()
    kind: str = "deploy"  # deploy | promote | rollback


@dataclass
class DeployReport:
    """What a deploy did."""

    env: str
    release: str | None
    outcome: str
    deployment_id: int | None
    downtime: bool = False
    plan: list[str] = field(default_factory=list)
    error: str | None = None


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
    """Where this environment's backups go."""
    d = Path(ctx.config.backups.dir)
    return (d if d.is_absolute() else ctx.root / d) / ctx.name


def take_backup(ws: Workspace, ctx: EnvContext, dep_id: int | None) -> str:
    """Back up the env's database, record it, apply retention; return a one-line detail."""
    from datetime import UTC, datetime

    from stageflow.deploy.backup import create_backup, database_exists, prune_backups

    target = backup_target(ctx)
    if target is None:
        return "skipped: database engine is none"
    runner = ws.runner
    if not database_exists(target, runner):
        return f"skipped: no database yet ({target.describe()})"
    dest = backups_dir(ctx)
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


def check_database(ws: Workspace, ctx: EnvContext) -> pf.Check:
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

    target = backup_target(ctx)
    assert target is not None  # engine is postgres here
    r = ws.runner.run(psql_command(target, "SELECT 1", database="postgres"), env=pg_env(target), timeout=20)
    if not r.ok:
        return pf.Check("database", "fail", f"{target.describe()} unreachable: {r.brief(200)}")
    return pf.Check("database", "pass", f"{target.describe()} reachable")


def run_preflight(ws: Workspace, ctx: EnvContext, rt: LocalRuntime, facts: GitFacts | None, new_port: int,
                  active_port: int | None, skip: tuple[str, ...]) -> list[pf.Check]:
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
                checks.append(pf.check_git(facts, ctx.require_clean_git))
        elif name == "runtime":
            check = pf.check_runtime(rt.nginx_binary, new_port, rt.port_in_use, active_port)
            if check.status != "fail" and rt.nginx_binary and not rt.nginx_running() and rt.port_in_use(
                    ctx.env.url_port):
                if rt.orphan_proxy_workers():
                    check = pf.Check("runtime", "warn", f"{check.reason}; this env's nginx master died and its "
                                     f"workers still hold port {ctx.env.url_port}: they are replaced at cutover")
                else:
                    check = pf.Check("runtime", "fail", f"port {ctx.env.url_port} of {ctx.env.url} is in use by "
                                     "another program; stop it or change the URL")
            if check.status != "fail" and rt.https:
                try:
                    if rt.nginx_binary is None:
                        raise OperationError(f"{ctx.env.url} is https: serving it needs nginx (apt-get install nginx)")
                    check = pf.Check("runtime", check.status, f"{check.reason}; TLS with {rt.tls_files()[0]}")
                except OperationError as exc:
                    check = pf.Check("runtime", "fail", str(exc))
            checks.append(check)
        elif name == "config":
            checks.append(pf.check_config(ctx, ws.runner))
        elif name == "disk":
            checks.append(pf.check_disk(backups_dir(ctx), ctx.config.backups.min_free_mb, _db_size(ctx)))
        elif name == "database":
            checks.append(check_database(ws, ctx))
    return checks


def _release_in_use(ws: Workspace, rid: str) -> bool:
    return any(
        rid in (s["current_release"], s["previous_release"])
        for s in ws.store.db.execute("SELECT current_release, previous_release FROM env_state")
    )


def plan_steps(ctx: EnvContext, rt: LocalRuntime, current: str | None, color: str | None, kind: str,
               release: str | None) -> list[str]:
    """Human-readable plan (what --dry-run prints)."""
    new_color = other_color(color)
    nginx = rt.nginx_binary
    port = rt.app_port(new_color)
    target = release or "a new release of HEAD"
    steps = [f"lock environment {ctx.name}"]
    if kind != "rollback":
        steps += [
            f"pre-flight: {', '.join(pf.CHECK_NAMES)}",
            f"backup the {ctx.database.engine} database into {backups_dir(ctx)}",
            f"build {target} (git archive) and its virtualenv",
        ]
        svc = ctx.config.web_service[1]
        if svc.release:
            steps.append(f"release command: {svc.release}")
    if nginx:
        steps += [
            f"start {target} as {new_color} on port {port}",
            f"health gate on http://{host_port(rt.listen_host, port)}{svc_health(ctx)}",
            f"cutover: point nginx upstream-{ctx.name}.conf at port {port}, nginx -t, reload",
            f"watch {probe_url(ctx, rt)} for {ctx.env.watch:.0f}s",
            f"stop {current or 'nothing (first deploy)'} ({color or '-'}), draining {ctx.env.drain:.0f}s",
        ]
    else:
        steps += [
            f"stop {current or 'nothing'} (no nginx: downtime)",
            f"start {target} on port {port}",
            f"health gate on http://{host_port(rt.listen_host, port)}{svc_health(ctx)}",
        ]
    steps.append("record the release as current; the old one becomes previous")
    return steps


def deploy_env(ws: Workspace, ctx: EnvContext, opts: DeployOptions, *, release: str | None = None,
               facts: GitFacts | None = None) -> DeployReport:
    """Deploy ``release`` (or a new release of HEAD) to ``ctx``'s environment."""
    for name in opts.skip_checks:
        if name not in pf.CHECK_NAMES:
            raise UsageError(f"unknown check {name!r} for --skip-check", hint=f"known: {', '.join(pf.CHECK_NAMES)}")
    masker.extend(ctx.secret_values)
    if ctx.env.runtime != "local":
        raise UsageError(
            f"environment {ctx.name} uses runtime {ctx.env.runtime!r}, which this version cannot deploy yet",
            hint=f"set environments.{ctx.name}.runtime: local",
        )
    # Facts first: a missing repository must fail before any state is written.
    if release is None and facts is None and opts.kind != "rollback":
        facts = read_git(ctx.root, ws.runner)
    store = ws.store
    rt = LocalRuntime(ctx, ws.runner)
    state = store.env_state(ctx.name)
    plan = plan_steps(ctx, rt, state.current_release, state.color, opts.kind, release)
    if opts.dry_run:
        return DeployReport(ctx.name, release, "planned", None, plan=plan)

    deadline = Deadline(ctx.env.deadline)
    lock = EnvLock(store, ctx.name, ws.actor, ws.command, warn=lambda m: ws.log.write(m, level="WARN"))
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
        state = store.env_state(ctx.name)
        dep_id = store.start_deployment(ctx.name, opts.kind, ws.actor, os.getpid(), state.current_release)
        ws.audit(ctx.name, "started", f"{opts.kind} deployment {dep_id}")
        report = _apply(ws, ctx, rt, opts, dep_id, release, facts, deadline)
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


def _answers(ctx: EnvContext, rt: LocalRuntime, color: str) -> bool:
    """The web process of ``color`` passes one health probe on its own port."""
    from stageflow.deploy.health import http_probe

    health = ctx.config.web_service[1].health
    url = f"http://{rt.listen_host}:{rt.app_port(color)}{svc_health(ctx)}"
    return http_probe(url, health.expect if health else 200, 2.0).ok


def reconcile(ws: Workspace, ctx: EnvContext, rt: LocalRuntime, j: Journal, deadline: Deadline
              ) -> tuple[str | None, str | None]:
    """After a crash: make routing and the record agree, *then* sweep. Returns (color, release) serving.

    Never stops the process the proxy routes to. A deploy killed after its cutover left nginx on a
    release the record does not name: if that release had not finished its watch and the recorded
    one still answers, nginx goes back to the recorded one and drains first; otherwise (it passed its
    watch, or the recorded one is gone, or nothing is recorded) what serves is adopted and recorded.
    A release command the killed deploy left running is awaited before anything else.
    """
    store = ws.store
    settled = rt.settle_release_command(wait=max(10.0, deadline.remaining / 2))
    if settled:
        j.note("recover", "warn", settled)
        ws.audit(ctx.name, "recovered", settled)
    state = store.env_state(ctx.name)
    old_color, old_release = state.color, state.current_release
    routed = rt.serving()
    if routed is not None and (old_release is None or routed[0] != old_color):
        r_color, r_release = routed
        watched = store.watched(ctx.name, r_release)
        if old_release and old_color and not watched and rt.processes(old_color) and _answers(ctx, rt, old_color):
            how = rt.point_proxy(rt.app_port(old_color))
            msg = (f"an interrupted deploy left nginx on {r_release} ({r_color}) before its watch ended: "
                   f"pointed nginx back at the recorded {old_release} ({old_color}) and drained ({how}) "
                   "before stopping anything")
            j.note("repair", "warn", msg)
        else:
            why = ("no record of what serves" if not old_release else
                   f"{r_release} passed its watch before the deploy was interrupted" if watched else
                   f"the recorded {old_release} no longer answers")
            previous = old_release if old_release and old_release != r_release else state.previous_release
            store.set_env_state(ctx.name, r_release, previous, r_color, rt.app_port(r_color), False)
            old_color, old_release = routed
            msg = f"{why}: adopted {r_release} ({r_color}), which nginx routes to"
            j.note("adopt", "warn", msg)
        ws.audit(ctx.name, "recovered", msg)
    elif (routed is None and old_color and state.port and rt.nginx_binary and rt.nginx_running()
          and rt.proxied_port() != state.port and rt.processes(old_color)):
        # nginx routes to a port where nothing lives (the new release died too): back to the record.
        rt.point_proxy(state.port)
        msg = f"nginx pointed at a dead port; pointed it at {old_release} ({old_color}) again"
        j.note("repair", "warn", msg)
        ws.audit(ctx.name, "recovered", msg)
    # Only now, with nginx on a release we keep: processes no pid file of it vouches for are orphans.
    keep = {old_color: old_release} if old_color and old_release else {}
    killed = rt.sweep_orphans(keep)
    if killed:
        msg = f"stopped {len(killed)} orphan process(es) of an interrupted deploy: {killed}"
        j.note("sweep", "warn", msg)
        ws.audit(ctx.name, "swept", msg)
    return old_color, old_release


def _apply(ws: Workspace, ctx: EnvContext, rt: LocalRuntime, opts: DeployOptions, dep_id: int,
           release: str | None, facts: GitFacts | None, deadline: Deadline) -> DeployReport:
    store = ws.store
    j = Journal(ws, ctx.name, dep_id)
    old_color, old_release = reconcile(ws, ctx, rt, j, deadline)
    state = store.env_state(ctx.name)  # reconciling may have recorded what serves
    store.set_deployment_previous(dep_id, state.current_release)
    if release is None and opts.kind == "rollback":
        release = store.rollback_target(ctx.name, state.current_release)
        if release is None:
            raise StepFailed(f"{ctx.name} has no earlier release to roll back to")
    new_color = other_color(old_color)
    new_port = rt.app_port(new_color)
    nginx = rt.nginx_binary
    old_alive = bool(old_color and rt.processes(old_color))
    built_here = False

    with j.step("preflight") as s:
        checks = run_preflight(ws, ctx, rt, facts if release is None else None, new_port,
                               state.port if old_alive else None, opts.skip_checks)
        for c in checks:
            ws.log.write(f"    {c.name:<9} {c.status:<7} {c.reason}", level="WARN" if c.status == "fail" else "INFO")
            if c.status == "skipped" and c.name in opts.skip_checks:
                ws.audit(ctx.name, "skip-check", f"pre-flight check {c.name} skipped by --skip-check")
        s.detail = pf.summarize(checks)
        failed = [c for c in checks if c.status == "fail"]
        if failed:
            raise StepFailed(f"pre-flight failed: {failed[0].name}: {failed[0].reason}")
        if any(c.status == "warn" for c in checks):
            s.outcome = "warn"

    if opts.kind != "rollback":
        deadline.check("backup")
        with j.step("backup") as s:
            s.detail = take_backup(ws, ctx, dep_id)
            if s.detail.startswith("skipped"):
                s.outcome = "skipped"

    deadline.check("release")
    with j.step("release") as s:
        if release is None:
            assert facts is not None
            release = build_release(ctx.root, ctx.state_dir, facts, store, ws.runner,
                                    ctx.config.releases.requirements, include_dirty=not ctx.require_clean_git)
            built_here = True
            s.detail = f"built {release} from {facts.head[:7]}"
        else:
            s.detail = f"reusing {release}"
        rdir = release_path(store, release)
        venv = rt.ensure_venv(rdir, ctx.config.releases.requirements)
        s.detail += f"; venv {venv.name if venv else 'none (no requirements file)'}"
    store.set_deployment_release(dep_id, release)

    def discard_new() -> None:
        assert release is not None
        if built_here and not _release_in_use(ws, release):
            remove_release(store, release)

    if opts.kind != "rollback":
        deadline.check("the release command")
        with j.step("migrate") as s:
            db = ctx.database
            if db.engine == "sqlite":
                sqlite_path = Path(db.path) if Path(db.path).is_absolute() else ctx.root / db.path
                make_dirs(sqlite_path.parent, root=ctx.root if inside(ctx.root, sqlite_path) else None)
            try:
                cmd = rt.run_release_command(rdir, release, venv, timeout=max(10.0, deadline.remaining))
            except BaseException:  # any failure, bad input included, leaves no built release behind
                discard_new()
                raise
            s.detail = cmd or "no release command"
            if cmd is None:
                s.outcome = "skipped"
            if db.engine == "sqlite":
                # The app made it under its umask; it holds the app's data: 0600, like its -wal/-shm.
                for suffix in ("", "-wal", "-shm", "-journal"):
                    p = sqlite_path.with_name(sqlite_path.name + suffix)
                    narrow_mode(p, 0o600, root=ctx.root if inside(ctx.root, p) else None)

    downtime = False
    if nginx is None and old_alive:
        assert old_color is not None
        with j.step("stop-old") as s:
            rt.stop(old_color, ctx.env.drain)
            downtime = True
            s.detail = f"stopped {old_release} first (no nginx: downtime)"
            s.outcome = "warn"

    def restore_old_without_proxy() -> None:
        if nginx is None and old_alive and old_release and old_color:
            rt.start(release_path(store, old_release), old_release, old_color,
                     rt.ensure_venv(release_path(store, old_release), ctx.config.releases.requirements))

    health = ctx.config.web_service[1].health
    assert health is not None
    try:
        deadline.check("start")
        with j.step("start") as s:
            procs = rt.start(rdir, release, new_color, venv)
            s.detail = f"{len(procs)} process(es) as {new_color} on port {new_port}: " + ", ".join(
                f"{p.service}[{p.pid}]" for p in procs)
        with j.step("health") as s:
            gate = wait_healthy(
                f"http://{host_port(rt.listen_host, new_port)}{health.path}", expect=health.expect,
                timeout=health.timeout,
                interval=health.interval, deadline=min(health.deadline, max(1.0, deadline.remaining)),
                fail_fast=lambda: rt.exited(new_color),
            )
            s.detail = f"{gate.reason} ({gate.attempts} attempt(s))"
            if not gate.ok:
                raise StepFailed(f"health gate failed for {release}: {gate.reason}")
    except BaseException as exc:
        rt.stop(new_color, 2.0)
        restore_old_without_proxy()
        j.note("rollback", "ok", f"discarded {release}; " + (
            f"{old_release} keeps serving" if old_release else "nothing was serving before"))
        discard_new()
        store.finish_deployment(dep_id, "failed", str(exc), downtime)
        raise

    cut_over = False
    try:
        if nginx is not None:
            with j.step("cutover") as s:
                how = rt.point_proxy(new_port)
                cut_over = True
                s.detail = f"nginx upstream-{ctx.name}.conf → port {new_port}, {how}"
            with j.step("watch") as s:
                w = watch(probe_url(ctx, rt), seconds=ctx.env.watch, expect=health.expect,
                          timeout=health.timeout, probe=proxy_prober(rt))
                s.detail = w.reason
                if not w.ok:
                    raise StepFailed(f"{release} {w.reason}")
    except BaseException as exc:
        if cut_over and old_alive:
            rt.point_proxy(state.port or rt.app_port(old_color or "blue"))
            j.note("rollback", "ok", f"traffic back on {old_release} ({old_color}); {release} stopped")
        else:
            j.note("rollback", "ok", f"{release} stopped; " + (
                f"{old_release} keeps serving" if old_alive else "nothing was serving before"))
        rt.stop(new_color, 2.0)
        if not cut_over:  # refused before traffic moved (bad input at the cutover): nothing to keep
            discard_new()
        store.finish_deployment(dep_id, "failed", str(exc), downtime)
        raise

    if nginx is not None and old_alive:
        assert old_color is not None
        with j.step("stop-old") as s:
            n = rt.stop(old_color, ctx.env.drain)
            s.detail = f"drained and stopped {n} process(es) of {old_release} ({old_color})"
    previous = old_release if old_release != release else state.previous_release
    store.set_env_state(ctx.name, release, previous, new_color, new_port, downtime)
    store.finish_deployment(dep_id, "succeeded", None, downtime)
    note = " (with downtime: no nginx)" if downtime else ""
    ws.log.write(f"[{ctx.name}] deployed {release} → {ctx.env.url}{note}")
    return DeployReport(ctx.name, release, "succeeded", dep_id, downtime)
