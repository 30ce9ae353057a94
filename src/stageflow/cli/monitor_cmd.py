"""``stageflow monitor``: all | env ENV | continuous SECONDS | report ENV | alerts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from stageflow.cli.common import RootOpt, columns, err_console, project_root

if TYPE_CHECKING:
    from stageflow.monitor.engine import Cycle, Monitor
    from stageflow.workspace import Workspace

monitor_app = typer.Typer(help="Checks, thresholds, alerts, reports.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _warn(message: str) -> None:
    from stageflow.masking import shown

    err_console().print(f"warning: {shown(message)}", markup=False)


def _open(root: Path | None, envs: list[str] | None) -> tuple[Workspace, Monitor]:
    from stageflow.monitor.service import make_monitor
    from stageflow.workspace import Workspace

    ws = Workspace(project_root(root))
    try:
        return ws, make_monitor(ws, envs, warn=_warn)
    except BaseException:
        ws.close()
        raise


def _fmt(value: float | None, unit: str) -> str:
    from stageflow.alerts.notifiers.slack import fmt_value

    return fmt_value(value, unit)


def _print_cycle(cycle: Cycle, as_json: bool) -> None:
    from stageflow.masking import masker, shown

    if as_json:
        import json

        rows = [{"env": o.env, "check": o.check, "target": o.target, "status": o.severity, "value": o.value,
                 "threshold": o.threshold, "unit": o.unit, "summary": o.summary, "details": o.details}
                for o in cycle.observations]
        sys.stdout.write(masker.mask(json.dumps({"ts": cycle.ts, "checks": rows,
                                                 "critical": cycle.critical}, indent=2)) + "\n")
    else:
        table = [("ENV", "CHECK", "TARGET", "STATUS", "VALUE", "THRESHOLD", "DETAIL")]
        for o in sorted(cycle.observations, key=lambda o: (o.env, o.check, o.target)):
            table.append((o.env, o.check, o.target, o.severity.upper() if o.severity != "ok" else "ok",
                          _fmt(o.value, o.unit), _fmt(o.threshold, o.unit) if o.threshold is not None else "-",
                          o.summary + (f" — {o.hint}" if o.hint else "")))
        # What the app answered or logged reaches the terminal: control sequences are shown, not obeyed.
        sys.stdout.write(shown(columns(table)))
    if cycle.critical:
        raise typer.Exit(1)


def _once(root: Path | None, envs: list[str] | None, as_json: bool) -> None:
    from stageflow.monitor.service import run_once

    ws, monitor = _open(root, envs)
    try:
        cycle = run_once(monitor)
    finally:
        ws.close()
    _print_cycle(cycle, as_json)


@monitor_app.command("all")
def all_cmd(root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """Check every environment once: table, exit 0 healthy / 1 when anything is critical."""
    _once(root, None, as_json)


@monitor_app.command("env")
def env_cmd(env: str, root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """Check one environment (and the host) once."""
    _once(root, [env], as_json)


@monitor_app.command("continuous")
def continuous_cmd(
    seconds: Annotated[float, typer.Argument(help="Seconds between check cycles.", min=1)],
    root: RootOpt = None,
    metrics_port: Annotated[Optional[int], typer.Option("--metrics-port", help="Serve Prometheus metrics on "  # noqa: UP045
                                                        "127.0.0.1:PORT.", min=1, max=65535)] = None,
) -> None:
    """Check every SECONDS until stopped; alerts go out through the outbox as they change."""
    import asyncio

    from stageflow.monitor.service import continuous

    def echo(line: str) -> None:
        from stageflow.masking import shown

        sys.stdout.write(shown(line) + "\n")
        sys.stdout.flush()

    ws, monitor = _open(root, None)
    try:
        asyncio.run(continuous(monitor, seconds, echo, metrics_port=metrics_port))
    finally:
        ws.close()


@monitor_app.command("report")
def report_cmd(
    env: str,
    root: RootOpt = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="md, html or json.")] = "md",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to FILE instead of stdout.")] = None,  # noqa: UP045
    period: Annotated[str, typer.Option("--period", help="How far back: 24h, 7d…")] = "24h",
) -> None:
    """Uptime, incidents, breaches, slowest endpoints, error kinds and the trend, for ENV."""
    from stageflow.config.durations import parse_duration
    from stageflow.errors import UsageError
    from stageflow.masking import masker, printable
    from stageflow.monitor.report import build_report, render

    if fmt not in ("md", "html", "json"):
        raise UsageError(f"unknown report format {fmt!r}", hint="use md, html or json")
    try:
        seconds = parse_duration(period)
    except ValueError as exc:
        raise UsageError(f"--period: {exc}") from None
    ws, monitor = _open(root, [env])
    try:
        text = masker.mask(render(build_report(monitor, monitor.watches[0].ctx.name, seconds), fmt))
    finally:
        ws.close()
    if output is None:
        sys.stdout.write(text if fmt == "json" else printable(text))
        return
    from stageflow.fsutil import write_file

    # The operator's -o path: taken as given, but the file itself is never written through a symlink.
    write_file(output, text, root=None, mode=0o644)
    sys.stdout.write(f"wrote {output}\n")


@monitor_app.command("alerts")
def alerts_cmd(root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """Active alerts, the last 24 h by severity, the noisiest checks, undelivered messages."""
    from stageflow.masking import masker, shown
    from stageflow.monitor.service import alerts_summary
    from stageflow.state.store import dumps

    ws, monitor = _open(root, None)
    try:
        data = alerts_summary(monitor)
    finally:
        ws.close()
    if as_json:
        sys.stdout.write(masker.mask(dumps(data)) + "\n")
        return
    out = []
    if data["active"]:
        table = [("SEVERITY", "STATE", "ENV", "CHECK", "TARGET", "SINCE", "SUMMARY")]
        import time

        for a in data["active"]:
            since = time.strftime("%Y-%m-%d %H:%M", time.gmtime(a["since"])) if a["since"] else "-"
            table.append((a["severity"].upper(), a["state"], a["env"], a["check"], a["target"], since,
                          a["summary"] + (f" (folded under {a['folded_under']})" if a["folded_under"] else "")))
        out.append(columns(table))
    else:
        out.append("no active alerts\n")
    fired = data["last_24h"]["fired_by_severity"]
    out.append("last 24h: " + (", ".join(f"{n} {s}" for s, n in sorted(fired.items())) or "nothing fired") + "\n")
    if data["noisiest"]:
        out.append("noisiest: " + ", ".join(f"{n['fingerprint']} ({n['transitions']})" for n in data["noisiest"])
                   + "\n")
    box = data["outbox"]
    if box["pending"] or box["failed"]:
        out.append(f"outbox: {box['pending']} pending, {len(box['failed'])} failed"
                   + "".join(f"\n  #{f['id']} {f['notifier']}: {f['error']}" for f in box["failed"][:5]) + "\n")
    sys.stdout.write(shown("".join(out)))
