"""Every file `stageflow config compose ENV` writes starts for real on a Docker Engine.

The Practika example app (Django + PostgreSQL + Redis, behind nginx outside dev) is built with
`docker build` on the Debian-built base images, then the generated file is brought up with
`docker compose up --wait`: every container must become healthy, the app must answer through the
published port, and the seed's recovery line `docker compose -f docker-compose.prod.yml exec backend
env` must work against it.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from stageflow.cli.main import app as cli_app
from tests.support.docker import DockerImages, compose_projects, docker, docker_images  # noqa: F401
from tests.support.nginx import free_port

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "practika"


def _project(root: Path, images: DockerImages, env: str, port: int) -> dict[str, Any]:
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", "data"))
    data: dict[str, Any] = yaml.safe_load((root / "stageflow.yml").read_text())
    # A project name of its own: the engine is shared by every test run on this machine.
    data["project"] = f"pk{uuid.uuid4().hex[:8]}"
    data["database"] = {"engine": "postgres", "name": "practica_{env}", "user": "practica"}
    data["cache"] = {"engine": "redis"}
    # The example's own command, `--bind {host}:{port}`: what gunicorn gets must be a real address.
    environment = dict(data["environments"][env])
    environment.update({"runtime": "compose", "url": f"http://127.0.0.1:{port}", "images": images.overrides()})
    if env == "staging":
        environment["proxy"] = {"basic_auth": False}
    data["environments"] = {env: environment}
    data["promotion"] = [env]
    (root / "stageflow.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    (root / f".env.{env}").write_text(
        "SECRET_KEY=compose-file-test-secret\n"
        "POSTGRES_PASSWORD=compose-file-test-password\n"
        f"DATABASE_URL=postgres://practica:compose-file-test-password@db:5432/practica_{env}\n"
        "REDIS_URL=redis://redis:6379/0\n"
        "ALLOWED_HOSTS=127.0.0.1,localhost\n"
    )
    return data


def _cli(*args: str) -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli_app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("env", ["dev", "staging", "production"])
def test_generated_compose_file_runs(env: str, tmp_path: Path, docker_images: DockerImages,  # noqa: F811
                                     compose_projects: list[str]) -> None:  # noqa: F811
    root = tmp_path / "practika"
    port = free_port()
    _project(root, docker_images, env, port)
    _cli("config", "compose", env, "--root", str(root))
    if env != "dev":
        _cli("config", "nginx", env, "--root", str(root))
    name = "docker-compose.prod.yml" if env == "production" else f"docker-compose.{env}.yml"
    path = root / name
    spec = yaml.safe_load(path.read_text())
    assert "{host}" not in spec["services"]["backend"]["command"]
    assert "--bind 0.0.0.0:8000" in spec["services"]["backend"]["command"]
    project = spec["name"]
    compose_projects.append(project)

    built = docker("build", "-q", "--force-rm", "--build-arg", f"BASE_IMAGE={docker_images.python}",
                   "-t", spec["services"]["backend"]["image"], str(root), timeout=600,
                   env={"DOCKER_BUILDKIT": "0"})
    assert built.returncode == 0, built.stderr[-2000:]
    up = docker("compose", "-f", str(path), "up", "-d", "--wait", "--no-build", "--wait-timeout", "240",
                cwd=root, timeout=300)
    if up.returncode != 0:
        logs = docker("compose", "-f", str(path), "logs", "--no-color", "--tail", "30", cwd=root).stdout
        pytest.fail(f"compose up failed: {up.stderr[-1500:]}\n{logs[-4000:]}")

    # The app answers through the published port (nginx outside dev), database and cache included.
    deadline, last = time.monotonic() + 60, ""
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/health/", timeout=5)
            if r.status_code == 200:
                break
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(1)
    else:
        pytest.fail(f"no healthy answer on port {port}: {last}")
    body = r.json()
    assert body["status"] == "ok", body
    if env != "dev":
        # The hardened site config sits in front: its security headers are on the response.
        assert r.headers.get("x-content-type-options") == "nosniff"

    # The seed's recovery line works as written against the generated file.
    ex = docker("compose", "-f", name, "exec", "-T", "backend", "env", cwd=root)
    assert ex.returncode == 0, ex.stderr
    assert f"STAGEFLOW_ENV={env}" in ex.stdout.splitlines()
