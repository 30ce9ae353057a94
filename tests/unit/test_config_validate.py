"""validate_environment: one test per rule, each asserting the key the finding names."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stageflow.config.envfile import format_env_lines, parse_env_lines, read_env_file, write_env_text
from stageflow.configmgr.django_check import parse_check_output
from stageflow.configmgr.generate import generate_env, setup_envs
from stageflow.configmgr.validation import ValidationReport, validate_environment
from stageflow.runner import Result, Runner

PROJECT = """\
project: practika
services:
  backend: {port: 8000, command: "gunicorn practika.wsgi --bind {host}:{port}"}
database: {engine: postgres, user: practica, password: "${POSTGRES_PASSWORD}"}
environments:
  dev: {runtime: local, url: "http://127.0.0.1:8001"}
  staging: {runtime: compose, url: "http://localhost:8002", required: [SENTRY_DSN]}
  production: {runtime: local, aliases: [prod], url: "https://practika.example.com"}
"""
NOW = dt.datetime(2030, 6, 1, tzinfo=dt.UTC)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "stageflow.yml").write_text(PROJECT)
    setup_envs(tmp_path, environ={})
    set_key(tmp_path, "staging", "SENTRY_DSN", "https://abc@sentry.example.com/1")
    return tmp_path


def set_key(app: Path, env: str, key: str, value: str | None) -> None:
    """Set (or with None remove) ``key`` in ``.env.<env>``, keeping everything else."""
    path = app / f".env.{env}"
    lines = [ln for ln in parse_env_lines(path.read_text()) if ln.key != key]
    text = format_env_lines(lines)
    if value is not None:
        text += format_env_lines(parse_env_lines(f"{key}=x\n"))[: len(key) + 1] + _q(value) + "\n"
    write_env_text(path, text)


def _q(value: str) -> str:
    from stageflow.config.envfile import quote_env_value

    return quote_env_value(value)


def validate(app: Path, env: str = "production", **kw: Any) -> ValidationReport:
    kw.setdefault("environ", {})
    kw.setdefault("run_django_check", False)
    kw.setdefault("now", NOW)
    return validate_environment(app, env, **kw)


def error_keys(report: ValidationReport) -> list[str]:
    return [i.key for i in report.errors]


def warning_keys(report: ValidationReport) -> list[str]:
    return [i.key for i in report.warnings]


def test_generated_files_validate_clean(app: Path) -> None:
    for env in ("dev", "staging", "production"):
        report = validate(app, env)
        assert report.ok, report.errors
        assert report.warnings == []
    assert {"file", "keys", "production", "ports", "tls"} <= set(validate(app).checks)


# --- the five production failures of the acceptance list ---------------------------------------


def test_production_fails_with_debug_on(app: Path) -> None:
    set_key(app, "production", "DEBUG", "1")
    report = validate(app)
    assert not report.ok
    assert error_keys(report) == ["DEBUG"]
    assert "DEBUG=0" in report.errors[0].fix


def test_production_fails_with_allowed_hosts_star(app: Path) -> None:
    set_key(app, "production", "ALLOWED_HOSTS", "*")
    report = validate(app)
    assert error_keys(report) == ["ALLOWED_HOSTS"]


@pytest.mark.parametrize("key", ["SECRET_KEY", "POSTGRES_PASSWORD", "ALLOWED_HOSTS"])
def test_production_fails_with_changeme(app: Path, key: str) -> None:
    set_key(app, "production", key, "changeme")
    report = validate(app)
    assert key in error_keys(report)
    item = next(i for i in report.errors if i.key == key)
    assert "placeholder" in item.message


def test_production_fails_with_a_secret_shared_with_staging(app: Path) -> None:
    staging = read_env_file(app / ".env.staging")
    set_key(app, "production", "SECRET_KEY", staging["SECRET_KEY"])
    report = validate(app)
    assert error_keys(report) == ["SECRET_KEY"]
    assert "staging" in report.errors[0].message
    assert staging["SECRET_KEY"] not in report.errors[0].message + report.errors[0].fix
    # Elsewhere sharing is a warning (it is still worth fixing).
    staging_report = validate(app, "staging")
    assert staging_report.ok and warning_keys(staging_report) == ["SECRET_KEY"]


def _cert(
    directory: Path,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    host: str = "practika.example.com",
    key: ec.EllipticCurvePrivateKey | None = None,
) -> tuple[Path, Path]:
    """A real self-signed certificate and its key, as PEM files."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def _use_tls(app: Path, cert: Path, key: Path) -> None:
    set_key(app, "production", "TLS_CERT_FILE", str(cert.relative_to(app)))
    set_key(app, "production", "TLS_KEY_FILE", str(key.relative_to(app)))


def test_production_fails_with_an_expired_certificate(app: Path) -> None:
    cert, key = _cert(app / "certs", not_before=NOW - dt.timedelta(days=400), not_after=NOW - dt.timedelta(days=1))
    _use_tls(app, cert, key)
    report = validate(app)
    assert error_keys(report) == ["TLS_CERT_FILE"]
    assert "expired" in report.errors[0].message


# --- TLS ---------------------------------------------------------------------------------------


def test_valid_certificate_passes_and_soon_expiring_warns(app: Path) -> None:
    cert, key = _cert(app / "certs", not_before=NOW - dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=90))
    _use_tls(app, cert, key)
    assert validate(app).items == []
    cert, key = _cert(app / "certs", not_before=NOW - dt.timedelta(days=80), not_after=NOW + dt.timedelta(days=5))
    report = validate(app)
    assert report.ok and warning_keys(report) == ["TLS_CERT_FILE"]
    assert "expires in" in report.warnings[0].message


def test_certificate_and_key_must_match(app: Path) -> None:
    cert, _ = _cert(app / "a", not_before=NOW - dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=90))
    _, other_key = _cert(app / "b", not_before=NOW - dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=90))
    _use_tls(app, cert, other_key)
    assert error_keys(validate(app)) == ["TLS_KEY_FILE"]


def test_missing_tls_files_and_uncovered_host(app: Path) -> None:
    set_key(app, "production", "TLS_CERT_FILE", "certs/none.pem")
    assert error_keys(validate(app)) == ["TLS_KEY_FILE"]  # set both or neither
    set_key(app, "production", "TLS_KEY_FILE", "certs/none-key.pem")
    assert set(error_keys(validate(app))) == {"TLS_CERT_FILE", "TLS_KEY_FILE"}
    cert, key = _cert(app / "certs", not_before=NOW - dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=90),
                      host="other.example.com")
    _use_tls(app, cert, key)
    report = validate(app)
    assert report.ok and warning_keys(report) == ["TLS_CERT_FILE"]
    assert "does not cover practika.example.com" in report.warnings[0].message


# --- other production rules ----------------------------------------------------------------------


def test_production_needs_https_secure_cookies_and_hsts(app: Path) -> None:
    (app / "stageflow.yml").write_text(PROJECT.replace("https://practika.example.com", "http://practika.example.com"))
    set_key(app, "production", "SESSION_COOKIE_SECURE", "0")
    set_key(app, "production", "CSRF_COOKIE_SECURE", "false")
    set_key(app, "production", "SECURE_SSL_REDIRECT", None)
    set_key(app, "production", "SECURE_HSTS_SECONDS", "0")
    set_key(app, "production", "SECURE_HSTS_PRELOAD", "0")
    report = validate(app)
    assert set(error_keys(report)) == {
        "environments.production.url",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
    }
    assert warning_keys(report) == ["SECURE_HSTS_PRELOAD"]


def test_shell_environment_overrides_the_file_like_a_deploy(app: Path) -> None:
    assert error_keys(validate(app, environ={"DEBUG": "yes"})) == ["DEBUG"]


def test_allowed_hosts_without_the_url_host_warns(app: Path) -> None:
    set_key(app, "production", "ALLOWED_HOSTS", "www.example.org")
    report = validate(app)
    assert report.ok and warning_keys(report) == ["ALLOWED_HOSTS"]


def test_literal_database_password_in_stageflow_yml(app: Path) -> None:
    (app / "stageflow.yml").write_text(PROJECT.replace('"${POSTGRES_PASSWORD}"', "hunter2hunter2"))
    assert "database.password" in error_keys(validate(app, "dev"))


# --- keys and types --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("DEBUG", "maybe", "must be a boolean"),
        ("SECURE_HSTS_SECONDS", "one year", "must be an integer"),
        ("GUNICORN_WORKERS", "-1", "must not be negative"),
        ("APP_PORT", "70000", "port number"),
        ("DATABASE_URL", "mysql://u@h/db", "postgres://"),
        ("REDIS_URL", "http://127.0.0.1:6379", "redis://"),
        ("CALLBACK_URL", "not a url", "must be a URL"),
        ("CALLBACK_URL", "http://h:port/", "not a valid URL"),
    ],
)
def test_type_errors_name_the_key(app: Path, key: str, value: str, fragment: str) -> None:
    set_key(app, "dev", key, value)
    report = validate(app, "dev")
    assert error_keys(report) == [key]
    assert fragment in report.errors[0].message


def test_required_keys_from_template_and_config(app: Path) -> None:
    set_key(app, "staging", "SENTRY_DSN", None)
    set_key(app, "staging", "ALLOWED_HOSTS", None)
    set_key(app, "staging", "SECURE_HSTS_SECONDS", "")
    report = validate(app, "staging")
    assert set(error_keys(report)) == {"SENTRY_DSN", "ALLOWED_HOSTS", "SECURE_HSTS_SECONDS"}
    fixes = {i.key: i.fix for i in report.errors}
    assert fixes["ALLOWED_HOSTS"] == "stageflow config generate staging"


def test_weak_secret_is_an_error_in_production_and_a_warning_elsewhere(app: Path) -> None:
    set_key(app, "production", "SECRET_KEY", "a" * 20 + "b" * 40)
    report = validate(app, "production")
    assert "SECRET_KEY" in error_keys(report)
    assert "--rotate SECRET_KEY" in next(i.fix for i in report.errors if i.key == "SECRET_KEY")
    set_key(app, "dev", "SECRET_KEY", "c" * 20 + "d" * 40)
    set_key(app, "dev", "STRIPE_API_KEY", "short")
    report = validate(app, "dev")
    assert error_keys(report) == []
    assert sorted(warning_keys(report)) == ["SECRET_KEY", "STRIPE_API_KEY"]


def test_a_value_set_in_the_shell_counts_as_present(app: Path) -> None:
    # The original usage line: POSTGRES_PASSWORD=custom-password ./scripts/workflow-orchestrator.sh staging
    set_key(app, "staging", "POSTGRES_PASSWORD", None)
    assert "POSTGRES_PASSWORD" in error_keys(validate_environment(app, "staging", run_django_check=False,
                                                                  environ={}))
    report = validate_environment(app, "staging", run_django_check=False,
                                  environ={"POSTGRES_PASSWORD": "custom-password"})
    assert "POSTGRES_PASSWORD" not in error_keys(report)
    assert "POSTGRES_PASSWORD" in warning_keys(report)  # 15 characters: said, not refused, outside production


def test_missing_env_file_is_one_error(app: Path) -> None:
    (app / ".env.production").unlink()
    report = validate(app)
    assert error_keys(report) == [".env.production"]
    assert report.errors[0].fix == "stageflow config generate production"


def test_malformed_env_file_is_reported_with_its_line(app: Path) -> None:
    path = app / ".env.dev"
    path.write_text(path.read_text() + "oops\n")
    report = validate(app, "dev")
    assert len(report.errors) == 1
    assert f".env.dev:{len(path.read_text().splitlines())}: expected KEY=value" in report.errors[0].message


def test_readable_env_file(app: Path) -> None:
    os.chmod(app / ".env.production", 0o644)
    os.chmod(app / ".env.dev", 0o640)
    prod = validate(app)
    assert error_keys(prod) == [".env.production"]
    assert prod.errors[0].fix == "chmod 600 .env.production"
    dev = validate(app, "dev")
    assert dev.ok and warning_keys(dev) == [".env.dev"]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is part of the test environment")
def test_env_file_tracked_by_git(app: Path) -> None:
    subprocess.run(["git", "init", "-q", str(app)], check=True)
    subprocess.run(["git", "-C", str(app), "add", "-f", ".env.dev"], check=True)
    report = validate(app, "dev")
    assert not report.ok
    assert report.errors[0].fix.startswith("git rm --cached .env.dev")
    assert validate(app, "staging").ok  # ignored by the .gitignore setup wrote, not tracked


def test_dollar_that_compose_would_expand_warns_for_compose_envs(app: Path) -> None:
    path = app / ".env.staging"
    path.write_text(path.read_text() + "PRICE=5$\nOK_ESCAPED=\"a\\$b\"\nOK_SINGLE='a$b'\nTEMPLATE=\"${HOME}\"\n")
    report = validate(app, "staging")
    assert report.ok
    assert sorted(warning_keys(report)) == ["PRICE", "TEMPLATE"]
    assert "\\$" in report.warnings[0].fix


def test_ports_clash_on_the_same_host(app: Path) -> None:
    clash = PROJECT.replace("http://localhost:8002", "http://localhost:8001")
    (app / "stageflow.yml").write_text(clash)
    report = validate(app, "staging")
    assert "environments.staging.url" in error_keys(report)
    assert "dev" in report.errors[0].message
    apps = PROJECT.replace(
        'url: "http://127.0.0.1:8001"}', 'url: "http://127.0.0.1:8001", app_ports: [9001, 9002]}'
    ).replace('url: "http://localhost:8002",', 'url: "http://localhost:8002", app_ports: [9002, 9003],')
    (app / "stageflow.yml").write_text(apps)
    assert error_keys(validate(app, "staging")) == ["environments.staging.app_ports"]
    # Another host may use the same port.
    other = PROJECT.replace("http://localhost:8002", "http://10.0.0.5:8001")
    (app / "stageflow.yml").write_text(other)
    assert validate(app, "staging").ok


def test_encrypted_env_file_needs_the_key(app: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = Fernet.generate_key().decode()
    generate_env(app, "production", encrypt=True, environ={"STAGEFLOW_MASTER_KEY": key})
    # The loader reads env files with os.environ (see the report), so the key goes there too.
    monkeypatch.setenv("STAGEFLOW_MASTER_KEY", key)
    assert validate(app, environ={"STAGEFLOW_MASTER_KEY": key}).ok
    monkeypatch.delenv("STAGEFLOW_MASTER_KEY")
    report = validate(app)
    assert error_keys(report) == ["STAGEFLOW_MASTER_KEY"]
    # Other environments compare their secrets with it only when they can read it.
    assert validate(app, "staging").warnings[0].key == "secrets"


# --- Django's deploy check, folded into the report ------------------------------------------------

DJANGO_OUTPUT = """\
SystemCheckError: System check identified some issues:

ERRORS:
notes.Note: (models.E001) something is wrong with a model.
\tHINT: Fix the model.

WARNINGS:
?: (security.W001) You do not have 'django.middleware.security.SecurityMiddleware' in your MIDDLEWARE.
?: (security.W018) You should not have DEBUG set to True in deployment.
?: (myapp.I001) Just so you know.

System check identified 4 issues (0 silenced).
"""


class CannedRunner(Runner):
    """A runner that answers with fixed output instead of running anything."""

    def __init__(self, stdout: str = "", stderr: str = "", returncode: int = 1) -> None:
        super().__init__()
        self.canned = (stdout, stderr, returncode)
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    def run(self, argv: Sequence[str], **kw: Any) -> Result:
        self.calls.append((list(argv), dict(kw.get("env") or {})))
        out, err, rc = self.canned
        return Result(tuple(argv), rc, out, err, 0.01)


def test_parse_check_output() -> None:
    found = parse_check_output(DJANGO_OUTPUT)
    assert [(m.check_id, m.level, m.obj) for m in found] == [
        ("models.E001", "E", "notes.Note"),
        ("security.W001", "W", "?"),
        ("security.W018", "W", "?"),
        ("myapp.I001", "I", "?"),
    ]
    assert found[0].hint == "Fix the model."
    assert found[1].setting == "MIDDLEWARE"


def test_django_findings_become_items_without_duplicates(app: Path) -> None:
    (app / "manage.py").write_text("# a Django project\n")
    set_key(app, "production", "DEBUG", "1")
    runner = CannedRunner(stderr=DJANGO_OUTPUT)
    report = validate(app, run_django_check=True, runner=runner)
    assert "django" in report.checks
    argv, env = runner.calls[0]
    assert argv[1:] == ["manage.py", "check", "--deploy", "--fail-level", "WARNING"]
    assert env["DEBUG"] == "1" and env["SECRET_KEY"] == read_env_file(app / ".env.production")["SECRET_KEY"]
    assert error_keys(report) == ["DEBUG", "models.E001", "MIDDLEWARE"]  # W018 folded into our DEBUG error
    assert report.errors[1].fix == "Fix the model."
    assert warning_keys(report) == ["myapp.I001"]


def test_django_crash_and_missing_django(app: Path) -> None:
    (app / "manage.py").write_text("# a Django project\n")
    crash = CannedRunner(stderr="Traceback ...\ndjango.core.exceptions.ImproperlyConfigured: DEBUG must be a boolean\n")
    report = validate(app, run_django_check=True, runner=crash)
    assert error_keys(report) == ["manage.py check"]
    assert "ImproperlyConfigured: DEBUG must be a boolean" in report.errors[0].message
    missing = CannedRunner(stderr="ModuleNotFoundError: No module named 'django'\n")
    report = validate(app, run_django_check=True, runner=missing)
    assert report.ok and warning_keys(report) == ["manage.py check"]


def test_django_check_uses_the_apps_venv_python(app: Path) -> None:
    (app / "manage.py").write_text("# a Django project\n")
    py = app / ".stageflow" / "venvs" / "production" / "abc123" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text("")
    runner = CannedRunner(returncode=0)
    validate(app, run_django_check=True, runner=runner)
    assert runner.calls[0][0][0] == str(py)


def test_unset_variable_in_stageflow_yml_is_an_item(app: Path) -> None:
    (app / "stageflow.yml").write_text(PROJECT.replace('"gunicorn practika.wsgi --bind {host}:{port}"',
                                                       '"${APP_CMD}"'))
    report = validate(app, "dev")
    assert error_keys(report) == ["APP_CMD"]
    assert report.errors[0].fix == "set it in the shell or in .env.dev"
    assert validate(app, "dev", environ={"APP_CMD": "gunicorn practika.wsgi --bind {host}:{port}"}).ok


def test_unset_notifier_variable_is_a_warning_not_an_error(app: Path) -> None:
    # A Slack webhook nobody set disables Slack; it must never block a deploy or `status`.
    (app / "stageflow.yml").write_text(PROJECT + 'alerts: {slack: {webhook: "${SLACK_WEBHOOK}"}}\n')
    report = validate(app, "dev")
    assert report.ok
    assert [(w.key, w.message) for w in report.warnings if w.key.startswith("alerts")] == [
        ("alerts.slack.webhook", "${SLACK_WEBHOOK} is not set: slack notifications are disabled")]
    enabled = validate(app, "dev", environ={"SLACK_WEBHOOK": "https://hooks.example.com/x"})
    assert enabled.ok and not [w for w in enabled.warnings if w.key.startswith("alerts")]
