"""Pytest plugin: a real, private PostgreSQL cluster for integration tests.

Register with ``pytest_plugins = ["tests.support.postgres"]``. The session-scoped
``postgres_server`` fixture runs ``initdb`` into a temp directory, listens on 127.0.0.1 only,
on a free port, with scram-sha-256 auth and a generated superuser password, and stops the
cluster at the end of the session. A test may stop and start it (``with server.outage():``) to
play a database outage; it runs again when the block ends.

PostgreSQL refuses to run as root, so as root the server tools run via
``runuser -u postgres --`` (or a system user ``stageflowpg`` created on demand).
Missing binaries fail the session under ``CI`` and skip it elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

FALLBACK_USER = "stageflowpg"
START_TIMEOUT = 30


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_server_bin() -> Path | None:
    """Directory holding ``initdb``, ``pg_ctl`` and ``postgres``: PATH first, then the newest
    ``/usr/lib/postgresql/<ver>/bin`` (Debian keeps the server binaries off PATH)."""
    on_path = shutil.which("initdb")
    if on_path:
        # Resolve symlinks so pg_ctl and postgres come from the same installation as initdb.
        bin_dir = Path(on_path).resolve().parent
        if (bin_dir / "pg_ctl").exists():
            return bin_dir
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for bin_dir in candidates:
        if (bin_dir / "initdb").exists() and (bin_dir / "pg_ctl").exists():
            return bin_dir
    return None


def _missing(message: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so this is an error: install the postgresql package)")
    pytest.skip(message)


def _server_user() -> str | None:
    """The unprivileged user to run the server as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", FALLBACK_USER):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", FALLBACK_USER],
        check=True,
        capture_output=True,
    )
    return FALLBACK_USER


@dataclass
class PostgresServer:
    """A running private cluster and helpers to set up databases in it."""

    host: str
    port: int
    superuser: str
    password: str = field(repr=False)
    bin_dir: Path
    data_dir: Path
    log_file: Path
    os_user: str | None = None
    options: str = ""
    _roles: set[str] = field(default_factory=set, repr=False)

    def stop(self) -> None:
        """Stop the cluster (fast shutdown: sessions are cut), to play a database outage."""
        done = _run_server_tool([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
                                self.os_user, self.data_dir.parent)
        assert done.returncode == 0, done.stderr

    def start(self) -> None:
        """Start it again on the same port, with the same password, and wait until it accepts connections."""
        done = _run_server_tool([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                                 "-w", "-t", str(START_TIMEOUT), "-o", self.options, "start"],
                                self.os_user, self.data_dir.parent)
        assert done.returncode == 0, f"{done.stderr}\n{_log_tail(self.log_file)}"

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """Stopped inside the block, running again after it, whatever the block does."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def dsn(self, db: str = "postgres", *, user: str | None = None, password: str | None = None) -> str:
        """A ``postgresql://`` URL for ``db`` (superuser unless ``user``/``password`` given)."""
        user = user or self.superuser
        password = self.password if password is None else password
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@{self.host}:{self.port}/{quote(db, safe='')}"
        )

    def connect(
        self, db: str = "postgres", *, user: str | None = None, password: str | None = None
    ) -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit psycopg connection (superuser by default)."""
        return psycopg.connect(self.dsn(db, user=user, password=password), autocommit=True, connect_timeout=10)

    def create_role(self, name: str, password: str, *, createdb: bool = True) -> None:
        """Create (or reset the password of) a login role."""
        attrs = sql.SQL("LOGIN CREATEDB") if createdb else sql.SQL("LOGIN NOCREATEDB")
        with self.connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
            verb = sql.SQL("ALTER ROLE") if exists else sql.SQL("CREATE ROLE")
            conn.execute(
                sql.SQL("{} {} {} PASSWORD {}").format(verb, sql.Identifier(name), attrs, sql.Literal(password))
            )

    def create_database(self, name: str, owner: str, password: str) -> str:
        """Create role ``owner`` (login, CREATEDB, ``password``) and a fresh database ``name`` it owns.

        An existing database of that name is dropped first. Returns the owner's DSN for it.
        """
        self.create_role(owner, password)
        self.drop_database(name)
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
        return self.dsn(name, user=owner, password=password)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, disconnecting its sessions."""
        with self.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def databases(self) -> set[str]:
        """Names of all databases in the cluster."""
        with self.connect() as conn:
            return {str(row[0]) for row in conn.execute("SELECT datname FROM pg_database")}


def _run_server_tool(argv: Sequence[str], os_user: str | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    full = ["runuser", "-u", os_user, "--", *argv] if os_user else list(argv)
    # LC_ALL=C: initdb picks the cluster locale from the environment otherwise.
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    return subprocess.run(
        full, cwd=cwd, env=env, capture_output=True, text=True, timeout=START_TIMEOUT + 30, check=False
    )


def _log_tail(log_file: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster on 127.0.0.1 for the whole test session."""
    bin_dir = find_server_bin()
    if bin_dir is None:
        _missing("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql")
    if not (shutil.which("psql") and shutil.which("pg_dump")):
        _missing("PostgreSQL client tools (psql, pg_dump) not found on PATH")
    os_user = _server_user()

    # Not under pytest's tmp dir: that is 0700 root-owned, and the server user must reach it.
    root = Path(tempfile.mkdtemp(prefix="stageflow-pg-"))
    data_dir, sock_dir, log_file = root / "data", root / "sock", root / "server.log"
    sock_dir.mkdir()
    password = secrets.token_urlsafe(24)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if os_user:
        entry = pwd.getpwnam(os_user)
        for path in (root, sock_dir, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    root.chmod(0o700)

    init = _run_server_tool(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # a throwaway cluster does not need durable initialisation
        ],
        os_user,
        root,
    )
    pwfile.unlink()
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"initdb failed (exit {init.returncode}): {init.stderr.strip()[-800:]}")

    port = free_port()
    options = " ".join(
        [
            "-c listen_addresses=127.0.0.1",
            f"-c port={port}",
            f"-c unix_socket_directories={sock_dir}",
            # Durability is pointless for a test cluster and costs seconds.
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
        ]
    )
    pg_ctl = str(bin_dir / "pg_ctl")
    start = _run_server_tool(
        [pg_ctl, "-D", str(data_dir), "-l", str(log_file), "-w", "-t", str(START_TIMEOUT), "-o", options, "start"],
        os_user,
        root,
    )
    if start.returncode != 0:
        tail = _log_tail(log_file)
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"pg_ctl start failed (exit {start.returncode}): {start.stderr.strip()}\n{tail}")

    server = PostgresServer(
        host="127.0.0.1",
        port=port,
        superuser="postgres",
        password=password,
        bin_dir=bin_dir,
        data_dir=data_dir,
        log_file=log_file,
        os_user=os_user,
        options=options,
    )
    try:
        yield server
    finally:
        _run_server_tool([pg_ctl, "-D", str(data_dir), "-m", "fast", "-w", "stop"], os_user, root)
        shutil.rmtree(root, ignore_errors=True)
