"""Generated Compose files pass the real ``docker compose config`` (Compose v2; no engine needed)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stageflow.config.loader import load_project
from stageflow.generate.compose import write_compose
from tests.support.compose import require_compose, write_practika_project

pytestmark = pytest.mark.integration

ENVS = ("dev", "staging", "production")


@pytest.fixture(scope="module")
def compose_cli() -> list[str]:
    return require_compose()


def compose(cli: list[str], path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli, "-f", str(path), *args],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        # Interpolation must not depend on the caller's shell: nothing generated uses variables.
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(path.parent)},
    )


@pytest.mark.parametrize("env", ENVS)
def test_generated_file_passes_compose_config(compose_cli: list[str], tmp_path: Path, env: str) -> None:
    root = write_practika_project(tmp_path / "app")
    path = write_compose(load_project(root), env, root=root)
    result = compose(compose_cli, path, "config", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no warnings either (e.g. unset variables)


@pytest.mark.parametrize("env", ["staging", "production"])
def test_compose_normalised_model_keeps_the_isolation(compose_cli: list[str], tmp_path: Path, env: str) -> None:
    root = write_practika_project(tmp_path / "app")
    path = write_compose(load_project(root), env, root=root)
    result = compose(compose_cli, path, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    networks = model["networks"]
    internal = next(n for key, n in networks.items() if key == "internal")
    assert internal["internal"] is True
    services = model["services"]
    for name in ("db", "redis"):
        assert not services[name].get("ports"), name
        assert list(services[name]["networks"]) == ["internal"]
    for name, svc in services.items():
        assert svc["healthcheck"]["test"], name
        assert svc["read_only"] is True, name
        assert svc["cap_drop"] == ["ALL"], name
    # Compose resolved env_file relative to the file: the secrets reach db and the app.
    assert services["db"]["environment"]["POSTGRES_PASSWORD"] == "test-password"
    assert services["backend"]["environment"]["STAGEFLOW_ENV"] == env


def test_file_written_elsewhere_still_resolves(compose_cli: list[str], tmp_path: Path) -> None:
    root = write_practika_project(tmp_path / "app")
    path = write_compose(load_project(root), "production", root=root, out_dir=root / "deploy" / "compose")
    result = compose(compose_cli, path, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    build = json.loads(result.stdout)["services"]["backend"]["build"]
    assert Path(build["context"]) == root


def test_an_encrypted_env_file_reaches_compose_only_through_its_plain_copy(compose_cli: list[str],
                                                                          tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    from stageflow.config.envfile import write_env_text

    root = write_practika_project(tmp_path / "app")
    env_file = root / ".env.production"
    key = {"STAGEFLOW_MASTER_KEY": Fernet.generate_key().decode()}
    write_env_text(env_file, env_file.read_text(), root=root, mode=0o600, encrypt=True, environ=key)
    path = write_compose(load_project(root), "production", root=root)
    text = path.read_text()
    assert ".env.production" not in text and "test-password" not in text
    assert ".stageflow/compose/production.secrets.env" in text
    # Without the copy (no deploy running) the file still works: the copy is optional.
    result = compose(compose_cli, path, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert "POSTGRES_PASSWORD" not in services["db"].get("environment", {})
    # With it (what the runtime writes around `docker compose up`), the secrets reach db and the app.
    copy = root / ".stageflow" / "compose" / "production.secrets.env"
    copy.parent.mkdir(parents=True)
    copy.write_text('POSTGRES_PASSWORD="test-password"\n')
    services = json.loads(compose(compose_cli, path, "config", "--format", "json").stdout)["services"]
    assert services["db"]["environment"]["POSTGRES_PASSWORD"] == "test-password"
    assert services["backend"]["environment"]["POSTGRES_PASSWORD"] == "test-password"


def test_cleanup_goes_on_when_an_engine_does_not_answer(tmp_path: Path) -> None:
    from tests.support.app import STAGEFLOW

    root = write_practika_project(tmp_path / "app")
    text = (root / "stageflow.yml").read_text().replace("ssh://deploy@prod.example.com",
                                                        f"unix://{tmp_path}/no-such-docker.sock")
    (root / "stageflow.yml").write_text(text)
    proc = subprocess.run([str(STAGEFLOW), "cleanup", "production"], cwd=root, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[production] cleanup of the runtime skipped:" in proc.stdout + proc.stderr
