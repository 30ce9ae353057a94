"""The ``stageflow`` command. Parses arguments, calls one use case, renders the result.

Heavy modules (Rich, pydantic, the pipeline) are imported inside the commands so that
``stageflow --help`` stays fast.
"""

from __future__ import annotations

import os
import sys

# pydantic scans every installed distribution's entry points for plugins on first use (~30 ms);
# the CLI uses none, and start-up time is measured.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from stageflow.cli.common import RootOpt, columns, console, err_console, is_interactive, project_root

if TYPE_CHECKING:
    from stageflow.deploy.pipeline import DeployReport
    from stageflow.workspace import Workspace

app = typer.Typer(
    name="stageflow",
    help="Take a containerised web app from a commit to production and keep it healthy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from stageflow import __version__

        sys.stdout.write(f"stageflow {__version__}\n")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Take a containerised web app from a commit to production and keep it healthy."""


lock_app = typer.Typer(help="Inspect or release environment locks.", no_args_is_help=True)
backup_app = typer.Typer(help="Database backups: list, create, restore, verify.", no_args_is_help=True)
app.add_typer(lock_app, name="lock")
app.add_typer(backup_app, name="backup")

from stageflow.cli.config_cmd import config_app  # noqa: E402

app.add_typer(config_app, name="config")

from stageflow.cli.monitor_cmd import monitor_app  # noqa: E402

app.add_typer(monitor_app, name="monitor")

from stageflow.cli.pipeline_cmd import register as register_pipeline  # noqa: E402

register_pipeline(app)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Approve without asking.")]
DryOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")]
SkipOpt = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option("--skip-check", help="Skip a pre-flight check (git, runtime, config, disk, database); audited."),
]


def _ws(root: Path | None, *, readonly: bool = False) -> Workspace:
    from stageflow.workspace import Workspace

    def echo(text: str) -> None:
        from stageflow.masking import printable

        console().print(printable(text), markup=False)

    return Workspace(project_root(root), echo=echo, readonly=readonly)


def _confirm(question: str) -> bool:
    return typer.confirm(question, default=False)


def _print_reports(reports: list[DeployReport]) -> None:
    from stageflow.masking import shown

    for r in reports:
        if r.plan:
            console().print(f"Plan for {r.env}:", markup=False)
            for i, step in enumerate(r.plan, 1):
                console().print(shown(f"  {i:>2}. {step}"), markup=False)


def _deploy(env: str, root: Path | None, dry_run: bool, skip: list[str] | None, yes: bool) -> None:
    from stageflow.deploy.operations import deploy
    from stageflow.deploy.pipeline import DeployOptions

    ws = _ws(root, readonly=dry_run)
    try:
        report = deploy(ws, env, DeployOptions(dry_run=dry_run, skip_checks=tuple(skip or ())), yes=yes,
                        interactive=is_interactive(), confirm=_confirm)
        _print_reports([report])
    finally:
        ws.close()


@app.command("deploy")
def deploy_cmd(env: str, root: RootOpt = None, dry_run: DryOpt = False, skip_check: SkipOpt = None,
               yes: YesOpt = False) -> None:
    """Deploy HEAD to ENV: lock, pre-flight, backup, release, health-gated cutover."""
    _deploy(env, root, dry_run, skip_check, yes)


@app.command("dev")
def dev_cmd(root: RootOpt = None, dry_run: DryOpt = False, skip_check: SkipOpt = None) -> None:
    """Shorthand for 'deploy dev'."""
    _deploy("dev", root, dry_run, skip_check, False)


@app.command("staging")
def staging_cmd(root: RootOpt = None, dry_run: DryOpt = False, skip_check: SkipOpt = None) -> None:
    """Shorthand for 'deploy staging' (the env named so, else the staging-grade one)."""
    _deploy("staging", root, dry_run, skip_check, False)


@app.command("prod")
def prod_cmd(root: RootOpt = None, dry_run: DryOpt = False, skip_check: SkipOpt = None,
             yes: YesOpt = False) -> None:
    """Shorthand for 'deploy production' (the env named or aliased prod, else the production-grade one)."""
    _deploy("prod", root, dry_run, skip_check, yes)


@app.command("full")
def full_cmd(root: RootOpt = None, dry_run: DryOpt = False, skip_check: SkipOpt = None,
             yes: YesOpt = False) -> None:
    """Promote one release of HEAD through every environment (dev → staging → production)."""
    from stageflow.deploy.operations import full
    from stageflow.deploy.pipeline import DeployOptions

    ws = _ws(root, readonly=dry_run)
    try:
        reports = full(ws, DeployOptions(dry_run=dry_run, skip_checks=tuple(skip_check or ())), yes=yes,
                       interactive=is_interactive(), confirm=_confirm)
        _print_reports(reports)
        if not dry_run:
            console().print(f"promoted {reports[-1].release} through {' → '.join(r.env for r in reports)}",
                            markup=False)
    finally:
        ws.close()


@app.command("status")
def status_cmd(env: Annotated[Optional[str], typer.Argument()] = None, root: RootOpt = None,  # noqa: UP045
               as_json: JsonOpt = False) -> None:
    """What runs where, and whether it is healthy."""
    from stageflow.deploy.status import status
    from stageflow.masking import masker, shown
    from stageflow.state.store import dumps

    ws = _ws(root, readonly=True)
    try:
        rows = status(ws, env)
    finally:
        ws.close()
    # Reasons quote the app's own answers: mask what it should not have said, like every output.
    if as_json:
        sys.stdout.write(masker.mask(dumps([r.as_dict() for r in rows])) + "\n")
        return
    table = [("ENV", "RELEASE", "HEALTH", "URL", "RUNTIME", "DEPLOYED", "NOTES")]
    for r in rows:
        notes = []
        if r.healthy:
            health = "healthy"
        elif r.reason.startswith("config error"):
            health = r.reason
        elif r.release is None:
            health = "stopped" if r.previous else "-"
            if r.previous:
                notes.append(r.reason)
        else:
            health = f"UNHEALTHY: {r.reason}"
        if r.downtime:
            notes.append("last deploy had downtime (no nginx)")
        if r.mismatch:
            notes.append(f"MISMATCH: {r.mismatch}")
        if r.locked_by:
            notes.append(f"locked by {r.locked_by}" + (
                f" — STALE: {r.lock_stale}; the next deploy takes it over" if r.lock_stale else ""))
        notes += r.supervisor
        table.append((r.env, r.release or "-", health, r.url, r.runtime, (r.deployed_at or "-")[:19],
                      "; ".join(notes)))
    # Plain columns like `docker ps`: greppable, and no Rich import for the command people loop on.
    sys.stdout.write(shown(columns(table)))


@app.command("rollback")
def rollback_cmd(env: str, root: RootOpt = None,
                 to: Annotated[Optional[str], typer.Option("--to", help="Release id to go back to.")] = None,  # noqa: UP045
                 restore_db: Annotated[bool, typer.Option("--restore-db", help="Also restore the database.")] = False,
                 yes: YesOpt = False) -> None:
    """Go back to the previous (or named) release. The database only with --restore-db."""
    from stageflow.deploy.operations import rollback

    ws = _ws(root)
    try:
        r = rollback(ws, env, to=to, restore_db=restore_db, yes=yes, interactive=is_interactive(),
                     confirm=_confirm)
        console().print(f"rolled back {r.env} to {r.release}", markup=False)
    finally:
        ws.close()


@app.command("cleanup")
def cleanup_cmd(env: Annotated[Optional[str], typer.Argument()] = None, root: RootOpt = None,  # noqa: UP045
                keep: Annotated[Optional[int], typer.Option("--keep", help="Releases/backups to keep.")] = None,  # noqa: UP045
                ) -> None:
    """Remove old releases and backups (compose: their images, exited containers, dangling images); never
    the current or previous release, never another project's containers or images."""
    from stageflow.deploy.operations import cleanup

    ws = _ws(root)
    try:
        removed = cleanup(ws, env, keep)
        ws.audit(env, "succeeded", f"removed {len(removed)} item(s)")
        for item in removed:
            ws.log.write(f"removed {item}")
        ws.log.write(f"cleanup: removed {len(removed)} item(s)")
    finally:
        ws.close()


@app.command("history")
def history_cmd(env: Annotated[Optional[str], typer.Argument()] = None, root: RootOpt = None,  # noqa: UP045
                as_json: JsonOpt = False,
                limit: Annotated[int, typer.Option("--limit", min=1, max=1_000_000,
                                                   help="How many deployments.")] = 20,
                audit: Annotated[bool, typer.Option("--audit", help="Show the audit trail instead.")] = False,
                ) -> None:
    """Deployments with every step and its timing (or the audit trail)."""
    from stageflow.config.loader import load_project, resolve_env_name
    from stageflow.deploy.lock import deployment_outcome
    from stageflow.masking import printable
    from stageflow.state.store import dumps
    from stageflow.workspace import Workspace

    ws = Workspace(project_root(root), readonly=True)
    try:
        name = resolve_env_name(load_project(ws.root), env) if env else None
        if audit:
            events = [e.to_json() for e in ws.store.events(name, limit)]
            if as_json:
                sys.stdout.write(dumps(events) + "\n")
            for e in [] if as_json else events:
                console().print(printable(f"{e['ts'][:19]}  {e['actor']}@{e['host']}  {e['env'] or '-':<10} "
                                          f"{e['outcome']:<10} {e['command']}  {e['detail']}"), markup=False)
            return
        deps: list[dict[str, Any]] = []
        marked: dict[str, set[str]] = {}
        for dep in ws.store.deployments(name, limit):
            item = dep.to_json()
            # A killed deploy is `running` in the record until the next command: show what it is.
            item["outcome"], item["error"] = deployment_outcome(ws.store, dep)
            if dep.env not in marked:
                marked[dep.env] = ws.store.rolled_back_from(dep.env)
            item["rolled_back"] = dep.release_id in marked[dep.env]
            item["steps"] = [s.to_json() for s in ws.store.steps(dep.id)]
            deps.append(item)
    finally:
        ws.close()
    if as_json:
        sys.stdout.write(dumps(deps) + "\n")
        return
    for d in deps:
        # Read back from state.db: shown escaped, whatever the file holds.
        console().print(printable(
            f"#{d['id']} {d['env']} {d['kind']} {d['release_id'] or '-'}"
            f"{' (rolled back away from)' if d['rolled_back'] else ''} {d['outcome'].upper()} "
            f"{d['started_at'][:19]} by {d['actor']}" + (f"  error: {d['error']}" if d["error"] else "")),
            markup=False,
        )
        for s in d["steps"]:
            secs = f"{s['seconds']:.2f}s" if s["seconds"] is not None else "-"
            console().print(printable(f"    {s['name']:<10} {s['outcome']:<8} {secs:>8}  {s['detail']}"),
                            markup=False)


@app.command("down")
def down_cmd(env: str, root: RootOpt = None) -> None:
    """Stop every process of ENV (and its proxy)."""
    from stageflow.deploy.operations import down

    ws = _ws(root)
    try:
        n = down(ws, env)
        ws.log.write(f"stopped {n} process(es) of {env}")
    finally:
        ws.close()


@app.command("exec")
def exec_cmd(env: str, command: Annotated[list[str], typer.Argument(help="The command, after --.")],
             service: Annotated[Optional[str], typer.Option("--service", "-s", help="Service (default: the web one).")] = None,  # noqa: UP045, E501
             root: RootOpt = None) -> None:
    """Run a command in ENV as its serving release runs (its variables, its release or container)."""
    from stageflow.deploy.operations import exec_command

    ws = _ws(root)
    try:
        code = exec_command(ws, env, command, service)
    finally:
        ws.close()
    raise typer.Exit(code)


@app.command("logs")
def logs_cmd(env: str, service: Annotated[Optional[str], typer.Argument()] = None,  # noqa: UP045
             follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming.")] = False,
             since: Annotated[Optional[str], typer.Option("--since", help="e.g. 10m (compose).")] = None,  # noqa: UP045
             lines: Annotated[int, typer.Option("--lines", "-n", help="Lines of history.")] = 100,
             root: RootOpt = None) -> None:
    """Show the logs of ENV's serving release (one service or all)."""
    from stageflow.deploy.operations import logs

    ws = _ws(root)
    try:
        code = logs(ws, env, service, follow=follow, since=since, lines=lines)
    finally:
        ws.close()
    raise typer.Exit(code)


@app.command("restart")
def restart_cmd(env: str, service: Annotated[Optional[str], typer.Argument()] = None,  # noqa: UP045
                root: RootOpt = None, yes: YesOpt = False) -> None:
    """Restart ENV's web service rolling: new units beside the old, health gate, cutover, drain."""
    from stageflow.deploy.operations import restart

    ws = _ws(root)
    try:
        r = restart(ws, env, service, yes=yes, interactive=is_interactive(), confirm=_confirm)
        console().print(f"restarted {r.env} ({r.release})", markup=False)
    finally:
        ws.close()


@app.command("doctor")
def doctor_cmd(root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """What this machine has of the programs stageflow runs, what the app needs, how to install the rest.

    Exits 1 when something the app needs (outside an app: git, Python's venv) is missing.
    """
    from stageflow import __version__, doctor
    from stageflow.config.loader import find_root, load_project
    from stageflow.errors import ConfigError, OperationError
    from stageflow.runner import Runner
    from stageflow.state.store import dumps

    config = None
    where = "no stageflow.yml here or above: every program stageflow can use is listed"
    try:
        app_root = find_root(root)
    except ConfigError:
        if root is not None:
            raise
    else:
        config = load_project(app_root)
        where = f"app {config.project} in {app_root}"
    lines = doctor.report(config, Runner())
    if as_json:
        sys.stdout.write(dumps(doctor.as_dict(lines)) + "\n")
    else:
        table = [("PROGRAM", "STATUS", "VERSION", "NEED", "FOR")]
        table += [(ln.tool.name, ln.found.verdict, ln.found.version or "-", ln.need, ln.why or ln.tool.purpose)
                  for ln in lines]
        todo = [f"  {ln.tool.name}: {ln.found.detail}; install: {ln.tool.debian}\n"
                for ln in lines if ln.found.verdict != "ok" and ln.need != "unused"]
        sys.stdout.write(f"stageflow {__version__} on Python {sys.version.split()[0]}; {where}\n\n"
                         + columns(table) + ("\nto do:\n" + "".join(todo) if todo else ""))
    problems = [ln.tool.name for ln in lines if ln.problem]
    if problems:
        raise OperationError(f"missing what this app needs: {', '.join(problems)}",
                             hint="install them with the lines above, then run 'stageflow doctor' again")


@lock_app.command("status")
def lock_status_cmd(env: Annotated[Optional[str], typer.Argument()] = None, root: RootOpt = None,  # noqa: UP045
                    ) -> None:
    """Show who holds each environment's lock."""
    from stageflow.config.loader import load_project, resolve_env_name
    from stageflow.deploy.lock import read_lock, stale_reason
    from stageflow.errors import OperationError
    from stageflow.masking import printable
    from stageflow.workspace import Workspace

    ws = Workspace(project_root(root), readonly=True)
    try:
        config = load_project(ws.root)
        names = [resolve_env_name(config, env)] if env else list(config.environments)
        for name in names:
            info = read_lock(ws.store, name)
            if info is None:
                console().print(f"{name}: unlocked", markup=False)
            else:
                stale = stale_reason(info)
                console().print(printable(f"{name}: locked by {info.describe()}"
                                          + (f" — STALE: {stale}" if stale else "")), markup=False)
            target = _host_lock(ws, name, quiet=True)
            try:
                found = target.read() if target is not None else None
            except OperationError as exc:  # the engine does not answer: say so, show the rest
                console().print(printable(f"{name}: the lock on {target.where} is unknown: {exc}"), markup=False)
                continue
            if found is not None and (info is None or (found[0].pid, found[0].host) != (info.pid, info.host)):
                stale = stale_reason(found[0])
                console().print(printable(f"{name}: locked on {target.where} by {found[0].describe()}"
                                          + (f" — STALE: {stale}" if stale else "")), markup=False)
    finally:
        ws.close()


def _host_lock(ws: Any, name: str, *, quiet: bool = False) -> Any:
    """The env's lock on its target host (a Docker Engine), or None (local runtime; ``quiet``: unknown)."""
    from stageflow.config.loader import load_env_context
    from stageflow.errors import ConfigError
    from stageflow.runtimes import runtime_for

    try:
        return runtime_for(load_env_context(ws.root, name), ws.runner, None).host_lock()
    except ConfigError:
        if quiet:  # `lock status` still shows this checkout's locks when an env file is missing
            return None
        raise


@lock_app.command("release")
def lock_release_cmd(env: str, root: RootOpt = None) -> None:
    """Remove ENV's lock (for a holder that is gone)."""
    from stageflow.config.loader import load_project, resolve_env_name
    from stageflow.deploy.lock import force_release

    ws = _ws(root)
    try:
        name = resolve_env_name(load_project(ws.root), env)
        info = force_release(ws.store, name, _host_lock(ws, name))
        ws.audit(name, "succeeded", f"lock released (was {info.describe() if info else 'unlocked'})")
        ws.log.write(f"{name}: lock released" + (f" (was held by {info.describe()})" if info else " (was unlocked)"))
    finally:
        ws.close()


@backup_app.command("list")
def backup_list_cmd(env: str, root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """Backups of ENV, newest first."""
    from stageflow.deploy.operations import backup_list
    from stageflow.state.store import dumps

    ws = _ws(root)
    try:
        rows = backup_list(ws, env)
    finally:
        ws.close()
    if as_json:
        sys.stdout.write(dumps(rows) + "\n")
        return
    for r in rows:
        console().print(f"{r['file']}  {r['size']:>10} bytes  {r['format']:<6}  sha256 {r['checksum'][:12]}",
                        markup=False)
    if not rows:
        console().print("no backups", markup=False)


@backup_app.command("create")
def backup_create_cmd(env: str, root: RootOpt = None) -> None:
    """Back up ENV's database now."""
    from stageflow.deploy.operations import backup_create

    ws = _ws(root)
    try:
        ws.log.write(f"backup: {backup_create(ws, env)}")
    finally:
        ws.close()


@backup_app.command("restore")
def backup_restore_cmd(env: str, file: Annotated[Optional[str], typer.Argument()] = None,  # noqa: UP045
                       root: RootOpt = None, yes: YesOpt = False) -> None:
    """Restore a backup (default: the newest) into ENV's database. Asks, or needs --yes."""
    from stageflow.deploy.operations import backup_restore

    ws = _ws(root)
    try:
        path = backup_restore(ws, env, file, yes=yes, interactive=is_interactive(), confirm=_confirm)
        ws.log.write(f"restored {path.name} into {env}")
    finally:
        ws.close()


@backup_app.command("verify")
def backup_verify_cmd(env: str, file: Annotated[Optional[str], typer.Argument()] = None,  # noqa: UP045
                      root: RootOpt = None) -> None:
    """Restore a backup into a scratch database and check it."""
    from stageflow.deploy.operations import backup_verify
    from stageflow.errors import OperationError

    ws = _ws(root)
    try:
        result = backup_verify(ws, env, file)
        ws.log.write(f"verify: {'OK' if result.ok else 'FAILED'}: {result.detail}")
        if not result.ok:
            raise OperationError(f"backup verification failed: {result.detail}")
    finally:
        ws.close()


def run() -> None:
    """Console-script entry point: one clear line and an exit code instead of a traceback."""
    from stageflow.errors import StageflowError

    _build_only(sys.argv[1] if len(sys.argv) > 1 else "")
    try:
        app()
    except SystemExit as done:
        _exit_now(done.code)
    except StageflowError as exc:
        from stageflow.masking import shown

        err_console().print(f"error: {shown(str(exc))}", markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console().print("interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:
        from stageflow.masking import shown
        from stageflow.state.store import database_error

        if database_error(exc):
            # A damaged or foreign .stageflow/state.db: name the file, never a traceback.
            err_console().print(f"error: .stageflow/state.db: {shown(str(exc))} (the state database is damaged: "
                                "move it aside and stageflow starts a new one)", markup=False)
            sys.exit(1)
        err_console().print(
            f"error: unexpected {type(exc).__name__}: {shown(str(exc))} (please report this)", markup=False
        )
        sys.exit(1)
    _exit_now(0)


def _build_only(name: str) -> None:
    """Keep only the invoked command (or group) registered on the app.

    Typer turns every registered command into a Click command on each start, inspecting every
    signature (~40 ms for this CLI); a run needs one. Options (``--help``, ``--version``) and
    unknown names keep the whole tree, so help and "No such command" look as usual.
    """
    if not name or name.startswith("-"):
        return
    commands = [c for c in app.registered_commands if c.name == name]
    groups = [g for g in app.registered_groups if g.name == name]
    if commands or groups:
        app.registered_commands = commands
        app.registered_groups = groups


def _exit_now(code: object) -> None:
    """Exit without the interpreter's module teardown (~200 ms with Typer, pydantic and Rich loaded).

    Safe here: every command has closed its log and database in ``finally`` blocks by now, so only
    the standard streams need flushing.
    """
    status = code if isinstance(code, int) else (0 if code is None else 1)
    if not isinstance(code, int | None):
        print(code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    run()
