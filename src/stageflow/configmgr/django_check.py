"""Run Django's ``manage.py check --deploy --fail-level WARNING`` and parse its findings.

The check runs with the environment's variables (so it judges the settings production will
really get), through :class:`stageflow.runner.Runner` (masked logging, timeout), with the app's
venv python when stageflow created one (``.stageflow/venvs/<hash>/bin/python``), else
the interpreter running stageflow.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stageflow.masking import masker
from stageflow.runner import Result, Runner

#: Django check ids that are about one setting, so they can be reported under that key.
CHECK_SETTINGS = {
    "security.W001": "MIDDLEWARE",
    "security.W004": "SECURE_HSTS_SECONDS",
    "security.W005": "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "security.W008": "SECURE_SSL_REDIRECT",
    "security.W009": "SECRET_KEY",
    "security.W012": "SESSION_COOKIE_SECURE",
    "security.W016": "CSRF_COOKIE_SECURE",
    "security.W018": "DEBUG",
    "security.W020": "ALLOWED_HOSTS",
    "security.W021": "SECURE_HSTS_PRELOAD",
}

_LINE = re.compile(r"^(?P<obj>\S.*?): \((?P<id>[\w.]+\.(?P<level>[CEWID])\d+)\) (?P<msg>.*)\Z")
_HINT = re.compile(r"^\s+HINT: (?P<hint>.*)\Z")


@dataclass(frozen=True)
class DjangoMessage:
    """One ``obj: (id) message`` line of Django's check output, with its hint."""

    check_id: str
    level: str
    obj: str
    message: str
    hint: str | None = None

    @property
    def setting(self) -> str | None:
        """The setting this check is about, when known."""
        return CHECK_SETTINGS.get(self.check_id)


def parse_check_output(text: str) -> list[DjangoMessage]:
    """Every finding in the output of ``manage.py check`` (stdout and stderr concatenated)."""
    found: list[DjangoMessage] = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            found.append(DjangoMessage(m["id"], m["level"], m["obj"], m["msg"].strip()))
            continue
        h = _HINT.match(line)
        if h and found and found[-1].hint is None:
            last = found[-1]
            found[-1] = DjangoMessage(last.check_id, last.level, last.obj, last.message, h["hint"].strip())
    return found


def django_python(root: Path, env: str) -> str:
    """The python of the newest venv stageflow made, else the current interpreter.

    Venvs are content-addressed and shared by every environment (``.stageflow/venvs/<hash>/``);
    ``venv_dir: .stageflow/venvs/{env}`` keeps them per environment (``…/<env>/<hash>/``).
    """
    venvs = root / ".stageflow" / "venvs"
    candidates = [p for p in [*venvs.glob("*/bin/python"), *(venvs / env).glob("*/bin/python")] if p.is_file()]
    if not candidates:
        return sys.executable
    return str(max(candidates, key=lambda p: p.stat().st_mtime))


def run_deploy_check(
    root: Path,
    env: str,
    app_vars: Mapping[str, str],
    *,
    runner: Runner | None = None,
    timeout: float = 120.0,
) -> tuple[Result, list[DjangoMessage]]:
    """Run the deploy check for ``env`` with ``app_vars``; returns the raw result and the findings."""
    runner = runner or Runner()
    argv = [django_python(root, env), "manage.py", "check", "--deploy", "--fail-level", "WARNING"]
    result = runner.run(argv, cwd=root, env=dict(app_vars), timeout=timeout, what="manage.py check --deploy")
    return result, parse_check_output(result.stdout + "\n" + result.stderr)


def failure_line(result: Result) -> str:
    """The last meaningful line of a check that crashed (e.g. ``ImproperlyConfigured: ...``)."""
    lines = [ln.strip() for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
    return result.brief() if not lines else masker.mask(lines[-1])[:300]
