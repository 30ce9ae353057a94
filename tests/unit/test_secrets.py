"""Secret generation, and setup/generate of env files from templates (temp app dirs, no servers)."""

from __future__ import annotations

import stat
import string
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography.fernet import Fernet

from stageflow.config.envfile import ENCRYPTED_HEADER, EnvLine, format_env_lines, parse_env_lines, read_env_file
from stageflow.configmgr.generate import generate_env, setup_envs
from stageflow.configmgr.gitignore import is_ignored
from stageflow.configmgr.secrets import (
    DJANGO_ALPHABET,
    generate_secret,
    is_placeholder,
    weakness,
)
from stageflow.errors import ConfigError, UsageError
from stageflow.masking import MASK, masker

PROJECT = """\
project: practika
services:
  backend: {port: 8000, command: "gunicorn practika.wsgi --bind {host}:{port}"}
database: {engine: postgres, name: "practica_{env}", user: practica, password: "${POSTGRES_PASSWORD}"}
cache: {engine: redis}
environments:
  dev: {runtime: local, url: "http://127.0.0.1:8001"}
  staging: {runtime: local, url: "http://127.0.0.1:8002"}
  production: {runtime: local, aliases: [prod], url: "https://practika.example.com"}
"""
SECRETS = ("SECRET_KEY", "POSTGRES_PASSWORD")


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "stageflow.yml").write_text(PROJECT)
    return tmp_path


def env_values(app: Path, env: str) -> dict[str, str]:
    return read_env_file(app / f".env.{env}")


# --- secrets ---------------------------------------------------------------------------------


def test_django_secret_key_shape() -> None:
    keys = {generate_secret("django") for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert len(key) == 50
        assert set(key) <= set(DJANGO_ALPHABET)
        assert weakness(key, "django") is None


def test_passwords_are_long_and_url_safe() -> None:
    for kind in ("password", "token"):
        for _ in range(50):
            pw = generate_secret(kind)
            assert len(pw) >= 32
            assert quote(pw, safe="") == pw
            assert not pw.startswith("-")
    assert set(generate_secret("password")) <= set(string.ascii_letters + string.digits)
    assert len(generate_secret("password", 64)) == 64


def test_secret_kinds_refuse_short_lengths_and_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        generate_secret("password", 16)
    with pytest.raises(ValueError, match="unknown secret kind"):
        generate_secret("rot13")


@pytest.mark.parametrize(
    ("value", "kind", "weak"),
    [
        ("a" * 60, "django", True),
        ("short", None, True),
        ("abcdefghijklmnopqrstuvwxyz0123456789!@#$%^&*(-_=+)", "django", False),
        ("x9" * 20, "password", True),
    ],
)
def test_weakness(value: str, kind: str | None, weak: bool) -> None:
    assert (weakness(value, kind) is not None) is weak


@pytest.mark.parametrize(
    ("value", "placeholder"),
    [
        ("changeme", True),
        ("CHANGE_ME", True),
        ("django-insecure-abc", True),
        ("your-secret-key", True),
        ("<password>", True),
        ("xxxxxxxx", True),
        ("", False),
        ("8888", False),
        ("0", False),
        ("practika.example.com", False),
    ],
)
def test_placeholders(value: str, placeholder: bool) -> None:
    assert is_placeholder(value) is placeholder


# --- setup / generate ------------------------------------------------------------------------


def test_setup_creates_every_env_with_its_own_secrets(app: Path) -> None:
    result = setup_envs(app, environ={})
    assert [r.env for r in result.results] == ["dev", "staging", "production"]
    seen: dict[str, str] = {}
    for env in ("dev", "staging", "production"):
        path = app / f".env.{env}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        values = env_values(app, env)
        for key in SECRETS:
            assert values[key] not in seen, f"{env}'s {key} is shared with {seen.get(values[key])}"
            seen[values[key]] = env
        assert len(values["SECRET_KEY"]) == 50
    prod = env_values(app, "production")
    assert prod["DEBUG"] == "0"
    assert prod["ALLOWED_HOSTS"] == "practika.example.com"
    for key in ("SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT",
                "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD"):
        assert prod[key] == "1"
    assert int(prod["SECURE_HSTS_SECONDS"]) >= 31_536_000
    assert env_values(app, "dev")["DEBUG"] == "1"
    assert (app / ".env.production").read_text().startswith("# stageflow-template: production\n")


def test_setup_twice_changes_no_secret_and_rotate_changes_exactly_one(app: Path) -> None:
    setup_envs(app, environ={})
    before = {env: env_values(app, env) for env in ("dev", "staging", "production")}
    mtimes = {env: (app / f".env.{env}").stat().st_mtime_ns for env in before}
    second = setup_envs(app, environ={})
    assert all(not r.written for r in second.results)
    assert all(o.status == "kept" for r in second.results for o in r.outcomes)
    assert {env: env_values(app, env) for env in before} == before
    assert {env: (app / f".env.{env}").stat().st_mtime_ns for env in before} == mtimes

    res = generate_env(app, "prod", rotate=["SECRET_KEY"], environ={})
    after = env_values(app, "production")
    changed = {k for k in after if after[k] != before["production"][k]}
    assert changed == {"SECRET_KEY"}
    assert res.rotated == ["SECRET_KEY"]
    assert "restart production's services: stageflow deploy production" in res.notes
    assert env_values(app, "staging") == before["staging"]


def test_rotating_the_database_password_says_what_else_to_do(app: Path) -> None:
    generate_env(app, "production", environ={})
    res = generate_env(app, "production", rotate=["POSTGRES_PASSWORD"], environ={})
    assert any("ALTER ROLE practica" in n for n in res.notes)


def test_rotate_refuses_a_key_that_is_not_a_secret(app: Path) -> None:
    with pytest.raises(UsageError, match="--rotate DEBUG: not a secret of template production"):
        generate_env(app, "production", rotate=["DEBUG"], environ={})


def test_console_lines_never_show_secrets(app: Path) -> None:
    res = generate_env(app, "production", environ={})
    lines = [o.display() for o in res.outcomes]
    assert f"SECRET_KEY={MASK} (generated)" in lines
    assert "DEBUG=0 (added)" in lines
    for value in res.secret_values.values():
        assert all(value not in line for line in lines)
        assert masker.mask(f"x {value} y") == f"x {MASK} y"
    again = generate_env(app, "production", environ={})
    assert f"SECRET_KEY={MASK} (kept)" in [o.display() for o in again.outcomes]


def test_edited_values_and_unknown_keys_are_kept(app: Path) -> None:
    generate_env(app, "staging", environ={})
    path = app / ".env.staging"
    text = path.read_text().replace('ALLOWED_HOSTS="127.0.0.1,localhost"', 'ALLOWED_HOSTS="staging.local"')
    path.write_text(text + 'EXTRA_SETTING="a $b \\"c\\""\n')
    res = generate_env(app, "staging", environ={})
    values = env_values(app, "staging")
    assert values["ALLOWED_HOSTS"] == "staging.local"
    assert values["EXTRA_SETTING"] == 'a $b "c"'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the rewrite also fixed the mode
    assert {o.key: o.status for o in res.outcomes}["EXTRA_SETTING"] == "kept"


def test_placeholder_and_missing_secrets_are_generated(app: Path) -> None:
    (app / ".env.production").write_text('SECRET_KEY="changeme"\nDEBUG="0"\n')
    res = generate_env(app, "production", environ={})
    statuses = {o.key: o.status for o in res.outcomes}
    assert statuses["SECRET_KEY"] == "generated"
    assert statuses["POSTGRES_PASSWORD"] == "generated"
    assert statuses["DEBUG"] == "kept"
    assert env_values(app, "production")["SECRET_KEY"] != "changeme"


def test_shared_secret_is_reported_without_its_value(app: Path) -> None:
    setup_envs(app, environ={})
    staging_key = env_values(app, "staging")["SECRET_KEY"]
    path = app / ".env.production"
    lines = [EnvLine(key=ln.key, value=staging_key) if ln.key == "SECRET_KEY" else ln
             for ln in parse_env_lines(path.read_text())]
    path.write_text(format_env_lines(lines))
    res = generate_env(app, "production", environ={})
    assert res.shared == [("SECRET_KEY", "staging", "SECRET_KEY")]
    assert any("--rotate SECRET_KEY" in w for w in res.warnings)
    assert all(staging_key not in w for w in res.warnings)


def test_custom_template_is_selected_recorded_and_reused(app: Path) -> None:
    tdir = app / "config" / "templates"
    tdir.mkdir(parents=True)
    (tdir / "custom.env.j2").write_text(
        '{% extends "builtin/production.env.j2" %}\n'
        "{% block extra %}\n"
        "# --- custom ---\n"
        'SIGNING_SALT={{ secret("SIGNING_SALT", kind="hex") }}\n'
        "CACHE_PASSWORD={{ secret('CACHE_PASSWORD', kind='password') }}\n"
        "CACHE_URL=redis://:{{ secret('CACHE_PASSWORD', kind='password') }}@{{ redis_host }}:6379/0\n"
        "GREETING={{ 'hello # world \"quoted\" $HOME' | q }}\n"
        "{% endblock %}\n"
    )
    res = generate_env(app, "production", template="custom", environ={})
    assert res.template.name == "custom" and not res.template.builtin
    values = env_values(app, "production")
    assert len(values["SIGNING_SALT"]) == 64
    assert values["CACHE_URL"] == f"redis://:{values['CACHE_PASSWORD']}@127.0.0.1:6379/0"
    assert values["GREETING"] == 'hello # world "quoted" $HOME'
    assert values["DEBUG"] == "0"
    secret_flags = {o.key: o.secret for o in res.outcomes}
    assert secret_flags["SIGNING_SALT"] and secret_flags["CACHE_URL"] and not secret_flags["GREETING"]
    # Without --template the recorded one is used again; rotating the password re-derives the URL.
    res2 = generate_env(app, "production", rotate=["CACHE_PASSWORD"], environ={})
    assert res2.template.name == "custom"
    new = env_values(app, "production")
    assert new["CACHE_PASSWORD"] != values["CACHE_PASSWORD"]
    assert new["CACHE_URL"] == f"redis://:{new['CACHE_PASSWORD']}@127.0.0.1:6379/0"
    assert new["SIGNING_SALT"] == values["SIGNING_SALT"]


def test_app_template_named_after_the_env_wins(app: Path) -> None:
    tdir = app / "config" / "templates"
    tdir.mkdir(parents=True)
    (tdir / "staging.env.j2").write_text('SECRET_KEY={{ secret("SECRET_KEY", kind="django") }}\nONLY_HERE=1\n')
    res = generate_env(app, "staging", environ={})
    assert res.template.label == "config/templates/staging.env.j2"
    assert set(env_values(app, "staging")) == {"SECRET_KEY", "ONLY_HERE"}


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{% if %}", "config/templates/bad.env.j2:1:"),
        ("A={{ nope }}", "'nope' is undefined"),
        ("A={{ 'x y' }} junk\nB=\"x\" junk\n", "(rendered):2: unexpected text"),
        ('X={{ secret("OTHER") }}\n', "secret('OTHER') must also be assigned"),
        ('X={{ secret("X", kind="weird") }}\n', "unknown secret kind"),
    ],
)
def test_template_errors_are_one_line_config_errors(app: Path, template: str, message: str) -> None:
    tdir = app / "config" / "templates"
    tdir.mkdir(parents=True)
    (tdir / "bad.env.j2").write_text(template)
    with pytest.raises(ConfigError) as exc:
        generate_env(app, "dev", template="bad", environ={})
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)
    assert not (app / ".env.dev").exists()


def test_unknown_template_and_environment(app: Path) -> None:
    with pytest.raises(UsageError, match="template 'custom' not found"):
        generate_env(app, "production", template="custom", environ={})
    with pytest.raises(UsageError, match="unknown environment 'qa'"):
        generate_env(app, "qa", environ={})


def test_gitignore_is_fixed_but_templates_stay_tracked(app: Path) -> None:
    (app / ".gitignore").write_text("*.pyc\n*.env*\n")
    setup_envs(app, environ={})
    text = (app / ".gitignore").read_text()
    assert text.startswith("*.pyc\n*.env*\n")
    for env in ("dev", "staging", "production"):
        assert is_ignored(text, f".env.{env}")
    assert not is_ignored(text, "config/templates/custom.env.j2")
    setup_envs(app, environ={})
    assert (app / ".gitignore").read_text() == text  # idempotent


def test_gitignore_created_when_missing(app: Path) -> None:
    setup_envs(app, environ={})
    assert ".env.*" in (app / ".gitignore").read_text().splitlines()


def test_encrypt_then_keep_then_decrypt(app: Path) -> None:
    environ = {"STAGEFLOW_MASTER_KEY": Fernet.generate_key().decode()}
    res = generate_env(app, "production", encrypt=True, environ=environ)
    path = app / ".env.production"
    assert res.encrypted and path.read_text().startswith(ENCRYPTED_HEADER)
    secret = read_env_file(path, environ=environ)["SECRET_KEY"]
    assert secret not in path.read_text()
    again = generate_env(app, "production", environ=environ)  # no flag: stays encrypted, nothing changes
    assert again.encrypted and not again.written
    plain = generate_env(app, "production", encrypt=False, environ=environ)
    assert plain.written and not plain.encrypted
    assert read_env_file(path)["SECRET_KEY"] == secret
    with pytest.raises(ConfigError, match="STAGEFLOW_MASTER_KEY"):
        generate_env(app, "production", encrypt=True, environ={})
