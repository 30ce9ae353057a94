"""Pre-flight checks: each returns pass / warn / fail with a reason. Pure where it can be."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stageflow.config.loader import EnvContext
from stageflow.config.models import ProjectConfig
from stageflow.deploy.release import GitFacts
from stageflow.masking import is_secret_name
from stageflow.runner import Runner

Status = Literal["pass", "warn", "fail", "skipped"]
PLACEHOLDERS = ("changeme", "change-me", "change_me", "django-insecure", "your-secret", "placeholder", "xxxxxx")
CHECK_NAMES = ("git", "runtime", "config", "disk", "database")


@dataclass(frozen=True)
class Check:
    """One pre-flight verdict."""

    name: str
    status: Status
    reason: str


def check_git(facts: GitFacts, require_clean: bool) -> Check:
    """Clean tree: failure where required (production by default), a warning elsewhere."""
    if not facts.dirty:
        return Check("git", "pass", f"HEAD {facts.head[:7]} ({facts.subject[:60]}), clean tree")
    files = ", ".join(facts.dirty_files[:3]) + (" …" if len(facts.dirty_files) > 3 else "")
    if require_clean:
        return Check("git", "fail", f"uncommitted changes ({files}); commit or stash them")
    return Check("git", "warn", f"uncommitted changes ({files}); deploying them as a -dirty release")


def tracked_state(root: Path, config: ProjectConfig, runner: Runner) -> list[str]:
    """stageflow's own files that git tracks (state, releases, keys, logs, databases): should be none."""
    from stageflow.commands import git
    from stageflow.configmgr.gitignore import state_paths

    specs = [line.lstrip("/") + ("**" if line.endswith("/") else "") for line, _ in state_paths(root, config)]
    r = runner.run(git.ls_files(specs), cwd=root)
    return [f for f in r.stdout.split("\0") if f] if r.ok else []


def check_tracked(tracked: list[str]) -> Check | None:
    """A failing check when stageflow's own files are in git (``git add -A`` after a deploy), else None."""
    if not tracked:
        return None
    files = ", ".join(tracked[:3]) + (f" (+{len(tracked) - 3} more)" if len(tracked) > 3 else "")
    tops = " ".join(sorted({f.split("/", 1)[0] for f in tracked}))
    return Check("git", "fail", f"stageflow's own files are tracked by git ({files}): they hold state, keys and "
                                f"data; untrack them with 'git rm -r --cached {tops}' and commit (stageflow "
                                "config setup adds them to .gitignore)")


def check_config(ctx: EnvContext, runner: Runner | None = None) -> Check:
    """``stageflow config validate`` without Django's own check (the release's venv is not built yet).

    Errors fail the deploy, warnings are shown; secrets are named, never shown.
    """
    from stageflow.configmgr.validation import validate_environment

    report = validate_environment(ctx.root, ctx.name, run_django_check=False, runner=runner)
    if report.errors:
        first = report.errors[0]
        n = len(report.errors) - 1
        more = f" (+{n} more: stageflow config validate {ctx.name})" if n else ""
        return Check("config", "fail", f"{first.key}: {first.message}; fix: {first.fix}{more}")
    # validate reads the env file; stageflow.yml's `variables` reach the app too and are checked here.
    where = f"environments.{ctx.name}.variables"
    for key, value in ctx.env.variables.items():
        low = value.strip().lower()
        if any(p in low for p in PLACEHOLDERS):
            return Check("config", "fail", f"{where}.{key} holds a placeholder value; set a real one")
        if is_secret_name(key) and not value.strip():
            return Check("config", "fail", f"{where}.{key} is empty")
    n = len(ctx.app_vars)
    if report.warnings:
        w = report.warnings[0]
        extra = f" (+{len(report.warnings) - 1} more)" if len(report.warnings) > 1 else ""
        return Check("config", "warn", f"{w.key}: {w.message}{extra}")
    return Check("config", "pass", f"{n} variables validated, no placeholders")


def check_disk(path: Path, need_mb: int, db_bytes: int) -> Check:
    """Free space for the backup: at least ``need_mb`` and twice the database size."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    need = max(need_mb * 1024 * 1024, 2 * db_bytes)
    if free < need:
        return Check("disk", "fail", f"{free // 2**20} MiB free at {probe}, need {need // 2**20} MiB for the backup")
    return Check("disk", "pass", f"{free // 2**20} MiB free for backups")


def summarize(checks: list[Check]) -> str:
    """``git pass, config warn, ...``."""
    return ", ".join(f"{c.name} {c.status}" for c in checks)
