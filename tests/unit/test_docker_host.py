"""`docker_host` and `ssh` of a compose environment: what the config accepts, and the ssh config and
shim stageflow hands the docker CLI (checked by `ssh -G`, OpenSSH's own reading of a config)."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from stageflow.config.loader import load_env_context, load_project
from stageflow.errors import ConfigError
from stageflow.runtimes.dockerhost import DockerHost, ssh_target, unreachable
from tests.support.compose import missing

BASE = """
project: shop
services:
  web: {{build: ".", command: "gunicorn app --bind 0.0.0.0:{{port}}", port: 8000}}
environments:
  staging:
    runtime: compose
    url: "http://127.0.0.1:8002"
{extra}
"""


def _project(tmp_path: Path, extra: str) -> Path:
    (tmp_path / "stageflow.yml").write_text(BASE.format(extra=extra))
    (tmp_path / ".env.staging").write_text("SECRET_KEY=x\n")
    return tmp_path


@pytest.mark.parametrize(("value", "message"), [
    ("ssh://-oProxyCommand=sh@host", "must be ssh://"),
    ("ssh://deploy@host;rm -rf /", "must be ssh://"),
    ("http://host:2375", "must be ssh://"),
    ("ssh://deploy@host:0", "invalid port"),
])
def test_bad_docker_hosts_are_config_errors_with_the_key_path(tmp_path: Path, value: str, message: str) -> None:
    root = _project(tmp_path, f"    docker_host: '{value}'")
    with pytest.raises(ConfigError, match=rf"environments\.staging\.docker_host: .*{message}"):
        load_project(root)


def test_ssh_options_that_run_commands_are_refused(tmp_path: Path) -> None:
    root = _project(tmp_path, "    docker_host: ssh://deploy@engine\n    ssh: {options: {ProxyCommand: 'nc %h %p'}}")
    with pytest.raises(ConfigError, match=r"environments\.staging\.ssh\.options: .*ProxyCommand"):
        load_project(root)
    root = _project(tmp_path, "    docker_host: ssh://deploy@engine\n    ssh: {options: {ProxyJump: 'a b'}}")
    with pytest.raises(ConfigError, match=r"environments\.staging\.ssh\.options: .*one word"):
        load_project(root)


def test_the_ssh_config_puts_the_env_first_then_the_operators_own(tmp_path: Path) -> None:
    if shutil.which("ssh") is None:
        missing("no OpenSSH client (apt-get install openssh-client)")
    root = _project(tmp_path, "    docker_host: ssh://deploy@engine.example.com:2222\n"
                              "    ssh: {identity: ~/.ssh/deploy_key, known_hosts: deploy/known_hosts,"
                              " options: {ServerAliveInterval: 5, ProxyJump: bastion.example.com}}")
    ctx = load_env_context(root, "staging")
    host = DockerHost(ctx)
    env = host.env()
    assert env["DOCKER_HOST"] == "ssh://deploy@engine.example.com:2222"
    shim = Path(env["PATH"].split(":")[0]) / "ssh"
    assert shim.read_text().count("$STAGEFLOW_SSH_CONFIG") == 1  # paths travel as variables, not script text
    assert stat.S_IMODE(shim.stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(env["STAGEFLOW_SSH_CONFIG"]).stat().st_mode) == 0o600
    seen = subprocess.run([env["STAGEFLOW_SSH_BIN"], "-G", "-F", env["STAGEFLOW_SSH_CONFIG"],
                           *host.ssh.args()], capture_output=True, text=True, check=True).stdout.splitlines()
    values = dict(line.split(" ", 1) for line in seen if " " in line)
    assert values["batchmode"] == "yes"
    assert values["identityfile"] == str(Path("~/.ssh/deploy_key").expanduser())
    assert values["userknownhostsfile"] == str(root / "deploy" / "known_hosts")
    assert values["stricthostkeychecking"] == "true"
    assert values["serveraliveinterval"] == "5"  # the env's own wins over stageflow's default (15)
    assert values["proxyjump"] == "bastion.example.com"
    assert values["port"] == "2222" and values["user"] == "deploy"


def test_the_local_engine_needs_no_ssh_at_all(tmp_path: Path) -> None:
    ctx = load_env_context(_project(tmp_path, ""), "staging")
    assert DockerHost(ctx).env() == {} and not (tmp_path / ".stageflow" / "ssh").exists()


def test_a_known_hosts_file_outside_the_app_is_refused(tmp_path: Path) -> None:
    root = _project(tmp_path, "    docker_host: ssh://deploy@engine\n    ssh: {known_hosts: ../../etc/known}")
    with pytest.raises(ConfigError, match=r"environments\.staging\.ssh\.known_hosts: .*leaves the app"):
        DockerHost(load_env_context(root, "staging")).env()


def test_ssh_targets_and_reasons() -> None:
    t = ssh_target("ssh://deploy@[::1]:2222")
    assert t is not None and t.args() == ["-l", "deploy", "-p", "2222", "--", "::1"]
    assert ssh_target("unix:///var/run/docker.sock") is None
    text = ('error during connect: Get "http://docker.example.com/v1.50/version": command [ssh -p 1 -- h docker '
            'system dial-stdio] has exited with exit status 255, make sure the URL is valid: stderr=ssh: connect '
            "to host h port 1: Connection refused\n")
    assert unreachable(text) == "ssh: connect to host h port 1: Connection refused"
    assert unreachable("Error response from daemon: No such container: x") is None


CHILD = """
import select, sys
got = sys.stdin.buffer.read1(100)
ready, _, _ = select.select([sys.stdin], [], [], 0.3)
closed = bool(ready) and not sys.stdin.buffer.read1(1)
sys.stdout.write(("closed " if closed else "open ") + got.decode())
"""


def test_exchange_keeps_the_input_open_until_the_answer_ends() -> None:
    # Through `ssh -W`, an input closed before the answer reads as the client hanging up.
    import sys
    import time

    from stageflow.runner import Runner

    r = Runner().exchange([sys.executable, "-c", CHILD], b"GET /", timeout=10)
    assert (r.returncode, r.stdout) == (0, "open GET /")
    start = time.monotonic()
    slow = Runner().exchange([sys.executable, "-c", "import time; time.sleep(30)"], b"x", timeout=0.5)
    assert slow.returncode == -1 and time.monotonic() - start < 5
