"""Use cases built on the pipeline: promotion, rollback, status, cleanup, down, backups."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stageflow.config.loader import EnvContext, load_env_context, load_project, resolve_env_name
from stageflow.deploy.pipeline import (
    DeployOptions,
    DeployReport,
    backups_dir,
    deploy_env,
    open_backups_dir,
    take_backup,
)
from stageflow.deploy.preflight import check_tracked, tracked_state
from stageflow.deploy.release import build_release, prune_releases, read_git, release_path, rollback_target
from stageflow.errors import OperationError, UsageError
from stageflow.runtimes import runtime_for
from stageflow.workspace import Workspace

if TYPE_CHECKING:
    from stageflow.deploy.backup import DatabaseTarget, VerifyResult
    from stageflow.runner import Runner

Confirm = Callable[[str], bool]


def needs_approval(ctx: EnvContext) -> bool:
    """Production-grade envs (``production:``) and any with ``approval: required`` are confirmed first."""
    return ctx.env.approval == "required" or ctx.config.is_production(ctx.name)


def check_approval(ctx: EnvContext, *, yes: bool, interactive: bool, confirm: Confirm | None) -> None:
    """Ask on a terminal; from scripts proceed unless the env requires approval, which needs --yes."""
    if yes or not needs_approval(ctx):
        return
    if interactive and confirm is not None:
        if not confirm(f"Deploy to {ctx.name} ({ctx.env.url})?"):
            raise OperationError(f"deploy to {ctx.name} not confirmed", hint="nothing was changed")
        return
    if ctx.env.approval == "required":
        raise UsageError(
            f"environment {ctx.name} requires approval (approval: required)",
            hint="re-run with --yes to approve from a script",
        )


def deploy(ws: Workspace, env: str, opts: DeployOptions, *, yes: bool = False, interactive: bool = False,
           confirm: Confirm | None = None, environ: Mapping[str, str] | None = None) -> DeployReport:
    """``stageflow deploy ENV``."""
    ctx = load_env_context(ws.root, env, environ)
    if not opts.dry_run:
        _approve(ws, ctx, yes=yes, interactive=interactive, confirm=confirm)
    return deploy_env(ws, ctx, opts)


def _approve(ws: Workspace, ctx: EnvContext, *, yes: bool, interactive: bool, confirm: Confirm | None) -> None:
    """:func:`check_approval`, with a refusal recorded in the audit trail."""
    try:
        check_approval(ctx, yes=yes, interactive=interactive, confirm=confirm)
    except (OperationError, UsageError) as exc:
        ws.audit(ctx.name, "refused", str(exc))
        raise


def full(ws: Workspace, opts: DeployOptions, *, yes: bool = False, interactive: bool = False,
         confirm: Confirm | None = None, environ: Mapping[str, str] | None = None) -> list[DeployReport]:
    """Promote the same release through ``promotion``, stopping at the first failure."""
    config = load_project(ws.root)
    contexts = [load_env_context(ws.root, name, environ) for name in config.promotion_order]
    # Check everything that can refuse before anything changes: no half-applied promotion.
    facts = read_git(ws.root, ws.runner)
    strict = [c.name for c in contexts if c.require_clean_git]
    if facts.dirty and strict and "git" not in opts.skip_checks:
        ws.audit(None, "refused", f"uncommitted changes and {strict[0]} requires a clean tree")
        raise OperationError(
            f"uncommitted changes ({', '.join(facts.dirty_files[:3])}) and {strict[0]} requires a clean tree",
            hint="commit or stash them first",
        )
    if "git" not in opts.skip_checks and (tracked := check_tracked(tracked_state(ws.root, config, ws.runner))):
        ws.audit(None, "refused", tracked.reason)
        raise OperationError(f"pre-flight failed: git: {tracked.reason}")
    if not opts.dry_run:
        # Every question is asked before the first deploy starts: a "no" then changes nothing.
        for c in contexts:
            _approve(ws, c, yes=yes, interactive=interactive, confirm=confirm)
        try:
            _refuse_if_locked(ws, [c.name for c in contexts])
        except OperationError as exc:
            ws.audit(None, "refused", str(exc))
            raise
    reports: list[DeployReport] = []
    if opts.dry_run:
        for c in contexts:
            reports.append(deploy_env(ws, c, opts, release="<new release of HEAD>", facts=facts))
        return reports
    first = contexts[0]
    ws.log.write(f"promotion: {' → '.join(c.name for c in contexts)} of {facts.head[:7]} ({facts.subject[:60]})")
    rid = build_release(ws.root, first.state_dir, facts, ws.store, ws.runner, first.config.releases.requirements,
                        include_dirty=not strict)
    ws.log.write(f"built release {rid}; promoting it unchanged")
    for c in contexts:
        reports.append(deploy_env(ws, c, DeployOptions(skip_checks=opts.skip_checks, kind="promote"),
                                  release=rid, facts=facts))
    return reports


def _refuse_if_locked(ws: Workspace, names: list[str]) -> None:
    """A live deploy anywhere on the promotion path would stop `full` half-way: refuse before starting.

    Each environment is still locked for real when its turn comes; this only looks ahead.
    """
    from stageflow.deploy.lock import read_lock, stale_reason
    from stageflow.errors import LockHeldError

    for name in names:
        info = read_lock(ws.store, name)
        if info is not None and stale_reason(info) is None:
            raise LockHeldError(
                f"environment {name} is locked by {info.describe()}; nothing was promoted",
                hint="wait for it to finish, then run full again",
            )


def rollback(ws: Workspace, env: str, *, to: str | None = None, restore_db: bool = False, yes: bool = False,
             interactive: bool = False, confirm: Confirm | None = None,
             environ: Mapping[str, str] | None = None) -> DeployReport:
    """Back to the previous (or named) release that still exists; the database only with --restore-db."""
    ctx = load_env_context(ws.root, env, environ)
    state = ws.store.env_state(ctx.name)
    # Without --to: one step further back each time (a release rolled back away from is skipped).
    # Checked here to fail before the lock; the deploy picks again once it has made routing and the
    # record agree after a crash.
    target = to or rollback_target(ws.store, ctx.name, state.current_release)
    if target is None:
        msg = (f"{ctx.name} has no earlier release to roll back to"
               + (f" (already rolled back away from {', '.join(sorted(m))})"
                  if (m := ws.store.rolled_back_from(ctx.name)) else ""))
        ws.audit(ctx.name, "refused", msg)
        raise OperationError(msg, hint=f"see 'stageflow history {ctx.name}', or name one with --to")
    if target == state.current_release:
        ws.audit(ctx.name, "refused", f"{target} is already current")
        raise OperationError(f"{target} is already current in {ctx.name}")
    release_path(ws.store, target)
    backup_file = None
    if restore_db:
        backup_row = ws.store.backup_before(ctx.name, state.current_release)
        if backup_row is None:
            raise OperationError(f"no backup of {ctx.name} was taken before {state.current_release}",
                                 hint="see 'stageflow backup list " + ctx.name + "'")
        try:
            # The file of that name in the env's backups directory, never wherever the record points.
            backup_file = find_backup(ws, ctx, backup_row.path.name)
        except UsageError:
            raise OperationError(f"backup {backup_row.path.name} (taken before {state.current_release}) is not in "
                                 f"{backups_dir(ctx)} any more", hint=f"see 'stageflow backup list {ctx.name}'",
                                 ) from None
        msg = (f"restore {backup_file.name} (taken {backup_row.created_at}): every change to the "
               f"{ctx.name} database since then will be lost")
        ws.log.write(msg, level="WARN")
        if not yes and not (interactive and confirm and confirm(f"{msg}. Continue?")):
            raise UsageError("database restore not confirmed", hint="re-run with --yes to confirm")
    report = deploy_env(ws, ctx, DeployOptions(kind="rollback"), release=to)
    if backup_file is not None:
        restore_backup_file(ws, ctx, backup_file)
        ws.audit(ctx.name, "restored", f"database restored from {backup_file.name}")
    return report


def database_for(ws: Workspace, ctx: EnvContext) -> tuple[DatabaseTarget, Runner]:
    """The env's database as its runtime reaches it; OperationError when there is none or it is not running."""
    from stageflow.deploy.pipeline import database_access

    access = database_access(ws, ctx)
    if access == "none":
        raise OperationError(f"{ctx.name} has no database (database.engine: none)")
    if access is None:
        raise OperationError(f"the database of {ctx.name} is not running", hint=f"stageflow deploy {ctx.name}")
    return access


def restore_backup_file(ws: Workspace, ctx: EnvContext, path: Path) -> None:
    """Restore ``path`` into the env's database."""
    from stageflow.deploy.backup import restore_backup

    target, runner = database_for(ws, ctx)
    restore_backup(target, path, runner=runner)


def cleanup(ws: Workspace, env: str | None, keep: int | None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Keep the newest N releases and backups per env; never the current or previous. Then each env's
    runtime drops what it holds for the releases that went (:meth:`Runtime.prune`). Returns removals."""
    from stageflow.deploy.backup import prune_backups

    config = load_project(ws.root)
    names = [resolve_env_name(config, env)] if env else list(config.environments)
    keep_n = keep if keep is not None else config.releases.keep
    if keep_n < 2:
        raise UsageError("--keep must be at least 2 (current and previous)")
    removed = [f"release {rid}" for rid in prune_releases(ws.store, config, names, keep_n)]
    # What the store still knows is kept, and so is what any env serves or served last.
    kept: set[str] = {release.id for release in ws.store.releases()}
    for name in config.environments:
        st = ws.store.env_state(name)
        kept |= {r for r in (st.current_release, st.previous_release) if r}
    for name in names:
        ctx = load_env_context(ws.root, name, environ)
        for p in prune_backups(open_backups_dir(ctx), keep=keep if keep is not None else config.backups.keep):
            ws.store.forget_backup(p)
            removed.append(f"backup {p.name}")
        try:
            removed += runtime_for(ctx, ws.runner, ws.store).prune(kept)
        except OperationError as exc:
            # Housekeeping goes on for the other environments; this one's runtime is pruned next time.
            ws.log.write(f"[{name}] cleanup of the runtime skipped: {exc}", level="WARN")
    return removed


def down(ws: Workspace, env: str, environ: Mapping[str, str] | None = None) -> int:
    """Stop everything of an env, its proxy included; returns how many units (processes, containers) stopped."""
    from stageflow.deploy.lock import EnvLock
    from stageflow.state.store import StateDamaged

    ctx = load_env_context(ws.root, env, environ)
    rt = runtime_for(ctx, ws.runner, None)  # stopping needs no record: the state may be damaged
    try:
        store = ws.store
    except StateDamaged as exc:
        # Processes are found by their pid files and instance tags, containers by their labels.
        n = rt.down()
        ws.log.write(f"{exc}; stopped {n} unit(s) of {ctx.name} without recording it", level="WARN")
        return n
    with EnvLock(store, ctx.name, ws.actor, ws.command, host_lock=rt.host_lock()):
        n = rt.down()
        st = ws.store.env_state(ctx.name)
        ws.store.set_env_state(ctx.name, None, st.current_release or st.previous_release, None, False)
    ws.audit(ctx.name, "succeeded", f"stopped {n} unit(s)")
    return n


def backup_create(ws: Workspace, env: str, environ: Mapping[str, str] | None = None) -> str:
    """Take a backup now."""
    ctx = load_env_context(ws.root, env, environ)
    detail = take_backup(ws, ctx, None)
    ws.audit(ctx.name, "succeeded", f"backup: {detail}")
    return detail


def backup_list(ws: Workspace, env: str, environ: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Backups on disk, newest first."""
    from stageflow.deploy.backup import list_backups

    ctx = load_env_context(ws.root, env, environ)
    return [
        {"file": b.path.name, "path": str(b.path), "size": b.size, "checksum": b.checksum,
         "format": b.format, "created_at": b.created_at.isoformat()}
        for b in list_backups(open_backups_dir(ctx))
    ]


def find_backup(ws: Workspace, ctx: EnvContext, name: str | None) -> Path:
    """A backup by file name (or the newest)."""
    from stageflow.deploy.backup import list_backups

    found = list_backups(open_backups_dir(ctx))
    if not found:
        raise OperationError(f"no backups of {ctx.name}", hint=f"stageflow backup create {ctx.name}")
    if name is None:
        return found[0].path
    for b in found:
        if name in (b.path.name, str(b.path)):
            return b.path
    raise UsageError(f"no backup named {name!r} for {ctx.name}", hint=f"see 'stageflow backup list {ctx.name}'")


def backup_restore(ws: Workspace, env: str, name: str | None, *, yes: bool, interactive: bool,
                   confirm: Confirm | None, environ: Mapping[str, str] | None = None) -> Path:
    """Restore a backup into the env's database (asks, or needs --yes)."""
    ctx = load_env_context(ws.root, env, environ)
    path = find_backup(ws, ctx, name)
    if not yes and not (interactive and confirm and confirm(
            f"Restore {path.name} into {ctx.name}? Changes since it was taken are lost.")):
        raise UsageError("restore not confirmed", hint="re-run with --yes to confirm")
    restore_backup_file(ws, ctx, path)
    ws.audit(ctx.name, "succeeded", f"database restored from {path.name}")
    return path


def backup_verify(ws: Workspace, env: str, name: str | None,
                  environ: Mapping[str, str] | None = None) -> VerifyResult:
    """Restore a backup into a scratch database and check it."""
    import tempfile

    from stageflow.deploy.backup import verify_backup

    ctx = load_env_context(ws.root, env, environ)
    path = find_backup(ws, ctx, name)
    target, runner = database_for(ws, ctx)
    with tempfile.TemporaryDirectory(prefix="stageflow-verify-") as tmp:
        result = verify_backup(target, path, runner=runner, scratch_dir=Path(tmp))
    ws.audit(ctx.name, "succeeded" if result.ok else "failed", f"verify {path.name}: {result.detail}")
    return result



def _serving(ws: Workspace, env: str, environ: Mapping[str, str] | None) -> tuple[EnvContext, Any, Any, str]:
    """(context, runtime, placement, release) of what serves ``env``; OperationError when nothing does."""
    from stageflow.runtimes.base import Placement

    ctx = load_env_context(ws.root, env, environ)
    st = ws.store.env_state(ctx.name)
    placement = Placement.from_json(st.placement) if st.placement else None
    if not st.current_release or placement is None:
        raise OperationError(f"nothing is deployed to {ctx.name}", hint=f"stageflow deploy {ctx.name}")
    return ctx, runtime_for(ctx, ws.runner, ws.store), placement, st.current_release


def exec_command(ws: Workspace, env: str, argv: list[str], service: str | None = None,
                 environ: Mapping[str, str] | None = None) -> int:
    """``stageflow exec ENV [--service S] -- CMD…``: CMD as the serving release's service runs; its exit code."""
    if not argv:
        raise UsageError("give the command to run after --",
                         hint="e.g. stageflow exec production -- python manage.py check")
    ctx, rt, placement, release = _serving(ws, env, environ)
    name = service or ctx.config.web_service[0]
    if name not in ctx.config.services and name not in ("db", "redis", "nginx"):
        raise UsageError(f"unknown service {name!r}", hint=f"known: {', '.join(ctx.config.services)}")
    full, child_env, cwd = rt.exec_command(placement, release, release_path(ws.store, release), name, argv)
    ws.audit(ctx.name, "exec", f"{name}: {argv[0]} ({len(argv) - 1} argument(s))")
    return ws.runner.call(full, cwd=cwd, env=child_env, inherit_env=child_env is None, what=argv[0])


def logs(ws: Workspace, env: str, service: str | None, *, follow: bool, since: str | None, lines: int,
         environ: Mapping[str, str] | None = None) -> int:
    """``stageflow logs ENV [SERVICE] [-f] [--since 10m]``."""
    ctx, rt, placement, _release = _serving(ws, env, environ)
    if service is not None and service not in ctx.config.services and service not in ("db", "redis", "nginx"):
        raise UsageError(f"unknown service {service!r}", hint=f"known: {', '.join(ctx.config.services)}")
    from stageflow.masking import shown

    return ws.runner.call(rt.logs_command(placement, service, follow, since, lines), cwd=ctx.root, what="logs",
                          lines=shown)


def restart(ws: Workspace, env: str, service: str | None = None, *, yes: bool = False, interactive: bool = False,
            confirm: Confirm | None = None, environ: Mapping[str, str] | None = None) -> DeployReport:
    """``stageflow restart ENV``: the serving release started anew beside itself, health-gated, then cut over."""
    ctx, _rt, _placement, release = _serving(ws, env, environ)
    web = ctx.config.web_service[0]
    if service not in (None, web):
        raise UsageError(f"only the web service ({web}) restarts rolling and health-gated",
                         hint=f"stageflow restart {ctx.name}")
    check_approval(ctx, yes=yes, interactive=interactive, confirm=confirm)
    return deploy_env(ws, ctx, DeployOptions(kind="restart"), release=release)
