"""A real nginx for tests: a private instance on loopback ports in its own prefix directory.

Fixtures ``nginx_bin``, ``nginx_factory`` and ``http_backend`` (register the module with
``pytest_plugins``), or the plain helpers they wrap: :func:`require_nginx`,
:func:`nginx_instances`, :func:`running_backend`.

Each instance gets a fresh prefix under /tmp (mode 0755: when the tests run as root the workers
run as ``nobody`` and must be able to read what the tests put there), its own pid file, error log
and temp paths. It is started with ``nginx -p PREFIX -c PREFIX/nginx.conf -e PREFIX/error.log``
in the foreground, as a child of the test process, and stopped with ``-s quit`` at teardown.
A missing nginx is a failure when ``CI`` is set, else a skip.

Also here: a self-signed certificate made with ``cryptography`` and a tiny HTTP backend.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import grp
import http.server
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.compose import missing

APT_LOG = Path("/tmp/apt.log")
NGINX_PATHS = ("/usr/sbin/nginx",)
MIME_TYPES = Path("/etc/nginx/mime.types")


def _wait_for_apt(timeout: float = 300.0) -> None:
    # A background `apt-get install` may still be unpacking nginx; its log ends with a line `done`.
    if not APT_LOG.exists():
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if "done" in APT_LOG.read_text(errors="replace").splitlines():
                return
        time.sleep(1)


def find_nginx() -> str | None:
    """Path of the nginx binary, or None."""
    for path in (*NGINX_PATHS, shutil.which("nginx")):
        if path and os.access(path, os.X_OK):
            return path
    return None


def nginx_version(binary: str) -> tuple[int, int, int]:
    """``nginx -v`` as a tuple."""
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=True, timeout=10).stderr
    version = out.strip().rsplit("/", 1)[-1].split()[0]
    major, minor, patch = (int(x) for x in version.split("."))
    return major, minor, patch


# gixy-ng's hsts_header and weak_ssl_tls checks decide that a server speaks TLS when the text of one
# of its `listen` directives merely *contains* "443" (``"ssl" in args or "443" in args``), so a
# plain-HTTP server on a random port such as 44321, 34435 or 50443 is audited as an HTTPS server
# and reported for a missing HSTS header, ssl_protocols and ssl_ciphers (3 × MEDIUM). nginx itself
# only speaks TLS on a `listen ... ssl` socket, so those reports are false positives; stageflow's
# default ports (80 redirecting to 443) never draw them, random test ports did (158 of the 28232
# ephemeral ports, ~0.6% per plain-HTTP listener). Test ports skip such numbers.
GIXY_TLS_LOOKALIKE = "443"


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now, none of them containing "443".

    All sockets stay bound until every port is chosen, so the ports cannot repeat (two
    consecutive ``bind(0)`` calls may otherwise get the same port back).
    """
    ports: list[int] = []
    with contextlib.ExitStack() as bound:
        while len(ports) < count:
            s = bound.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            if GIXY_TLS_LOOKALIKE not in str(port):
                ports.append(port)
    return ports


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (see :func:`free_ports`)."""
    return free_ports(1)[0]


def _worker_user() -> str | None:
    """The ``user`` directive's value when running as root: nobody and its primary group."""
    if os.geteuid() != 0:
        return None
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        return "root root"
    try:
        group = grp.getgrgid(nobody.pw_gid).gr_name
    except KeyError:
        group = "nogroup"
    return f"nobody {group}"


@dataclass
class NginxInstance:
    """One private nginx; ``sites`` are http-context files the main config includes."""

    binary: str
    prefix: Path
    sites: list[Path] = field(default_factory=list)
    started: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        """The main configuration file."""
        return self.prefix / "nginx.conf"

    @property
    def error_log(self) -> Path:
        """The instance's error log."""
        return self.prefix / "error.log"

    @property
    def pid_file(self) -> Path:
        """The master's pid file."""
        return self.prefix / "nginx.pid"

    def write_conf(self) -> Path:
        """Write the main configuration: loopback-only temp paths, logs and pid in the prefix."""
        tmp = self.prefix / "tmp"
        tmp.mkdir(exist_ok=True)
        user = _worker_user()
        lines = [
            f"user {user};" if user else "",
            "worker_processes 1;",
            "worker_rlimit_nofile 1024;",
            f"pid {self.pid_file};",
            f"error_log {self.error_log} info;",
            "events { worker_connections 256; }",
            "http {",
            f"    include {MIME_TYPES};" if MIME_TYPES.exists() else "",
            "    default_type application/octet-stream;",
            f"    access_log {self.prefix / 'access.log'};",
            *(f"    {d}_temp_path {tmp / d};" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
            *(f"    include {site};" for site in self.sites),
            "}",
        ]
        self.conf.write_text("\n".join(line for line in lines if line) + "\n")
        return self.conf

    def _argv(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.prefix), "-c", str(self.conf), "-e", str(self.error_log), *extra]

    def test_config(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` on the instance's configuration."""
        self.write_conf()
        return subprocess.run(self._argv("-t"), capture_output=True, text=True, timeout=30, check=False)

    def start(self, ports: Sequence[int] = ()) -> None:
        """Start the master (in the foreground, as our child) and wait until ``ports`` accept connections."""
        self.write_conf()
        # `daemon off` keeps the master our child: wait() reaps it at once, where a daemonised
        # master would linger as a zombie until init gets round to it.
        self.process = subprocess.Popen(
            self._argv("-g", "daemon off;"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.started = True
        deadline = time.monotonic() + 10
        for port in ports:
            while True:
                if self.process.poll() is not None:
                    self.started = False
                    raise AssertionError(f"nginx exited with {self.process.returncode}\n{self._log_tail()}")
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"nginx is not listening on {port}\n{self._log_tail()}")
                time.sleep(0.02)

    def stop(self) -> None:
        """``nginx -s quit`` and wait for the master to exit (kill it after 10 s)."""
        if not self.started or self.process is None:
            return
        self.started = False
        subprocess.run(self._argv("-s", "quit"), capture_output=True, timeout=30, check=False)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no error log)"


def require_nginx() -> str:
    """The nginx binary (waiting for a background apt install); fail under CI, else skip, when absent."""
    _wait_for_apt()
    binary = find_nginx()
    if binary is None:
        missing("nginx is not installed (apt-get install nginx)")
    assert binary is not None
    return binary


@contextlib.contextmanager
def nginx_instances(binary: str) -> Iterator[Callable[[], NginxInstance]]:
    """Make private nginx instances; on exit every one is stopped and its prefix removed."""
    made: list[NginxInstance] = []

    def make() -> NginxInstance:
        prefix = Path(tempfile.mkdtemp(prefix="stageflow-nginx-"))
        prefix.chmod(0o755)  # workers (nobody) must reach the files tests put here
        inst = NginxInstance(binary=binary, prefix=prefix)
        made.append(inst)
        return inst

    try:
        yield make
    finally:
        for inst in made:
            inst.stop()
            shutil.rmtree(inst.prefix, ignore_errors=True)


@pytest.fixture(scope="session")
def nginx_bin() -> str:
    """The nginx binary."""
    return require_nginx()


@pytest.fixture
def nginx_factory(nginx_bin: str) -> Iterator[Callable[[], NginxInstance]]:
    """Make private nginx instances, stopped and removed at teardown."""
    with nginx_instances(nginx_bin) as make:
        yield make


def self_signed_cert(directory: Path, names: Sequence[str] = ("localhost", "127.0.0.1")) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` (ECDSA P-256, valid one day) for ``names``; return their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)  # read by the root master only, as in production
    return cert_path, key_path


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"backend ok {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        # What an app like Django sends itself: the proxy must hide it, not send it twice.
        self.send_header("X-Frame-Options", "SAMEORIGIN")
        self.send_header("Referrer-Policy", "same-origin")
        self.send_header("X-Seen-Forwarded-Proto", self.headers.get("X-Forwarded-Proto", ""))
        self.send_header("X-Seen-Forwarded-For", self.headers.get("X-Forwarded-For", ""))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        return


@dataclass
class Backend:
    """A running tiny HTTP server."""

    host: str
    port: int

    @property
    def address(self) -> str:
        """``host:port`` for an nginx upstream."""
        return f"{self.host}:{self.port}"


@contextlib.contextmanager
def running_backend() -> Iterator[Backend]:
    """A real HTTP server on 127.0.0.1 answering 200 to everything, in a thread, until exit."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Backend("127.0.0.1", server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_backend() -> Iterator[Backend]:
    """A tiny real upstream for nginx (see :func:`running_backend`)."""
    with running_backend() as backend:
        yield backend
