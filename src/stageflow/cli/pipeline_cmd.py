"""``stageflow ci generate``, ``scan``, ``gate`` and ``loadtest ENV``: the pipeline face of the CLI.

Registered on the main app by :func:`register`. Only Typer is imported at module level; the
scanners, the gates and the load engine load when their command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from stageflow.cli.common import RootOpt
from stageflow.masking import printable

ci_app = typer.Typer(help="CI/CD pipeline generation (GitHub Actions).", no_args_is_help=True, rich_markup_mode=None)


def register(app: typer.Typer) -> None:
    """Add ``ci``, ``scan``, ``gate`` and ``loadtest`` to the main app."""
    app.add_typer(ci_app, name="ci")
    app.command("scan")(scan_command)
    app.command("gate")(gate_command)
    app.command("loadtest")(loadtest_command)


def _say(text: str) -> None:
    from stageflow.cli.common import console
    from stageflow.masking import shown

    console().print(shown(text), markup=False, highlight=False)


def _root_or_cwd(root: Path | None) -> Path:
    """``--root``, else the nearest directory holding stageflow.yml, else the working directory.

    Scanning and gating work on any repository (stageflow scans itself); a stageflow.yml only adds settings.
    """
    from stageflow.config.loader import find_root
    from stageflow.errors import ConfigError, UsageError

    if root is not None:
        if not root.is_dir():
            raise UsageError(f"--root: {root} is not a directory")
        return root.resolve()
    try:
        return find_root()
    except ConfigError:
        return Path.cwd().resolve()


def _write_inside(root: Path, rel: Path, text: str) -> Path:
    """Write ``root/rel`` (a file of the app's repository, so world-readable) through the safe writer."""
    from stageflow.errors import OperationError
    from stageflow.fsutil import write_file

    path = root / rel
    try:
        write_file(path, text, root=root, mode=0o644, dir_mode=0o755)
    except OSError as exc:
        raise OperationError(f"cannot write {path}: {exc.strerror}", hint="check the directory's permissions") from exc
    return path


# ------------------------------------------------------------------------------------------ ci


@ci_app.command("generate")
def ci_generate_command(
    root: RootOpt = None,
    stages: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--stages", help="Comma-separated stages (default: all eight): quality, security, build, integration, "
        "deploy-staging, performance, deploy-production, cleanup.")] = None,
    python: Annotated[str, typer.Option("--python", help="Python version of the jobs.")] = "3.11",
    branch: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--branch", help="Branch that triggers the pipeline (repeatable; default main).")] = None,
    no_pin: Annotated[bool, typer.Option(
        "--no-pin", help="Reference actions by major version tag instead of a full commit SHA.")] = False,
    min_coverage: Annotated[Optional[float], typer.Option(  # noqa: UP045
        "--min-coverage", help="Coverage gate of the build stage (default: gates.coverage).")] = None,
    stageflow_spec: Annotated[str, typer.Option(
        "--stageflow-spec", help="pip requirement the deploy jobs install stageflow from.")] = "stageflow",
    stdout: Annotated[bool, typer.Option("--stdout", help="Print the workflow instead of writing files.")] = False,
) -> None:
    """Write .github/workflows/ci-cd.yml (eight gated stages) and the k6 script it runs."""
    from stageflow.cli.common import err_console, project_root
    from stageflow.config.loader import load_project
    from stageflow.generate.k6 import render_k6
    from stageflow.generate.workflow import K6_PATH, STAGES, WORKFLOW_PATH, WorkflowOptions, render_workflow

    app_root = project_root(root)
    config = load_project(app_root)
    envs = config.environments
    # The deploy stages deploy the staging and production environments (settings, not names).
    staging, production = config.staging_env, config.production_env
    targets = {"deploy-staging": staging, "deploy-production": production}
    if stages is not None:
        chosen = tuple(s.strip() for s in stages.split(",") if s.strip())
    else:
        chosen = tuple(s for s in STAGES if s not in targets or targets[s] is not None)
        for stage in (s for s in STAGES if s not in chosen):
            flag = stage.removeprefix("deploy-")
            # stderr: with --stdout the workflow itself is stdout.
            err_console().print(f"{stage} left out: no environment is {flag}-grade "
                                f"(environments.<env>.{flag}: true)", markup=False)

    def url(env: str | None) -> str:
        return envs[env].url if env is not None and "${" not in envs[env].url else ""

    opts = WorkflowOptions(
        stages=tuple(s for s in STAGES if s in chosen) + tuple(s for s in chosen if s not in STAGES),
        python=python, branches=tuple(branch or ("main",)), pin=not no_pin,
        coverage=config.gates.coverage if min_coverage is None else min_coverage,
        stageflow_spec=stageflow_spec, django=(app_root / "manage.py").is_file(),
        staging_env=staging, staging_url=url(staging), production_env=production, production_url=url(production),
    )
    workflow = render_workflow(opts)
    k6_url = opts.staging_url or next(iter(envs.values())).url
    k6 = render_k6(config.loadtest, config.gates, k6_url)
    if stdout:
        sys.stdout.write(workflow)
        return
    wrote = [_write_inside(app_root, WORKFLOW_PATH, workflow)]
    if "performance" in opts.stages:
        wrote.append(_write_inside(app_root, K6_PATH, k6))
    for p in wrote:
        _say(f"wrote {p.relative_to(app_root)}")
    pinned = "pinned to commit SHAs" if opts.pin else "NOT pinned (--no-pin)"
    _say(f"stages: {', '.join(opts.stages)}; actions {pinned}")


# ---------------------------------------------------------------------------------------- scan


def scan_command(
    root: RootOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or sarif.")] = "table",
    fail_on: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--fail-on", help="Exit 1 on a finding at or above: critical, high, medium, low "
        "(default security.fail_on).")] = None,
    skip: Annotated[Optional[list[str]], typer.Option("--skip", help="Scanner not to run (repeatable).")] = None,  # noqa: UP045
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Run only this scanner (repeatable).")] = None,  # noqa: UP045
    exclude: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--exclude", help="Path (relative to the root) not to scan (repeatable).")] = None,
    output: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--output", "-o", help="Also write the JSON report here (what `gate` reads).")] = None,
) -> None:
    """Run the installed scanners (pip-audit, bandit, detect-secrets, hadolint, gixy, trivy); one merged report."""
    from stageflow.errors import OperationError, UsageError
    from stageflow.fsutil import inside, write_file
    from stageflow.runner import Runner
    from stageflow.security.report import SEVERITIES, render_json, render_sarif
    from stageflow.security.scan import scan_project

    if fmt not in ("table", "json", "sarif"):
        raise UsageError(f"--format: unknown format {fmt!r}", hint="choose table, json or sarif")
    if fail_on is not None and fail_on not in SEVERITIES:
        raise UsageError(f"--fail-on: unknown level {fail_on!r}", hint=f"choose {', '.join(SEVERITIES)}")
    app_root = _root_or_cwd(root)
    progress = _err if fmt == "table" else None
    report = scan_project(app_root, runner=Runner(), fail_on=fail_on, skip=skip or (), only=only or (),
                          exclude=exclude or (), progress=progress)
    saved = output
    if saved is None and (app_root / ".stageflow").is_dir():
        saved = app_root / ".stageflow" / "reports" / "scan.json"
    if saved is not None:
        try:
            write_file(saved, render_json(report), root=app_root if inside(app_root, saved) else None)
        except OSError as exc:
            raise UsageError(f"--output: cannot write {saved}: {exc.strerror}") from exc
    text = {"json": render_json, "sarif": render_sarif, "table": render_table}[fmt](report)
    # A table quotes the repository (paths, tools' messages): its control characters are shown, not obeyed.
    sys.stdout.write(printable(text) if fmt == "table" else text)
    if report.failed:
        raise OperationError("scan failed: " + "; ".join(_why(report)))


def _err(text: str) -> None:
    from stageflow.cli.common import err_console

    err_console().print(printable(text), markup=False, highlight=False)


def _why(report: object) -> list[str]:
    from stageflow.security.report import ScanReport

    assert isinstance(report, ScanReport)
    why = []
    if report.blocking:
        why.append(f"{len(report.blocking)} open finding(s) at or above {report.fail_on}")
    if report.crashed:
        why.append("crashed: " + ", ".join(f"{o.scanner} ({o.detail})" for o in report.crashed))
    return why


def render_table(report: object) -> str:
    """Plain columns: one line per scanner, one per finding, then the verdict."""
    from stageflow.cli.common import columns
    from stageflow.security.report import ScanReport

    assert isinstance(report, ScanReport)
    rows = [("SCANNER", "CHECKS", "RESULT")]
    for o in report.outcomes:
        if o.status == "ran":
            result = f"{len(o.findings)} finding(s)" if o.findings else "no findings"
            result += f" ({o.detail})" if o.detail else ""
        else:
            result = f"{o.status.upper()}: {o.detail}"
        rows.append((o.scanner, o.what, result))
    parts = [columns(rows)]
    if report.findings:
        frows = [("SEVERITY", "SCANNER", "LOCATION", "ID", "FINDING")]
        for f in report.findings:
            note = f"[accepted: {f.accepted}] " if f.accepted else f"[{f.expired}] " if f.expired else ""
            sev = f.severity.upper() if f.accepted is None else f"({f.severity})"
            frows.append((sev, f.scanner, f.location, f.id, note + f.message))
        parts.append("\n" + columns(frows))
    counts = ", ".join(f"{n} {s}" for s, n in report.counts().items())
    why = _why(report)
    parts.append(f"\nscan {'FAILED' if report.failed else 'passed'}: {counts} open"
                 + (f" ({'; '.join(why)})" if why else "") + "\n")
    return "".join(parts)


# ---------------------------------------------------------------------------------------- gate


def gate_command(
    root: RootOpt = None,
    env: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--env", help="Environment whose health and last load test are gated.")] = None,
    only: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--only", help="Gate to run (repeatable): coverage, vulnerabilities, performance, memory, health. "
        "A gate named here fails when its input is missing.")] = None,
    coverage: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--coverage", help="coverage.xml (default: ROOT/coverage.xml).")] = None,
    scan: Annotated[Optional[Path], typer.Option("--scan", help="`scan` JSON report (default: the last scan).")] = None,  # noqa: UP045
    loadtest: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--loadtest", help="Load summary: stageflow's or k6 --summary-export "
        "(default: --env's last load test).")] = None,
    min_coverage: Annotated[Optional[float], typer.Option(  # noqa: UP045
        "--min-coverage", help="Percent (default gates.coverage).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The quality gates, each pass/fail with its figure; exit 1 on any failure."""
    import json

    from stageflow.config.loader import PROJECT_FILE, load_project, resolve_env_name
    from stageflow.errors import OperationError, UsageError
    from stageflow.gate import GateInputs, evaluate
    from stageflow.loadtest.run import report_path

    app_root = _root_or_cwd(root)
    config = load_project(app_root) if (app_root / PROJECT_FILE).is_file() else None
    name = None
    if env is not None:
        if config is None:
            raise UsageError(f"--env {env}: no {PROJECT_FILE} in {app_root}", hint="pass --root APP")
        name = resolve_env_name(config, env)
    g = config.gates if config else None
    if min_coverage is not None and not 0 <= min_coverage <= 100:
        raise UsageError("--min-coverage: must be between 0 and 100")
    inputs = GateInputs(
        coverage_file=coverage or app_root / "coverage.xml",
        scan_file=scan or app_root / ".stageflow" / "reports" / "scan.json",
        load_file=loadtest or (report_path(app_root, name) if name else None),
        min_coverage=min_coverage if min_coverage is not None else (g.coverage if g else 80.0),
        vulnerability_level=g.vulnerabilities if g else "high",
        max_p95=g.p95 if g else 2.0,
        max_error_rate=g.error_rate if g else 1.0,
        max_memory_growth_mb=g.memory_growth_mb if g else 100.0,
    )
    health = (lambda: _health(app_root, name)) if name else None
    results = evaluate(inputs, only=only or (), health=health)
    if as_json:
        sys.stdout.write(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
    else:
        from stageflow.cli.common import columns

        sys.stdout.write(printable(columns([("GATE", "RESULT", "FIGURE"),
                                            *((r.name, r.status.upper(), r.detail) for r in results)])))
    failed = [r.name for r in results if r.status == "fail"]
    if failed:
        raise OperationError(f"gate failed: {', '.join(failed)}")
    if not any(r.status == "pass" for r in results):
        raise OperationError("gate: no gate had its input, so nothing was checked",
                             hint="pass --coverage, --scan, --loadtest or --env")


def _health(root: Path, env: str) -> list[tuple[str, bool, str]]:
    from stageflow.deploy.status import status
    from stageflow.workspace import Workspace

    ws = Workspace(root)
    try:
        rows = status(ws, env)
    finally:
        ws.close()
    return [(r.env, r.healthy, r.reason if not r.healthy else "healthy") for r in rows]


# ------------------------------------------------------------------------------------ loadtest


def loadtest_command(
    env: Annotated[str, typer.Argument(metavar="ENV", help="Environment to load (its own URL only).")],
    root: RootOpt = None,
    rate: Annotated[Optional[float], typer.Option(  # noqa: UP045
        "--rate", help="Requests per second (default loadtest.rate).")] = None,
    duration: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--duration", help="How long, e.g. 30s (default loadtest.duration).")] = None,
    engine: Annotated[str, typer.Option("--engine", help="auto (k6 when installed), k6 or python.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Load ENV's URL at a constant rate (bounded), with the services' memory before and after."""
    import json

    from stageflow.cli.common import project_root
    from stageflow.config.durations import parse_duration
    from stageflow.config.loader import load_env_context
    from stageflow.errors import UsageError
    from stageflow.loadtest.memory import memory_source
    from stageflow.loadtest.run import LoadOptions, report_path, run_loadtest
    from stageflow.runner import Runner
    from stageflow.security.scanners import find_tool

    if engine not in ("auto", "k6", "python"):
        raise UsageError(f"--engine: unknown engine {engine!r}", hint="choose auto, k6 or python")
    try:
        seconds = parse_duration(duration) if duration is not None else None
    except ValueError as exc:
        raise UsageError(f"--duration: {exc}") from None
    app_root = project_root(root)
    ctx = load_env_context(app_root, env)
    runner = Runner()
    summary = run_loadtest(ctx, LoadOptions(rate=rate, duration=seconds, engine=engine), runner=runner,
                           memory=memory_source(ctx, runner), k6=find_tool("k6") if engine != "python" else None,
                           say=_err)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    lat = summary["latency"]
    _say(f"{summary['requests']} requests in {summary['duration_s']:.1f}s ({summary['throughput_rps']:.1f}/s), "
         f"errors {summary['error_rate'] * 100:.2f}%, dropped {summary['dropped']}")
    _say(f"latency p50 {lat['p50'] * 1000:.0f} ms, p95 {lat['p95'] * 1000:.0f} ms, p99 {lat['p99'] * 1000:.0f} ms, "
         f"max {lat['max'] * 1000:.0f} ms")
    for svc, m in (summary.get("memory") or {}).items():
        _say(f"memory {svc}: {m['start_mb']:.0f} MB → {m['end_mb']:.0f} MB (peak {m['peak_mb']:.0f} MB)")
    if summary.get("memory") is None:
        _say(f"memory: not read (the {ctx.env.runtime} runtime cannot tell)")
    _say(f"summary: {report_path(app_root, ctx.name).relative_to(app_root)} (stageflow gate --env {ctx.name})")
