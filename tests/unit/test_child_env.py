"""Children get an explicit environment: the app's variables, never stageflow's own (canary test)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stageflow.config.loader import load_env_context
from stageflow.runner import Runner
from stageflow.runtimes.local import LocalRuntime

CANARY = "canary-master-key-must-not-leak-7f3a"


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "app"
    root.mkdir()
    (root / "stageflow.yml").write_text(yaml.safe_dump({
        "project": "tiny",
        "services": {"web": {"command": "sleep 30 # {port}", "port": 8000, "release": "env > release-env.txt",
                             "health": {"path": "/"}}},
        "database": {"engine": "none"},
        "environments": {"dev": {"url": "http://127.0.0.1:8001", "variables": {"APP_SETTING": "from-config"}}},
    }))
    (root / ".env.dev").write_text("SECRET_KEY=app-secret-value-0123456789\n")
    monkeypatch.setenv("STAGEFLOW_MASTER_KEY", CANARY)
    monkeypatch.setenv("UNRELATED_SHELL_VARIABLE", "shell-only")
    return root


def test_master_key_never_reaches_the_release_command(app: Path) -> None:
    ctx = load_env_context(app, "dev")
    release_dir = app / "rel"
    release_dir.mkdir()
    rt = LocalRuntime(ctx, Runner())
    assert rt.run_release_command(release_dir, "r1", None, timeout=30) == "env > release-env.txt"
    seen = dict(line.split("=", 1) for line in (release_dir / "release-env.txt").read_text().splitlines()
                if "=" in line)
    assert "STAGEFLOW_MASTER_KEY" not in seen and CANARY not in (release_dir / "release-env.txt").read_text()
    assert "UNRELATED_SHELL_VARIABLE" not in seen
    # ...while the app's own variables do reach it.
    assert seen["SECRET_KEY"] == "app-secret-value-0123456789" and seen["APP_SETTING"] == "from-config"
    assert seen["STAGEFLOW_ENV"] == "dev"


def test_runner_gives_exactly_the_environment_asked_for(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STAGEFLOW_MASTER_KEY", CANARY)
    runner = Runner()
    monkeypatch.setenv("OPERATOR_SETTING", "kept")
    inherited = runner.run(["/usr/bin/env"])
    # stageflow's own tools (git, nginx, docker) keep the operator's environment, but not the master key.
    assert "OPERATOR_SETTING=kept" in inherited.stdout.splitlines()
    assert CANARY not in inherited.stdout and "STAGEFLOW_MASTER_KEY" not in inherited.stdout
    assert CANARY in runner.run(["/usr/bin/env"], env={"STAGEFLOW_MASTER_KEY": CANARY}).stdout  # asked for
    explicit = runner.run(["/usr/bin/env"], env={"ONLY": "this"}, inherit_env=False)
    assert explicit.stdout.split() == ["ONLY=this"]
    with open(tmp_path / "out", "wb") as out:
        proc = runner.spawn(["/usr/bin/env"], cwd=tmp_path, env={"ONLY": "spawned"}, stdout=out)
        assert proc.wait(10) == 0
    assert (tmp_path / "out").read_text().split() == ["ONLY=spawned"]
