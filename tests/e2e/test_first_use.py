"""What a new user meets first, with a plain (non-Django) app configured from the README's minimal
example: a promotion builds its virtualenv once and says so truthfully.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.app import App, free_port, git, teardown_app
from tests.support.tiny import SERVER

pytestmark = pytest.mark.e2e


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[App]:
    root = tmp_path / "app"
    root.mkdir()
    (root / "server.py").write_text(SERVER)
    (root / "requirements.txt").write_text("# the app needs nothing beyond the standard library\n")
    ports = {"dev": free_port(), "staging": free_port()}
    # The README's minimal stageflow.yml, with test ports; every other key keeps its default.
    (root / "stageflow.yml").write_text(f"""
project: plain
services:
  web:
    command: python server.py {{port}}
    port: 8000
    health: /health/
database: {{engine: none}}
environments:
  dev: {{url: "http://127.0.0.1:{ports['dev']}", app_ports: [{free_port()}, {free_port()}], watch: 500ms}}
  staging: {{url: "http://127.0.0.1:{ports['staging']}", app_ports: [{free_port()}, {free_port()}], watch: 500ms,
            variables: {{SENTRY_RELEASE: "${{STAGEFLOW_RELEASE}}", SCHEMA: "plain_{{env}}"}}}}
""")
    git(root, "init", "-q")
    app = App(root, ports)
    app.sf("config", "setup")
    app.commit("plain app")
    yield app
    teardown_app(app)


def test_a_promotion_builds_one_shared_read_only_venv_and_says_built_then_reused(plain: App) -> None:
    plain.sf("full")
    details = {env: next(s["detail"] for s in plain.last_deployment(env)["steps"] if s["name"] == "release")
               for env in ("dev", "staging")}
    assert "built in" in details["dev"] and "reused" in details["staging"], details
    venvs = [p for p in (plain.root / ".stageflow" / "venvs").iterdir() if not p.name.startswith(".")]
    assert len(venvs) == 1  # content-addressed by the requirements hash, shared by both envs
    assert venvs[0].name in details["staging"]
    cfg = venvs[0] / "pyvenv.cfg"
    assert stat.S_IMODE(cfg.stat().st_mode) & 0o222 == 0  # read-only: no env can change another's
    # the app's variables got {env} and the release filled in
    web = next(p for p in plain.instance_processes() if "::staging::" in p.environ()["STAGEFLOW_INSTANCE"])
    env = web.environ()
    assert env["SENTRY_RELEASE"] == env["STAGEFLOW_RELEASE"] == plain.status()["staging"]["release"]
    assert env["SCHEMA"] == "plain_staging"
    assert os.path.realpath(env["VIRTUAL_ENV"]) == os.path.realpath(venvs[0])
