"""Config models and loader: defaults, interpolation, overrides, key-path errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from stageflow.config.durations import parse_duration
from stageflow.config.loader import database_url, load_env_context, load_project
from stageflow.errors import ConfigError, UsageError

BASE = """
project: shop
services:
  web: {command: "gunicorn app --bind {host}:{port}", port: 8000, release: "python manage.py migrate"}
  worker: {command: "python worker.py"}
database: {engine: postgres, name: "shop_{env}", user: shop, password: "${POSTGRES_PASSWORD}"}
environments:
  dev: {url: "http://127.0.0.1:8001"}
  production: {url: "https://shop.example.com", aliases: [prod], variables: {API_URL: "${API_URL:-https://api}"}}
"""


def write(tmp_path: Path, text: str = BASE, **env_files: str) -> Path:
    (tmp_path / "stageflow.yml").write_text(text)
    for name, body in env_files.items():
        (tmp_path / f".env.{name}").write_text(body)
    return tmp_path


@pytest.mark.parametrize(("value", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("250ms", 0.25), (7, 7),
                                                 ("1.5s", 1.5)])
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "-1s", True, "5 parsecs"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


def test_defaults_and_aliases(tmp_path: Path) -> None:
    cfg = load_project(write(tmp_path))
    assert cfg.promotion_order == ["dev", "production"]
    assert cfg.canonical_env("prod") == "production"
    assert cfg.canonical_env("qa") is None
    assert cfg.web_service[0] == "web"
    assert cfg.services["web"].health is not None and cfg.services["web"].health.path == "/health/"
    assert cfg.backups.keep == 10 and cfg.monitoring.thresholds.cpu == 80


def test_env_file_and_shell_override(tmp_path: Path) -> None:
    root = write(tmp_path, production='POSTGRES_PASSWORD="from-file-pw"\nSECRET_KEY="k" \n')
    ctx = load_env_context(root, "prod", environ={})
    assert ctx.name == "production"
    assert ctx.database.password == "from-file-pw"
    assert ctx.database.name == "shop_production"
    assert ctx.app_vars["API_URL"] == "https://api"
    assert ctx.app_vars["DATABASE_URL"] == "postgres://shop:from-file-pw@127.0.0.1:5432/shop_production"
    over = load_env_context(root, "production", environ={"POSTGRES_PASSWORD": "custom-password", "API_URL": "x"})
    assert over.database.password == "custom-password"
    assert over.app_vars["API_URL"] == "x"
    assert over.require_clean_git is True


def test_missing_variable_names_key_and_file(tmp_path: Path) -> None:
    root = write(tmp_path)
    expected = r"database\.password: variable \$\{POSTGRES_PASSWORD\} is not set.*\.env\.dev"
    with pytest.raises(ConfigError, match=expected):
        load_env_context(root, "dev", environ={})


def test_unknown_key_and_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"environments\.dev\.colour: unknown key"):
        load_project(write(tmp_path, BASE.replace('dev: {url:', 'dev: {colour: 1, url:')))
    with pytest.raises(ConfigError, match=r"services: exactly one service must have a port"):
        load_project(write(tmp_path, BASE.replace("{command: \"python worker.py\"}", "{port: 9000}")))
    with pytest.raises(ConfigError, match=r"promotion: 'qa' is not an environment"):
        load_project(write(tmp_path, BASE + "promotion: [dev, qa]\n"))
    with pytest.raises(ConfigError, match=r"stageflow.yml:3:\d+"):
        load_project(write(tmp_path, "project: x\nservices:\n  - : [\n"))


def test_batch_size_is_checked_against_replicas(tmp_path: Path) -> None:
    batched = BASE.replace('dev: {url:', 'dev: {replicas: 3, batch_size: 2, url:')
    assert load_project(write(tmp_path, batched)).environments["dev"].batch == 2
    assert load_project(write(tmp_path)).environments["dev"].batch == 1  # one at a time by default
    with pytest.raises(ConfigError, match=r"environments\.dev: batch_size 4 is more than replicas \(3\)"):
        load_project(write(tmp_path, batched.replace("batch_size: 2", "batch_size: 4")))
    with pytest.raises(ConfigError, match=r"environments\.dev\.batch_size: .*greater than or equal to 1"):
        load_project(write(tmp_path, batched.replace("batch_size: 2", "batch_size: 0")))


def test_env_names_validated(tmp_path: Path) -> None:
    root = write(tmp_path, dev='POSTGRES_PASSWORD="p"\n')
    with pytest.raises(UsageError, match="invalid environment name"):
        load_env_context(root, "dev;rm -rf /", environ={})
    with pytest.raises(UsageError, match=r"unknown environment 'qa'.*production \(prod\)"):
        load_env_context(root, "qa", environ={})


def test_database_url_quotes_credentials(tmp_path: Path) -> None:
    root = write(tmp_path, dev='POSTGRES_PASSWORD="p@ss:w/rd"\n')
    ctx = load_env_context(root, "dev", environ={})
    assert database_url(ctx.database, root) == "postgres://shop:p%40ss%3Aw%2Frd@127.0.0.1:5432/shop_dev"
    sqlite = load_env_context(write(tmp_path, BASE.replace("engine: postgres", "engine: sqlite")), "dev", environ={})
    assert sqlite.app_vars["DATABASE_URL"] == f"sqlite:///{tmp_path}/data/dev.sqlite3"


def test_variables_may_use_env_project_and_the_release(tmp_path: Path) -> None:
    from stageflow.runner import Runner
    from stageflow.runtimes.local import LocalRuntime

    text = BASE.replace('dev: {url: "http://127.0.0.1:8001"}', 'dev: {url: "http://127.0.0.1:8001", variables: '
                        '{SCHEMA: "{project}_{env}", SENTRY_RELEASE: "${STAGEFLOW_RELEASE}", '
                        'WHERE: "${STAGEFLOW_ENV}", JSON: \'{"a": 1}\'}}')
    ctx = load_env_context(write(tmp_path, text, dev="POSTGRES_PASSWORD=x\n"), "dev", environ={})
    assert ctx.app_vars["SCHEMA"] == "shop_dev" and ctx.app_vars["WHERE"] == "dev"
    assert ctx.app_vars["JSON"] == '{"a": 1}'  # braces that are no placeholder are left alone
    env = LocalRuntime(ctx, Runner()).process_env("20260101T000000Z-abc1234", "blue", 18001, None)
    assert env["SENTRY_RELEASE"] == env["STAGEFLOW_RELEASE"] == "20260101T000000Z-abc1234"
    assert env["SCHEMA"] == "shop_dev"
