"""`runtime: compose` end to end on a real Docker Engine: the example app with PostgreSQL, Redis, nginx.

One stack per module (staging and production of one app, built once): `full` promotes one image,
a production deploy under constant load through nginx switches versions with zero failed requests,
a release failing its health check is rolled back with zero failed requests, `rollback` returns
to the previous image with the data intact, and the seed's recovery lines work on the stack.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.app import STAGEFLOW, git
from tests.support.docker import DockerImages, docker, docker_images  # noqa: F401
from tests.support.load import Load
from tests.support.nginx import free_port

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "practika"
ENVS = ("staging", "production")
PROJECT = f"pk{uuid.uuid4().hex[:8]}"


@dataclass
class Stack:
    root: Path
    ports: dict[str, int]
    outputs: list[str] = field(default_factory=list)

    def sf(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        env.pop("STAGEFLOW_MASTER_KEY", None)
        proc = subprocess.run([str(STAGEFLOW), *args], cwd=self.root, capture_output=True, text=True, env=env,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        self.outputs += [proc.stdout, proc.stderr]
        if check and proc.returncode != 0:
            raise AssertionError(f"stageflow {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def status(self) -> dict[str, dict[str, Any]]:
        return {row["env"]: row for row in json.loads(self.sf("status", "--json").stdout)}

    def last_deployment(self, env: str) -> dict[str, Any]:
        rows: list[dict[str, Any]] = json.loads(self.sf("history", env, "--json", "--limit", "1").stdout)
        return rows[0]

    def get(self, env: str, path: str = "/health/") -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.ports[env]}{path}", timeout=10)

    def commit(self, message: str) -> None:
        git(self.root, "add", "-A")
        git(self.root, "commit", "-qm", message)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_images: DockerImages) -> Iterator[Stack]:  # noqa: F811
    root = tmp_path_factory.mktemp("compose") / "practika"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", "staticfiles", "data"))
    ports = {env: free_port() for env in ENVS}
    data: dict[str, Any] = yaml.safe_load((root / "stageflow.yml").read_text())
    # A project name of its own: the engine is shared by every test run on this machine.
    data["project"] = PROJECT
    data["database"] = {"engine": "postgres", "name": "practica_{env}", "user": "practica",
                        "password": "${POSTGRES_PASSWORD}"}
    data["cache"] = {"engine": "redis"}
    data["services"]["backend"]["health"]["deadline"] = "90s"
    data["environments"] = {
        env: {"runtime": "compose", "url": f"http://127.0.0.1:{ports[env]}", "images": docker_images.overrides(),
              "required": ["SECRET_KEY"], "watch": "3s", "drain": "3s",
              # Staging without basic auth (the load probes carry no password); production here is
              # plain http on loopback, which `config validate` rightly refuses for production.
              **({"proxy": {"basic_auth": False}} if env == "staging" else {"skip_checks": ["config"]})}
        for env in ENVS
    }
    data["promotion"] = list(ENVS)
    (root / "stageflow.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    s = Stack(root, ports)
    for env in ENVS:
        # What the configuration manager writes for a compose environment (service names as hosts).
        s.sf("config", "generate", env)
    # The upstream is runtime state (a cutover rewrites it); everything else generated is committed.
    with open(root / ".gitignore", "a") as fh:
        fh.write("deploy/nginx/*/upstream-*.conf\n")
    git(root, "init", "-q")
    for env in ENVS:
        s.sf("config", "compose", env)
        s.sf("config", "nginx", env)
    s.commit("Practika on compose")
    yield s
    for env in ENVS:
        s.sf("down", env, check=False)
        project = f"{PROJECT}-{env}"
        docker("compose", "-p", project, "down", "-v", "--remove-orphans", "-t", "1", timeout=180)
    docker("image", "rm", "-f", *[line for line in docker("images", "--format", "{{.Repository}}:{{.Tag}}")
                                   .stdout.split() if line.startswith((f"{PROJECT}/", f"{PROJECT}-"))], timeout=120)


def _image_ids(row: dict[str, Any]) -> set[str]:
    return {c["image_id"] for c in row["services"]["backend"]["containers"] if c["state"] == "running"}


def test_full_promotes_one_image_to_staging_and_production(stack: Stack) -> None:
    stack.sf("full", "--yes")
    st = stack.status()
    for env in ENVS:
        assert st[env]["healthy"], st[env]
        r = stack.get(env)
        assert r.status_code == 200 and r.json()["version"] == st[env]["release"]
        assert r.headers.get("x-content-type-options") == "nosniff"  # the hardened site serves the deploy
    assert st["staging"]["release"] == st["production"]["release"]
    ids = _image_ids(st["staging"])
    assert len(ids) == 1 and ids == _image_ids(st["production"])
    # The seed's recovery line, as written, against the deployed stack.
    ex = docker("compose", "-f", "docker-compose.prod.yml", "exec", "-T", "backend", "env", cwd=stack.root)
    assert ex.returncode == 0, ex.stderr
    assert "STAGEFLOW_ENV=production" in ex.stdout.splitlines()
    check = stack.sf("exec", "production", "--", "python", "manage.py", "check")
    assert "System check identified no issues" in check.stdout + check.stderr


def test_production_deploy_under_load_has_no_failed_request(stack: Stack) -> None:
    before = stack.get("production").json()["version"]
    (stack.root / "notes" / "marker.py").write_text("VERSION_MARK = 2\n")
    stack.commit("a new version")
    with Load(stack.ports["production"], max_seconds=300) as load:
        stack.sf("deploy", "production", "--yes")
        time.sleep(1)
    after = stack.get("production").json()["version"]
    assert after != before
    assert load.failures == [] and load.ok > 20, (load.ok, load.failures[:5])
    st = stack.status()["production"]
    assert st["release"] == after and st["healthy"]
    assert len(_image_ids(st)) == 1  # the old containers were drained and removed


def test_unhealthy_release_is_rolled_back_without_failed_requests(stack: Stack) -> None:
    good = stack.get("production").json()["version"]
    health = stack.root / "practika" / "health.py"
    health.write_text(health.read_text().replace("\nHEALTHY = True\n", "\nHEALTHY = False\n", 1))
    stack.commit("break health")
    with Load(stack.ports["production"], max_seconds=300) as load:
        proc = stack.sf("deploy", "production", "--yes", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert load.failures == [] and load.ok > 5, (load.ok, load.failures[:5])
    assert stack.get("production").json()["version"] == good
    dep = stack.last_deployment("production")
    names = [s["name"] for s in dep["steps"]]
    assert dep["outcome"] == "failed" and "rollback" in names
    leftover = docker("ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}-production",
                      "--filter", "label=com.docker.compose.service=backend", "--format", "{{.Names}}")
    assert len(leftover.stdout.split()) == 1, leftover.stdout  # the failed release's container is gone
    health.write_text(health.read_text().replace("\nHEALTHY = False\n", "\nHEALTHY = True\n", 1))
    stack.commit("fix health")


def test_rollback_returns_to_the_previous_image_and_keeps_rows(stack: Stack) -> None:
    current = stack.status()["production"]
    rows = stack.sf("exec", "production", "--", "python", "manage.py", "shell", "-c",
                    "from notes.models import Note; Note.objects.create(title='kept'); print(Note.objects.count())")
    count = int(rows.stdout.strip().splitlines()[-1])
    stack.sf("rollback", "production", "--yes")
    st = stack.status()["production"]
    assert st["release"] != current["release"] and st["healthy"]
    assert _image_ids(st) != _image_ids(current)
    again = stack.sf("exec", "production", "--", "python", "manage.py", "shell", "-c",
                     "from notes.models import Note; print(Note.objects.count())")
    assert int(again.stdout.strip().splitlines()[-1]) == count


def _notes(stack: Stack, code: str) -> str:
    out = stack.sf("exec", "production", "--", "python", "manage.py", "shell", "-c",
                   "from notes.models import Note; " + code).stdout
    return out.strip().splitlines()[-1]


def test_backup_restore_through_the_db_container_matches_exactly(stack: Stack) -> None:
    _notes(stack, "Note.objects.create(title='before the backup'); print('ok')")
    before = _notes(stack, "print(sorted(Note.objects.values_list('title', flat=True)))")
    created = stack.sf("backup", "create", "production")
    assert "sha256" in created.stdout + created.stderr
    _notes(stack, "Note.objects.create(title='after the backup'); print('ok')")
    assert "after the backup" in _notes(stack, "print(sorted(Note.objects.values_list('title', flat=True)))")
    stack.sf("backup", "restore", "production", "--yes")
    assert _notes(stack, "print(sorted(Note.objects.values_list('title', flat=True)))") == before
    verify = stack.sf("backup", "verify", "production")
    assert verify.returncode == 0


def test_kill_9_mid_deploy_next_deploy_recovers_without_stray_containers(stack: Stack) -> None:
    (stack.root / "notes" / "marker.py").write_text("VERSION_MARK = 3\n")
    stack.commit("another version")
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    proc = subprocess.Popen([str(STAGEFLOW), "deploy", "production", "--yes"], cwd=stack.root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # kill it once its new container exists
        names = docker("ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}-production",
                       "--filter", "label=com.docker.compose.service=backend", "--format", "{{.Names}}").stdout.split()
        if len(names) > 1 or proc.poll() is not None:
            break
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with Load(stack.ports["production"], max_seconds=300) as load:
        stack.sf("deploy", "production", "--yes")
    assert load.failures == [], load.failures[:5]
    st = stack.status()["production"]
    assert st["healthy"] and st["mismatch"] is None
    names = docker("ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}-production",
                   "--filter", "label=com.docker.compose.service=backend", "--format", "{{.Names}}").stdout.split()
    assert len(names) == 1, names
