"""``stageflow config setup | generate ENV | validate ENV`` (plus ``compose``/``nginx`` from config_gen).

Only Typer is imported at module level: Jinja2, cryptography and the configuration manager load
when a command runs, because CLI start-up time is measured. Secrets are never printed: every line
goes through the masker and secret values show as ``******``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from stageflow.cli.common import RootOpt

if TYPE_CHECKING:
    from stageflow.configmgr.generate import GenerateResult
    from stageflow.configmgr.validation import ValidationReport

config_app = typer.Typer(
    name="config",
    help="Environment files, secrets and validation; compose and nginx generation.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

EnvArg = Annotated[str, typer.Argument(metavar="ENV", help="Environment name or alias, e.g. production or prod.")]
EncryptOpt = Annotated[
    Optional[bool],  # noqa: UP045
    typer.Option(
        "--encrypt/--no-encrypt",
        help="Encrypt the env files at rest with STAGEFLOW_MASTER_KEY (Fernet), or decrypt them. "
        "Default: keep each file as it is.",
    ),
]


def _print(text: str, style: str | None = None) -> None:
    from stageflow.cli.common import console
    from stageflow.masking import shown

    console().print(shown(text), style=style, markup=False, highlight=False)


def _show_result(res: GenerateResult, root: Path) -> None:
    from stageflow.config.envfile import display_path

    try:
        shown = res.path.relative_to(root).as_posix()
    except ValueError:
        shown = display_path(res.path)
    if res.created:
        action = "created"
    elif res.written:
        action = "updated"
    else:
        action = "unchanged"
    form = ", encrypted" if res.encrypted else ""
    _print(f"{res.env}: {action} {shown} (template {res.template.label}, mode 0600{form})", style="bold")
    for outcome in res.outcomes:
        _print(f"  {outcome.display()}")
    for warning in res.warnings:
        _print(f"  warning: {warning}", style="yellow")
    for note in res.notes:
        _print(f"  {note}", style="cyan")


def _record(results: list[GenerateResult], root: Path) -> None:
    """Audit trail and workflow log for env files that changed: which keys and what happened, no values.

    Who generated or rotated a secret, and when, is what an audit needs; the values never go there.
    """
    changed = [r for r in results if r.written]
    if not changed:
        return
    from stageflow.workspace import Workspace

    ws = Workspace(root)
    try:
        for res in changed:
            acted = [f"{o.key} {o.status}" for o in res.outcomes if o.secret and o.status != "kept"]
            others = sum(1 for o in res.outcomes if not o.secret and o.status != "kept")
            if others:
                acted.append(f"{others} other key(s) set")
            detail = f"{'created' if res.created else 'updated'} {res.path.name}" + (
                f": {', '.join(acted)}" if acted else "")
            ws.log.write(f"config {res.env}: {detail}")
            ws.audit(res.env, "succeeded", detail)
    finally:
        ws.close()


@config_app.command("setup")
def setup_command(root: RootOpt = None, encrypt: EncryptOpt = None) -> None:
    """Create or update the env file of every environment (.env.<env>, mode 0600), secrets included.

    Existing values are kept; secrets are generated only where missing. Run it again at any time.
    """
    from stageflow.cli.common import project_root
    from stageflow.configmgr.generate import setup_envs

    app_root = project_root(root)
    result = setup_envs(app_root, encrypt=encrypt)
    for res in result.results:
        _show_result(res, app_root)
    _record(result.results, app_root)
    if result.gitignore_added:
        _print(f".gitignore: added {', '.join(result.gitignore_added)}")


@config_app.command("generate")
def generate_command(
    env: EnvArg,
    template: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--template",
            "-t",
            metavar="NAME",
            help="Template NAME: config/templates/NAME.env.j2 in the app, or built-in dev/staging/production.",
        ),
    ] = None,
    rotate: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--rotate", metavar="KEY", help="Replace this secret with a new one (repeatable)."),
    ] = None,
    encrypt: EncryptOpt = None,
    root: RootOpt = None,
) -> None:
    """Create or update ENV's env file from its template; --rotate KEY replaces one secret."""
    from stageflow.cli.common import project_root
    from stageflow.configmgr.generate import generate_env

    app_root = project_root(root)
    res = generate_env(app_root, env, template=template, rotate=rotate or (), encrypt=encrypt)
    _show_result(res, app_root)
    _record([res], app_root)


def _show_report(report: ValidationReport, root: Path) -> None:
    try:
        shown = report.env_file.relative_to(root).as_posix()
    except ValueError:
        shown = str(report.env_file)
    _print(f"validate {report.env} ({shown})", style="bold")
    for item in report.items:
        style = "red" if item.level == "error" else "yellow"
        _print(f"  {item.level:<7}  {item.key}: {item.message}", style=style)
        _print(f"           fix: {item.fix}")
    n_err, n_warn = len(report.errors), len(report.warnings)
    summary = f"{report.env}: {n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)}"
    _print(summary if report.items else f"{report.env}: configuration OK", style="red" if n_err else "green")


@config_app.command("validate")
def validate_command(
    env: EnvArg,
    root: RootOpt = None,
    django_check: Annotated[
        bool,
        typer.Option(
            "--django-check/--no-django-check",
            help="Run Django's manage.py check --deploy for production (when the app has a manage.py).",
        ),
    ] = True,
) -> None:
    """Check ENV's configuration: required keys, types, placeholders, secrets, production rules, TLS.

    Exits 1 when there is an error, 0 otherwise (warnings included).
    """
    from stageflow.cli.common import project_root
    from stageflow.configmgr.validation import validate_environment

    app_root = project_root(root)
    report = validate_environment(app_root, env, run_django_check=django_check)
    _show_report(report, app_root)
    if not report.ok:
        raise typer.Exit(1)


# `config compose` and `config nginx` live in their own module.
from stageflow.cli import config_gen  # noqa: E402

config_gen.register(config_app)
