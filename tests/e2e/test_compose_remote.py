"""`runtime: compose` on an engine reached over `DOCKER_HOST=ssh://…`, and the lock held on that engine.

The test starts its own sshd on 127.0.0.1 (its own host key, authorized_keys, a fresh client key);
the environment says `docker_host: ssh://USER@127.0.0.1:PORT` with `ssh: {identity, known_hosts}`.
Every stageflow run here has `DOCKER_HOST` pointing at a socket that does not exist, so a docker
call that did not get the environment's engine fails; sshd's log shows the sessions and the
`ssh -W` streams the health gate and the public probe used.

Then a second checkout of the app (its own state directory) deploys to the same engine: refused
with the holder's name while the first deploys, fine after it; a `kill -9`ed holder's lock is
taken over by the next deploy.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.app import STAGEFLOW, git
from tests.support.docker import DockerImages, docker, docker_images  # noqa: F401
from tests.support.sshd import Sshd, sshd  # noqa: F401
from tests.support.stack import Stack, make_stack

pytestmark = pytest.mark.e2e

ENV = "staging"
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/stageflow-test-docker.sock"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_images: DockerImages,  # noqa: F811
          sshd: Sshd) -> Iterator[Stack]:  # noqa: F811
    s = make_stack(tmp_path_factory.mktemp("remote"), docker_images, (ENV,))
    data = yaml.safe_load((s.root / "stageflow.yml").read_text())
    data["environments"][ENV]["docker_host"] = sshd.docker_host
    data["environments"][ENV]["ssh"] = {"identity": str(sshd.key), "known_hosts": "deploy/known_hosts"}
    (s.root / "stageflow.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.copy(sshd.known_hosts, s.root / "deploy" / "known_hosts")  # pinned host key, committed
    s.sf("config", "compose", ENV)  # a remote engine: the nginx site in volumes, no bind mount of this app
    compose = yaml.safe_load((s.root / "docker-compose.staging.yml").read_text())
    assert not [v for v in compose["services"]["nginx"]["volumes"] if v.startswith((".", "/"))]
    s.commit("staging on a remote engine over ssh")
    # A short private runtime directory: ssh's shared-connection sockets go there when the app's own
    # path is too long for a socket (as under pytest's temporary directories).
    runtime = Path(tempfile.mkdtemp(prefix="sfrt"))
    s.env = {**NO_ENGINE, "XDG_RUNTIME_DIR": str(runtime)}
    yield s
    s.teardown()
    docker("rm", "-f", _lock_name(s))
    for sock in (runtime / "stageflow-ssh").glob("*"):  # the shared connections, if still up
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"], capture_output=True, timeout=10)
    shutil.rmtree(runtime, ignore_errors=True)


def _lock_name(stack: Stack) -> str:
    return f"{stack.project}-{ENV}-stageflow-lock"


def _lock_exists(stack: Stack) -> bool:
    return docker("inspect", "--type", "container", _lock_name(stack)).returncode == 0


def _version(stack: Stack, mark: int) -> None:
    (stack.root / "notes" / "marker.py").write_text(f"VERSION_MARK = {mark}\n")
    stack.commit(f"version {mark}")


def _spawn(stack: Stack, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "DOCKER_BUILDKIT": "0", **stack.env}
    env.pop("STAGEFLOW_MASTER_KEY", None)
    return subprocess.Popen([str(STAGEFLOW), *args], cwd=stack.root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, stdin=subprocess.DEVNULL)


def _wait_for_lock(stack: Stack, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if _lock_exists(stack):
            return
        time.sleep(0.2)
    out, err = proc.communicate(timeout=600)
    raise AssertionError(f"the deploy never took the lock on the engine (exit {proc.returncode}):\n{out}\n{err}")


@pytest.fixture(scope="module")
def second(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """A second clone of the app: its own state directory, the same environment on the same engine."""
    root = tmp_path_factory.mktemp("second") / "practika"
    git(root.parent, "clone", "-q", str(stack.root), str(root))
    for name in os.listdir(stack.root):
        if name.startswith(".env."):
            shutil.copy(stack.root / name, root / name)
    return Stack(root, stack.project, stack.ports, env=dict(stack.env))


def test_deploy_through_ssh_while_a_second_checkout_is_refused(stack: Stack, second: Stack,
                                                               sshd: Sshd) -> None:  # noqa: F811
    sessions = sshd.sessions()
    first = _spawn(stack, "deploy", ENV, "--yes")
    _wait_for_lock(stack, first)
    refused = second.sf("deploy", ENV, "--yes", check=False)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, out + err
    assert re.search(r"runtime +pass +Docker Engine .* at ssh://.*MiB free on the engine's data root", out), out
    assert refused.returncode == 1, refused.stdout + refused.stderr
    errors = [ln for ln in refused.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert f"locked on the Docker Engine at {sshd.docker_host} by " in errors[0] and f"pid {first.pid}" in errors[0]
    assert not _lock_exists(stack)  # released on the way out

    st = stack.status()[ENV]
    assert st["healthy"], st
    assert stack.get(ENV).json()["version"] == st["release"]
    # Every docker call went through sshd (the test's own DOCKER_HOST reaches no engine at all)...
    assert sshd.sessions() - sessions > 20, sshd.log_text()[-2000:]
    # ...and so did the probes: the gate to the new container's address, the watch to nginx's port.
    gate = [m for m in re.findall(r"target (\d+\.\d+\.\d+\.\d+) port 8000", sshd.log_text()) if m != "127.0.0.1"]
    assert gate, "the health gate did not probe the new container through ssh -W"
    assert sshd.streams_to("127.0.0.1", stack.ports[ENV]) > 0, "the public probe did not go through ssh -W"

    # Once the first is done, the second checkout deploys. The engine is the truth: it takes over
    # what serves (the first checkout's containers), routes to its own release, and removes the old.
    git(second.root, "commit", "-q", "--allow-empty", "-m", "the second operator's release")
    second.sf("deploy", ENV, "--yes")
    assert not _lock_exists(stack)
    theirs = second.status()[ENV]
    assert theirs["healthy"] and theirs["release"] != st["release"], theirs
    assert stack.get(ENV).json()["version"] == theirs["release"]
    running = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={stack.project}-{ENV}",
                     "--filter", "label=com.docker.compose.service=backend").stdout.split()
    assert len(running) == 1, running


def test_kill_9_holder_then_full_and_rollback_through_ssh(stack: Stack, second: Stack) -> None:
    # A holder killed with -9 leaves its record on the engine; the next deploy takes it over.
    victim = _spawn(second, "deploy", ENV, "--yes")
    _wait_for_lock(second, victim)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=60)
    assert _lock_exists(stack)
    shown = stack.sf("lock", "status", ENV).stdout
    assert f"pid {victim.pid}" in shown and "STALE" in shown, shown

    before = stack.status()[ENV]["release"]
    _version(stack, 2)
    again = stack.sf("full", "--yes")
    assert "stale lock" in again.stdout + again.stderr
    assert not _lock_exists(stack)
    st = stack.status()[ENV]
    assert st["healthy"] and st["release"] != before, st
    assert stack.get(ENV).json()["version"] == st["release"]

    stack.sf("rollback", ENV, "--yes")
    back = stack.status()[ENV]
    assert back["healthy"] and back["release"] != st["release"], back
    assert stack.get(ENV).json()["version"] == back["release"]
    assert stack.sf("logs", ENV, "backend", "-n", "5").returncode == 0  # docker compose logs, over ssh too


def test_unreachable_engine_fails_with_one_line(stack: Stack, sshd: Sshd) -> None:  # noqa: F811
    text = (stack.root / "stageflow.yml").read_text()
    wrong = text.replace(sshd.docker_host, sshd.docker_host.rsplit(":", 1)[0] + ":1")
    (stack.root / "stageflow.yml").write_text(wrong)
    try:
        proc = stack.sf("deploy", ENV, "--yes", check=False)
    finally:
        (stack.root / "stageflow.yml").write_text(text)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "does not answer over ssh: ssh: connect to host 127.0.0.1 port 1: Connection refused" in errors[0]
    assert "environments.staging.ssh" in errors[0]  # and what to check


def test_too_little_disk_on_the_engine_fails_preflight(stack: Stack) -> None:
    text = (stack.root / "stageflow.yml").read_text()
    data = yaml.safe_load(text)
    data["backups"] = {**data.get("backups", {}), "min_free_mb": 2**40}  # more than any disk has
    (stack.root / "stageflow.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        proc = stack.sf("deploy", ENV, "--yes", check=False)
    finally:
        (stack.root / "stageflow.yml").write_text(text)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"runtime +fail +\d+ MiB free on the engine's data root /\S+ at ssh://", proc.stdout), proc.stdout
    assert "Traceback" not in proc.stderr and not _lock_exists(stack)
