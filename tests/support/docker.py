"""A real Docker Engine for tests, and the base images built from Debian packages.

``scripts/docker-env.sh`` is the one script that prepares Docker for the tests, CI and
``demo.sh --runtime compose``: it installs/starts the engine, makes Compose v2 available and builds
(or finds, by content key) the python / postgres / redis / nginx images. No registry is reachable
here, so the tests point ``environments.<env>.images`` at those images; users keep the official ones.
Without an engine: a failure under ``CI``, a skip elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.compose import missing

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "docker-env.sh"
# Building the images from scratch takes a few minutes; a cached run well under a second.
BUILD_TIMEOUT = 1800


@dataclass(frozen=True)
class DockerImages:
    """The test images (stand-ins for python:3.12-slim, postgres:16, redis:7, nginx:1.27)."""

    python: str
    postgres: str
    redis: str
    nginx: str

    def overrides(self) -> dict[str, str]:
        """``environments.<env>.images`` pointing every generated service at these images."""
        return {"base": self.python, "db": self.postgres, "redis": self.redis, "nginx": self.nginx}


def prepare_docker() -> DockerImages:
    """Run ``scripts/docker-env.sh``; fail under CI, skip elsewhere, when Docker cannot run."""
    if shutil.which("docker") is None:
        missing("the docker CLI is not installed (scripts/docker-env.sh installs docker.io as root)")
    try:
        proc = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        missing(f"scripts/docker-env.sh did not finish in {BUILD_TIMEOUT}s")
        raise
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        missing(f"Docker is not usable here: {last}")
    found = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return DockerImages(
        python=found["STAGEFLOW_TEST_IMAGE_PYTHON"],
        postgres=found["STAGEFLOW_TEST_IMAGE_POSTGRES"],
        redis=found["STAGEFLOW_TEST_IMAGE_REDIS"],
        nginx=found["STAGEFLOW_TEST_IMAGE_NGINX"],
    )


@pytest.fixture(scope="session")
def docker_images() -> DockerImages:
    """The engine is up and the test images exist (built once per content key)."""
    return prepare_docker()


def docker(*args: str, timeout: float = 120, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI (no check; callers assert on the result)."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "DOCKER_HOST") if k in os.environ}
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=cwd, env={**base, **(env or {})})


@pytest.fixture
def compose_projects() -> Iterator[list[str]]:
    """Compose project names a test started; all of them (and their volumes) are removed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        docker("compose", "-p", name, "down", "-v", "--remove-orphans", "-t", "2", timeout=180)
