"""The Practika stack with its cache: a real, password-protected Redis behind the app's /health/."""

from __future__ import annotations

import time

import pytest
import yaml

from stageflow.config.envfile import read_env_file, write_env_file
from tests.support.app import App
from tests.support.redis import RedisServer

pytestmark = pytest.mark.e2e


def use_redis(app: App, server: RedisServer) -> None:
    """Point the app's cache at ``server``, the password coming from dev's env file."""
    cfg_path = app.root / "stageflow.yml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["cache"] = {"engine": "redis", "url": f"redis://:${{REDIS_PASSWORD}}@{server.host}:{server.port}/0"}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env_file = app.root / ".env.dev"
    values = read_env_file(env_file)
    values["REDIS_PASSWORD"] = server.password
    write_env_file(env_file, values)
    app.commit("cache on Redis")


def wait_status(app: App, env: str, healthy: bool, seconds: float = 15) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    while True:
        row = app.status()[env]
        if row["healthy"] is healthy or time.monotonic() > deadline:
            return row
        time.sleep(0.3)


def test_cache_outage_fails_health_and_deploys_then_recovers(practika: App, redis_server: RedisServer) -> None:
    app = practika
    use_redis(app, redis_server)
    app.sf("deploy", "dev")
    code, body = app.get("dev")
    assert code == 200 and body["database"] == "ok" and body["cache"] == "ok", body
    # The app reaches this Redis with the password stageflow passed it as REDIS_URL.
    assert redis_server.client().info("clients")["connected_clients"] >= 2
    release = app.status()["dev"]["release"]

    redis_server.stop()
    down = wait_status(app, "dev", healthy=False)
    assert down["healthy"] is False and down["release"] == release
    assert "HTTP 503" in str(down["reason"]) and "cache" in str(down["reason"]), down
    # A deploy during the outage fails its health gate and changes nothing.
    app.touch_commit("deployed during the outage")
    failed = app.sf("deploy", "dev", check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "health gate failed" in failed.stderr and "cache" in failed.stderr, failed.stderr
    assert app.status()["dev"]["release"] == release

    redis_server.start()
    back = wait_status(app, "dev", healthy=True)
    assert back["healthy"] is True and back["release"] == release
    app.sf("deploy", "dev")
    assert app.status()["dev"]["release"] != release
    assert redis_server.password not in app.all_text()
