"""A Practika stack on the compose runtime (PostgreSQL, Redis, nginx) for e2e tests and benchmarks.

The app gets a project name of its own (the Docker Engine is shared by every run on the machine),
the Debian-built test images, env files from `stageflow config generate`, and the generated stack
files committed, as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.app import EXAMPLE, STAGEFLOW, git
from tests.support.docker import DockerImages, docker
from tests.support.nginx import free_port


@dataclass
class Stack:
    """One app whose environments run on the compose runtime."""

    root: Path
    project: str
    ports: dict[str, int]
    outputs: list[str] = field(default_factory=list)
    #: Extra environment of every CLI run (e.g. STAGEFLOW_MASTER_KEY for encrypted env files).
    env: dict[str, str] = field(default_factory=dict)

    #: Variables every CLI run of this stack gets on top of the test's environment.
    env: dict[str, str] = field(default_factory=dict)

    def sf(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run the CLI in the app root (classic builder: the base images are local only)."""
        env = {**os.environ, "DOCKER_BUILDKIT": "0", **self.env}
        env.pop("STAGEFLOW_MASTER_KEY", None)
        env.update(self.env)
        proc = subprocess.run([str(STAGEFLOW), *args], cwd=self.root, capture_output=True, text=True, env=env,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        self.outputs += [proc.stdout, proc.stderr]
        if check and proc.returncode != 0:
            raise AssertionError(f"stageflow {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def status(self) -> dict[str, dict[str, Any]]:
        """``status --json`` by env."""
        return {row["env"]: row for row in json.loads(self.sf("status", "--json").stdout)}

    def last_deployment(self, env: str) -> dict[str, Any]:
        """The newest deployment of ``env``, steps included."""
        rows: list[dict[str, Any]] = json.loads(self.sf("history", env, "--json", "--limit", "1").stdout)
        return rows[0]

    def get(self, env: str, path: str = "/health/") -> httpx.Response:
        """GET through the env's nginx container."""
        return httpx.get(f"http://127.0.0.1:{self.ports[env]}{path}", timeout=10)

    def commit(self, message: str) -> None:
        """Commit everything."""
        git(self.root, "add", "-A")
        git(self.root, "commit", "-qm", message)

    def web_containers(self, env: str) -> list[str]:
        """Names of the env's web containers, any state."""
        return docker("ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}-{env}",
                      "--filter", "label=com.docker.compose.service=backend", "--format", "{{.Names}}").stdout.split()

    def teardown(self) -> None:
        """Every container, volume and image of the stack."""
        for env in self.ports:
            self.sf("down", env, check=False)
            docker("compose", "-p", f"{self.project}-{env}", "down", "-v", "--remove-orphans", "-t", "1", timeout=180)
            # One-off containers (a release command killed before it started) are no part of `down`.
            left = docker("ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={self.project}-{env}").stdout
            if left.split():
                docker("rm", "-f", "-v", *left.split(), timeout=120)
        images = [i for i in docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
                  if i.startswith((f"{self.project}/", f"{self.project}-"))]
        if images:
            docker("image", "rm", "-f", *images, timeout=120)


def make_stack(base: Path, images: DockerImages, envs: tuple[str, ...] = ("staging", "production"), *,
               tweak: Callable[[dict[str, Any]], None] | None = None, env: dict[str, str] | None = None,
               generate: tuple[str, ...] = ()) -> Stack:
    """Copy the example into ``base/practika`` on the compose runtime, generate, commit.

    ``tweak`` edits the stageflow.yml data before it is written; ``env`` goes to every CLI run;
    ``generate`` are extra arguments of ``config generate`` (e.g. ``--encrypt``).
    """
    root = base / "practika"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", "staticfiles", "data"))
    project = f"pk{uuid.uuid4().hex[:8]}"
    ports = {env: free_port() for env in envs}
    data: dict[str, Any] = yaml.safe_load((root / "stageflow.yml").read_text())
    data["project"] = project
    data["database"] = {"engine": "postgres", "name": "practica_{env}", "user": "practica",
                        "password": "${POSTGRES_PASSWORD}"}
    data["cache"] = {"engine": "redis"}
    data["services"]["backend"]["health"]["deadline"] = "90s"
    data["environments"] = {
        env: {"runtime": "compose", "url": f"http://127.0.0.1:{ports[env]}", "images": images.overrides(),
              "required": ["SECRET_KEY"], "watch": "3s", "drain": "3s",
              # Staging without basic auth (the load probes carry no password); production here is
              # plain http on loopback, which `config validate` rightly refuses for production.
              **({"proxy": {"basic_auth": False}} if env != "production" else {"skip_checks": ["config"]})}
        for env in envs
    }
    data["promotion"] = list(envs)
    if tweak is not None:
        tweak(data)
    (root / "stageflow.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    # The upstream is runtime state (a cutover rewrites it); everything else generated is committed.
    with open(root / ".gitignore", "a") as fh:
        fh.write("deploy/nginx/*/upstream-*.conf\n")
    git(root, "init", "-q")
    stack = Stack(root, project, ports, env=dict(env or {}))
    for name in envs:
        # What the configuration manager writes for a compose environment.
        stack.sf("config", "generate", name, *generate)
        stack.sf("config", "compose", name)
        stack.sf("config", "nginx", name)
    stack.commit("Practika on compose")
    return stack
