"""The compose stack itself on a real Docker Engine: replicas in batches, workers, cleanup, secrets.

One production stack, built once: the web service with 2 replicas started one batch at a time, a
worker (``python manage.py worker``), PostgreSQL, Redis and nginx, and an env file encrypted at
rest. The tests run in order on it: first deploy, a deploy under load, a release whose second
batch dies, one whose worker cannot start, a rollback, and ``cleanup``.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from stageflow.config.envfile import read_env_file
from tests.support.docker import DockerImages, docker, docker_images  # noqa: F401
from tests.support.load import Load
from tests.support.stack import Stack, make_stack

pytestmark = pytest.mark.e2e

ENV = "production"
MASTER_KEY = Fernet.generate_key().decode()
#: The secrets `config generate` wrote into the encrypted env file (read back in the fixture).
SECRETS: dict[str, str] = {}


def _tweak(data: dict[str, Any]) -> None:
    data["services"]["worker"] = {"build": ".", "command": "python manage.py worker"}
    data["environments"][ENV].update(replicas=2, batch_size=1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_images: DockerImages) -> Iterator[Stack]:  # noqa: F811
    s = make_stack(tmp_path_factory.mktemp("stack"), docker_images, (ENV,), tweak=_tweak,
                   env={"STAGEFLOW_MASTER_KEY": MASTER_KEY}, generate=("--encrypt",))
    plain = read_env_file(s.root / f".env.{ENV}", environ={"STAGEFLOW_MASTER_KEY": MASTER_KEY})
    SECRETS.update({k: plain[k] for k in ("SECRET_KEY", "POSTGRES_PASSWORD")})
    assert all(len(v) >= 16 for v in SECRETS.values())
    yield s
    s.teardown()


def _containers(stack: Stack, service: str) -> list[dict[str, Any]]:
    ids = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={stack.project}-{ENV}",
                 "--filter", f"label=com.docker.compose.service={service}").stdout.split()
    return json.loads(docker("inspect", *ids).stdout) if ids else []


def _ids(stack: Stack, service: str) -> set[str]:
    return {c["Id"] for c in _containers(stack, service)}


def _image_id(ref: str) -> str:
    return docker("image", "inspect", "-f", "{{.Id}}", ref).stdout.strip()


class WebEvents:
    """``docker events`` of the env's web containers while a deploy runs: (action, container) in order.

    ``kill_nth_start`` kills the n-th container that starts, the moment it starts (a fault no gate
    could have passed yet).
    """

    def __init__(self, stack: Stack, kill_nth_start: int | None = None) -> None:
        self.events: list[tuple[str, str]] = []
        self.killed: list[str] = []
        self._kill = kill_nth_start
        self._proc = subprocess.Popen(
            ["docker", "events", "--format", "{{.Action}}|{{.Actor.Attributes.name}}",
             "--filter", "type=container", "--filter", "event=create", "--filter", "event=start",
             "--filter", "event=health_status", "--filter", f"label=com.docker.compose.project={stack.project}-{ENV}",
             "--filter", "label=com.docker.compose.service=backend"], stdout=subprocess.PIPE, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            action, _, name = line.strip().partition("|")
            self.events.append((action, name))
            starts = [n for a, n in self.events if a == "start"]
            if action == "start" and len(starts) == self._kill:
                docker("kill", name)
                self.killed.append(name)

    def __enter__(self) -> WebEvents:
        self._thread.start()
        time.sleep(0.5)  # subscribed before the deploy starts anything
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)
        self._proc.terminate()
        self._proc.wait(10)
        self._thread.join(10)

    def first(self, action: str, name: str) -> int:
        return self.events.index((action, name))


def _secrets_left(stack: Stack) -> list[str]:
    """Every place a secret must not be: files stageflow wrote, its logs, its history and audit trail."""
    found = []
    for path in [stack.root / "docker-compose.prod.yml", *(stack.root / ".stageflow").rglob("*"),
                 *(stack.root / "logs").rglob("*")]:
        if path.is_file() and path.suffix != ".db" and _leaks(path.read_text(errors="replace")):
            found.append(str(path.relative_to(stack.root)))
    for out in (stack.sf("history", ENV, "--json").stdout, *stack.outputs):
        if _leaks(out):
            found.append("CLI output / history")
    db = stack.root / ".stageflow" / "state.db"
    if db.exists() and _leaks(db.read_bytes().decode("latin-1")):
        found.append("state.db (audit trail)")
    return found


def _leaks(text: str) -> bool:
    return any(v in text for v in SECRETS.values())


class ArgvWatch:
    """Reads every process's command line on this machine while a deploy runs: no secret in any argv."""

    def __init__(self) -> None:
        self.seen = 0
        self.leaks: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").iterdir():
                try:
                    argv = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                self.seen += 1
                if _leaks(argv.decode("latin-1")):
                    self.leaks.append(argv.replace(b"\0", b" ").decode(errors="replace")[:120])
            time.sleep(0.05)

    def __enter__(self) -> ArgvWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_first_deploy_starts_batches_and_workers_with_the_decrypted_env(stack: Stack) -> None:
    stack.sf("deploy", ENV, "--yes")
    st = stack.status()[ENV]
    assert st["healthy"], st
    web = _containers(stack, "backend")
    assert len(web) == 2 and all(c["State"]["Health"]["Status"] == "healthy" for c in web)
    upstream = (stack.root / "deploy" / "nginx" / ENV / f"upstream-{ENV}.conf").read_text()
    assert all(c["Name"].lstrip("/") in upstream for c in web)
    (worker,) = _containers(stack, "worker")
    assert worker["Config"]["Labels"]["io.stageflow.release"] == st["release"]
    # The containers got the secret from the encrypted file; no file, log or record holds it.
    for service in ("backend", "worker"):
        env = docker("compose", "-f", "docker-compose.prod.yml", "exec", "-T", service, "env", cwd=stack.root)
        assert f"SECRET_KEY={SECRETS['SECRET_KEY']}" in env.stdout.splitlines(), env.stderr
    assert (stack.root / ".env.production").read_text().startswith("# stageflow:encrypted")
    assert not (stack.root / ".stageflow" / "compose" / f"{ENV}.secrets.env").exists()
    assert _secrets_left(stack) == []


def test_deploy_under_load_moves_in_batches_and_recreates_only_the_workers(stack: Stack) -> None:
    before = stack.get(ENV).json()["version"]
    infra = {name: _ids(stack, name) for name in ("db", "redis", "nginx")}
    old_web, old_worker = _ids(stack, "backend"), _ids(stack, "worker")
    (stack.root / "notes" / "marker.py").write_text("VERSION_MARK = 2\n")
    stack.commit("a new version")
    with ArgvWatch() as argv, WebEvents(stack) as events, Load(stack.ports[ENV], max_seconds=300) as load:
        stack.sf("deploy", ENV, "--yes")
        time.sleep(1)
    assert load.failures == [] and load.ok > 20, (load.ok, load.failures[:5])
    assert argv.seen > 100 and argv.leaks == [], argv.leaks
    after = stack.get(ENV).json()["version"]
    assert after != before
    # PostgreSQL, Redis and nginx are the same containers; the web and the worker are new, on the new image.
    assert {name: _ids(stack, name) for name in infra} == infra
    web = sorted(_containers(stack, "backend"), key=lambda c: c["Name"])
    assert len(web) == 2 and not {c["Id"] for c in web} & old_web
    (worker,) = _containers(stack, "worker")
    assert worker["Id"] not in old_worker
    assert worker["Image"] == _image_id(f"{stack.project}/worker:{after}") == web[0]["Image"]
    # Batches of one: the second container was created only after Docker called the first healthy.
    a, b = (c["Name"].lstrip("/") for c in web)
    assert events.first("health_status: healthy", a) < events.first("create", b), events.events
    start = next(s for s in stack.last_deployment(ENV)["steps"] if s["name"] == "start")
    assert "2 health-gated batch(es) of 1" in start["detail"]
    assert not (stack.root / ".stageflow" / "compose" / f"{ENV}.secrets.env").exists()
    assert _secrets_left(stack) == []


def test_a_second_batch_that_dies_removes_every_new_container(stack: Stack) -> None:
    good = stack.get(ENV).json()["version"]
    old_web, old_worker = _ids(stack, "backend"), _ids(stack, "worker")
    (stack.root / "notes" / "marker.py").write_text("VERSION_MARK = 3\n")
    stack.commit("a release whose second container dies")
    with WebEvents(stack, kill_nth_start=2) as events, Load(stack.ports[ENV], max_seconds=300) as load:
        proc = stack.sf("deploy", ENV, "--yes", check=False)
    killed = events.killed
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert killed, "the second batch never started"
    assert load.failures == [] and load.ok > 5, (load.ok, load.failures[:5])
    assert stack.get(ENV).json()["version"] == good
    # Every new container went, the first batch's healthy one too; the old ones and the worker never moved.
    assert set(stack.web_containers(ENV)) == {c["Name"].lstrip("/") for c in _containers(stack, "backend")}
    assert _ids(stack, "backend") == old_web and _ids(stack, "worker") == old_worker
    dep = stack.last_deployment(ENV)
    assert dep["outcome"] == "failed" and "rollback" in [s["name"] for s in dep["steps"]]
    assert killed[0] in dep["error"] or "exited" in dep["error"], dep["error"]
    assert not (stack.root / ".stageflow" / "compose" / f"{ENV}.secrets.env").exists()


def test_a_worker_that_cannot_start_sends_traffic_back_and_the_workers_too(stack: Stack) -> None:
    good = stack.get(ENV).json()["version"]
    old_web = _ids(stack, "backend")
    worker_py = stack.root / "notes" / "management" / "commands" / "worker.py"
    code = worker_py.read_text()
    worker_py.write_text('raise SystemExit("this release\'s worker cannot start")\n' + code)
    stack.commit("a release whose worker dies at start")
    try:
        with Load(stack.ports[ENV], max_seconds=300) as load:
            proc = stack.sf("deploy", ENV, "--yes", check=False)
    finally:
        worker_py.write_text(code)
        stack.commit("the worker starts again")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert load.failures == [] and load.ok > 5, (load.ok, load.failures[:5])
    assert stack.get(ENV).json()["version"] == good
    assert _ids(stack, "backend") == old_web
    (worker,) = _containers(stack, "worker")
    assert worker["State"]["Running"] and worker["Image"] == _image_id(f"{stack.project}/worker:{good}")
    dep = stack.last_deployment(ENV)
    assert dep["outcome"] == "failed" and "rollback" in [s["name"] for s in dep["steps"]]
    assert "worker container" in dep["error"], dep["error"]


def test_rollback_puts_the_workers_back_and_a_restart_leaves_them(stack: Stack) -> None:
    current = stack.status()[ENV]
    infra = {name: _ids(stack, name) for name in ("db", "redis")}
    stack.sf("rollback", ENV, "--yes")
    st = stack.status()[ENV]
    assert st["release"] == current["previous"] and st["healthy"]
    (worker,) = _containers(stack, "worker")
    assert worker["Image"] == _image_id(f"{stack.project}/worker:{st['release']}")
    assert worker["Config"]["Labels"]["io.stageflow.release"] == st["release"]
    assert {name: _ids(stack, name) for name in infra} == infra
    # A restart runs the same release again: new web containers, and the worker (same image, same
    # config) is left running as it is.
    web = _ids(stack, "backend")
    stack.sf("restart", ENV, "--yes")
    assert _ids(stack, "worker") == {worker["Id"]}
    assert not _ids(stack, "backend") & web and stack.status()[ENV]["release"] == st["release"]


def test_cleanup_keeps_current_and_previous_images_and_nothing_of_others(stack: Stack) -> None:
    st = stack.status()[ENV]
    other = f"{stack.project}x"
    image = next(c["Config"]["Image"] for c in _containers(stack, "db"))  # any local image will do
    mine, theirs = f"{stack.project}-{ENV}", f"{other}-{ENV}"
    made: list[str] = []
    for project in (mine, theirs):
        name = f"{project}-oneoff-{os.getpid()}"
        r = docker("run", "--name", name, "--label", f"com.docker.compose.project={project}", "--entrypoint",
                   "true", image)
        assert r.returncode == 0, r.stderr
        made.append(name)
    dangling = {}
    for project in (stack.project, other):
        built = subprocess.run(["docker", "build", "-q", "--label", f"io.stageflow.project={project}", "-"],
                               input=f"FROM {image}\nLABEL marker={project}-{time.time()}\n", text=True,
                               capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "0"}, check=True)
        dangling[project] = built.stdout.strip()
    try:
        out = stack.sf("cleanup", "--keep", "2")
        assert f"exited container {made[0]}" in out.stdout + out.stderr
        refs = set(docker("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                          f"reference={stack.project}/*").stdout.split())
        kept = {st["release"], st["previous"]}
        assert refs == {f"{stack.project}/{svc}:{r}" for svc in ("backend", "worker") for r in kept}, refs
        # The service tags still name what runs; the failed release's images went with it.
        assert _image_id(f"{stack.project}-backend:{ENV}") == _image_id(f"{stack.project}/backend:{st['release']}")
        assert docker("inspect", made[0]).returncode != 0 and docker("inspect", made[1]).returncode == 0
        assert docker("image", "inspect", dangling[stack.project]).returncode != 0
        assert docker("image", "inspect", dangling[other]).returncode == 0
        assert stack.status()[ENV]["healthy"]
    finally:
        docker("rm", "-f", *made)
        docker("image", "rm", "-f", *dangling.values())
