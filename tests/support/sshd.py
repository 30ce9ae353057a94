"""A private OpenSSH server on 127.0.0.1 for tests: its own host key, authorized_keys and client key.

It stands in for the remote machine of an ``ssh://`` Docker host: a session runs as the test's
user, and the engine it reaches (``docker system dial-stdio``) is this machine's. Its log
(``LogLevel DEBUG1``) shows every session and every ``ssh -W`` stream, so a test can prove that
traffic went through it. Without ``sshd``: a failure under ``CI``, a skip elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.compose import missing
from tests.support.nginx import free_port

SSHD = Path("/usr/sbin/sshd")


@dataclass
class Sshd:
    """A running sshd and what a client needs to reach it."""

    port: int
    dir: Path
    key: Path
    known_hosts: Path
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def docker_host(self) -> str:
        """``ssh://USER@127.0.0.1:PORT``."""
        return f"ssh://{_user()}@127.0.0.1:{self.port}"

    def log_text(self) -> str:
        """The server's log so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def sessions(self) -> int:
        """Sessions that ran a command (each docker call is one: ``docker system dial-stdio``)."""
        return self.log_text().count("Starting session: command for")

    def streams_to(self, host: str, port: int | None = None) -> int:
        """``ssh -W`` streams the server opened to ``host`` (and ``port``)."""
        target = f"target {host} port {port}" if port else f"target {host} port"
        return sum(1 for line in self.log_text().splitlines()
                   if "server_request_direct_tcpip" in line and target in line)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def start_sshd(base: Path) -> Sshd:
    """Start sshd on a free loopback port with fresh keys under ``base``."""
    if not SSHD.exists() or shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
        missing("OpenSSH server/client not installed (scripts/bootstrap.sh --dev installs openssh-server as root)")
    d = base / "sshd"
    d.mkdir(mode=0o700)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"stageflow-test-{name}",
                        "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    port = free_port()
    host_pub = (d / "host_key.pub").read_text().split()
    known = d / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    config = d / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_key'}
AuthorizedKeysFile {d / 'authorized_keys'}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
UsePAM no
StrictModes no
PidFile {d / 'sshd.pid'}
LogLevel DEBUG1
MaxSessions 50
MaxStartups 50:30:100
""")
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory sshd insists on
    log = d / "sshd.log"
    proc = subprocess.Popen([str(SSHD), "-D", "-f", str(config), "-E", str(log)], stdin=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sshd exited {proc.returncode}: {log.read_text() if log.exists() else ''}")
        if "Server listening on 127.0.0.1" in (log.read_text() if log.exists() else ""):
            return Sshd(port, d, d / "client_key", known, log, proc)
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("sshd did not start listening within 15s")


def stop_sshd(server: Sshd) -> None:
    """Stop the listener and every session it forked (they are in its process group)."""
    import signal

    try:
        os.killpg(server.proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        server.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A private sshd on 127.0.0.1 for the module."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    stop_sshd(server)
