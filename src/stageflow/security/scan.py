"""``stageflow scan``: run every registered scanner that can run, merge, apply acceptances."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from pathlib import Path

from stageflow.config.models import Security
from stageflow.errors import ConfigError, OperationError, UsageError
from stageflow.runner import Runner
from stageflow.security.report import AcceptRule, Outcome, ScanReport, apply_acceptances
from stageflow.security.scanners import SCANNERS, Scanner, ScannerCrash, ScanTarget


def run_scan(
    target: ScanTarget,
    *,
    runner: Runner,
    fail_on: str = "high",
    accept: Iterable[AcceptRule] = (),
    skip: Mapping[str, str] | None = None,
    only: Iterable[str] = (),
    today: date | None = None,
    scanners: dict[str, Scanner] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ScanReport:
    """Run the scanners on ``target`` (each through ``runner``, in ``target.root``) into one report.

    ``skip`` maps a scanner to the reason it is not run (shown in the report).
    """
    registry = SCANNERS if scanners is None else scanners
    skip, only = dict(skip or {}), set(only)
    for name in (*skip, *only):
        if name not in registry:
            raise UsageError(f"unknown scanner {name!r}", hint=f"known: {', '.join(registry)}")
    rules = list(accept)
    report = ScanReport(fail_on=fail_on, today=today or date.today())
    for name, scanner in registry.items():
        if name in skip or (only and name not in only):
            why = skip.get(name, "not in --only")
            report.outcomes.append(Outcome(name, scanner.what, "skipped", why))
            continue
        if progress:
            progress(f"scanning {scanner.what} with {name}")
        report.outcomes.append(_run_one(scanner, target, runner, rules, report.today))
    return report


def _run_one(scanner: Scanner, target: ScanTarget, runner: Runner, rules: list[AcceptRule], today: date) -> Outcome:
    started = time.monotonic()
    try:
        plan = scanner.plan(target)
    except Exception as exc:
        # A scanner's own set-up failing (say, rendering the nginx config) is its crash, not the scan's.
        return Outcome(scanner.name, scanner.what, "crashed", f"{type(exc).__name__}: {exc}")
    if isinstance(plan, str):
        return Outcome(scanner.name, scanner.what, "skipped", plan)
    try:
        result = runner.run(plan, cwd=target.root, timeout=scanner.timeout, what=scanner.name)
        findings = scanner.parse(result, target)
    except (ScannerCrash, OperationError) as exc:
        return Outcome(scanner.name, scanner.what, "crashed", str(exc), seconds=time.monotonic() - started)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        return Outcome(scanner.name, scanner.what, "crashed", f"unexpected output ({type(exc).__name__}: {exc})",
                       seconds=time.monotonic() - started)
    findings = [f for f in findings if not target.excluded(f.location.split(":", 1)[0])]
    note = target.notes.get(scanner.name, "")
    return Outcome(scanner.name, scanner.what, "ran", note, tuple(apply_acceptances(findings, rules, today)),
                   seconds=time.monotonic() - started)


def scan_project(
    root: Path,
    *,
    runner: Runner,
    fail_on: str | None = None,
    skip: Iterable[str] = (),
    only: Iterable[str] = (),
    exclude: Iterable[str] = (),
    today: date | None = None,
    progress: Callable[[str], None] | None = None,
) -> ScanReport:
    """Scan ``root`` with the ``security:`` settings of its stageflow.yml (or pyproject.toml), else defaults."""
    from stageflow.config.loader import PROJECT_FILE, load_project

    config = load_project(root) if (root / PROJECT_FILE).is_file() else None
    sec = config.security if config else pyproject_security(root)
    with tempfile.TemporaryDirectory(prefix="stageflow-scan-") as work:
        target = ScanTarget(
            root=root,
            workdir=Path(work),
            exclude=[*(sec.exclude if sec else ()), *exclude],
            requirements=config.releases.requirements if config else "requirements.txt",
            vulnerability_service=sec.vulnerability_service if sec else "pypi",
            osv_url=sec.osv_url if sec else None,
            nginx_sites=(lambda: _nginx_sites(root)) if config else None,
        )
        skips = {**dict.fromkeys(sec.skip if sec else (), "security.skip in stageflow.yml"),
                 **dict.fromkeys(skip, "--skip")}
        rules = [AcceptRule(a.id, a.reason, a.expires) for a in (sec.accept if sec else ())]
        report = run_scan(target, runner=runner, fail_on=fail_on or (sec.fail_on if sec else "high"),
                          accept=rules, skip=skips, only=only, today=today,
                          progress=progress)
    return report


def pyproject_security(root: Path) -> Security | None:
    """``[tool.stageflow.security]`` of ``root/pyproject.toml``: a repository that is not a stageflow app
    (stageflow itself) keeps its scan settings and accepted findings there, validated like stageflow.yml."""
    import tomllib

    path = root / "pyproject.toml"
    if not path.is_file():
        return None
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}", hint="fix the TOML syntax") from None
    data = doc.get("tool", {}).get("stageflow", {}).get("security")
    if data is None:
        return None
    from pydantic import TypeAdapter, ValidationError

    from stageflow.config.loader import _keypath as keypath

    try:
        return TypeAdapter(Security).validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ("tool", "stageflow", "security", *(p for p in err["loc"] if p not in ("function-after",)))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            msg = "unknown key"
        raise ConfigError(f"{path}: {keypath(loc)}: {msg}") from None


def _nginx_sites(root: Path) -> dict[str, dict[str, str]]:
    """Every environment's generated site, as ``config nginx`` would write it (no files touched)."""
    from stageflow.config.loader import load_project
    from stageflow.errors import StageflowError
    from stageflow.generate.nginx import default_upstream_servers, render_site, site_options

    config = load_project(root)
    out, errors = {}, []
    for env in config.environments:
        try:
            opts = site_options(config, env, root=root)
        except StageflowError as exc:
            errors.append(f"{env}: {exc}")
            continue
        out[env] = render_site(opts, default_upstream_servers(config, env))
    if errors and not out:
        # Not one environment renders: that is the config's problem to report, not "nothing to scan".
        raise OperationError(f"cannot render the nginx config ({'; '.join(errors)})")
    return out
