"""Class 4: masking covers URL credentials of every scheme and secret-like keys, in linear time."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from stageflow.config.envfile import read_env_file, write_env_file
from stageflow.masking import MASK, Masker, is_secret_name
from tests.hardening.support import run
from tests.support.app import App
from tests.support.compose import write_practika_project

PW = "s3cr3t-Pa55w0rd"


@pytest.mark.parametrize("url", [
    f"redis://:{PW}@127.0.0.1:6379/0",
    f"rediss://default:{PW}@cache.internal:6380",
    f"postgres://practica:{PW}@db/practica",
    f"postgresql+psycopg://u:{PW}@h:5432/db?sslmode=require",
    f"amqp://guest:{PW}@mq//vhost",
    f"https://deploy:{PW}@hooks.example.com/x",
    f"mongodb+srv://u:{PW}@cluster0/?retryWrites=true",
])
def test_url_passwords_of_every_scheme(url: str) -> None:
    out = Masker().mask(f"connecting to {url} now")
    assert PW not in out and MASK in out
    assert out.startswith("connecting to ") and out.endswith(" now")


@pytest.mark.parametrize("pw", ["p@ss@word!", "a:b:c@d", "pw@home:x"])
def test_passwords_holding_at_signs_and_colons_are_masked_whole(pw: str) -> None:
    m = Masker()
    m.add_env({"REDIS_URL": f"redis://user:{pw}@host:6379"})
    out = m.mask(f"url redis://user:{pw}@host:6379 and alone: {pw}!")
    assert out == f"url redis://user:{MASK}@host:6379 and alone: {MASK}!"


@pytest.mark.parametrize("key", ["DB_PASS", "MYSQL_PWD", "GITHUB_TOKEN", "STRIPE_API_KEY", "AWS_SECRET_ACCESS_KEY",
                                 "SENTRY_DSN", "SIGNING_KEY", "PASSWORD_SALT", "SLACK_WEBHOOK_URL", "KEY"])
def test_secret_like_keys(key: str) -> None:
    assert is_secret_name(key)
    m = Masker()
    m.add_env({key: "value-of-the-secret"})
    assert m.mask(f"{key}=value-of-the-secret") == f"{key}={MASK}"


def test_overlapping_secrets_leave_no_fragment() -> None:
    m = Masker()
    m.extend(["abcdef-1234", "1234-ghijkl", "zz-abcdef"])
    out = m.mask("x zz-abcdef-1234-ghijkl y")
    assert out == f"x {MASK} y"


def test_big_values_do_not_stall_validate(tmp_path: Path) -> None:
    root = write_practika_project(tmp_path / "app")
    env = root / ".env.dev"
    values = read_env_file(env)
    values["NOTE"] = "a" * 100_000  # under the 128 KB value limit
    values["OTHER_URL"] = "x://" * 25_000
    write_env_file(env, values)
    t0 = time.monotonic()
    proc = run(root, "config", "validate", "dev", "--no-django-check")
    assert time.monotonic() - t0 < 10
    assert "Traceback" not in proc.stderr


def test_config_setup_never_prints_secret_like_values(tmp_path: Path) -> None:
    root = write_practika_project(tmp_path / "app")
    env = root / ".env.dev"
    values = read_env_file(env)
    values.update({"DB_PASS": "db-pass-canary-0123", "REDIS_URL": f"redis://:{PW}@127.0.0.1:6379/0"})
    write_env_file(env, values)
    proc = run(root, "config", "setup")
    assert proc.returncode == 0, proc.stderr
    for secret in ("db-pass-canary-0123", PW):
        assert secret not in proc.stdout + proc.stderr
    for log in (root / "logs").glob("workflow_*.log"):
        assert PW not in log.read_text()


@pytest.mark.e2e
def test_url_password_never_reaches_console_logs_or_state(practika: App) -> None:
    env = practika.root / ".env.dev"
    values = read_env_file(env)
    values["MIRROR_URL"] = f"redis://:{PW}@127.0.0.1:6399/0"
    values["BROKER_URL"] = f"amqp://guest:{PW}@127.0.0.1:5672//"
    write_env_file(env, values)
    cfg = practika.root / "stageflow.yml"
    # The release command prints the URLs and fails: its error reaches the console, the workflow
    # log and the journal in state.db, each of which must mask them.
    cfg.write_text(cfg.read_text().replace(
        "release: python manage.py migrate --noinput",
        """release: 'echo "error: no cache at $MIRROR_URL or $BROKER_URL" >&2; exit 3'"""))
    practika.commit("a release command that prints the URLs")
    proc = practika.sf("deploy", "dev", check=False)
    assert proc.returncode == 1
    assert f"redis://:{MASK}@127.0.0.1:6399/0" in proc.stderr
    practika.sf("status")
    practika.sf("history", "dev")
    # What stageflow itself says: console, workflow logs, the journal. (The app's own output goes
    # verbatim into its 0600 logs under .stageflow/run/, like any process's stdout.)
    text = "\n".join([*practika.outputs, *(p.read_text() for p in (practika.root / "logs").glob("*.log"))])
    assert PW not in text
    assert list((practika.root / "logs").glob("workflow_*.log"))
    with sqlite3.connect(practika.root / ".stageflow" / "state.db") as con:
        rows = con.execute("SELECT error FROM deployments").fetchall()
    assert rows and all(PW not in (r[0] or "") for r in rows) and any(MASK in (r[0] or "") for r in rows)
