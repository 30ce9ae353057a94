"""A scratch git copy of the Practika example, deployed with the real stageflow CLI in subprocesses."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "practika"
STAGEFLOW = Path(sys.executable).parent / "stageflow"
# Virtualenvs keyed by requirements hash are reused across test apps (and runs): building one costs ~20 s.
VENVS = Path(os.environ.get("STAGEFLOW_TEST_VENVS", "/tmp/stageflow-test-venvs"))
CANARY = "canary-Secret-0a9f8e7d6c5b4a39281706f5e4d3c2b1a0"
ENVS = ("dev", "staging", "production")


_GIVEN: set[int] = set()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, never one this process handed out before.

    The kernel may give the same ephemeral port to two consecutive binds once the first socket is
    closed; a fixture drawing nine ports then configured nginx and a slot on one port (bind() failed
    at cutover, seen in CI)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def git(root: Path, *args: str) -> str:
    """Run git in ``root`` as a fixed test identity."""
    out = subprocess.run(
        ["git", "-c", "user.name=tester", "-c", "user.email=tester@localhost", *args],
        cwd=root, capture_output=True, text=True, check=True,
    )
    return out.stdout


@dataclass
class App:
    """One scratch app and helpers to drive stageflow against it."""

    root: Path
    ports: dict[str, int]
    secrets: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)

    def sf(self, *args: str, check: bool = True, env: dict[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run the stageflow CLI in the app root; every output is kept for secret-leak checks."""
        full_env = {**os.environ, **(env or {})}
        full_env.pop("STAGEFLOW_MASTER_KEY", None)
        proc = subprocess.run([str(STAGEFLOW), *args], cwd=self.root, capture_output=True, text=True,
                              env=full_env, timeout=timeout, stdin=subprocess.DEVNULL)
        self.outputs += [proc.stdout, proc.stderr]
        if check and proc.returncode != 0:
            raise AssertionError(f"stageflow {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """Start the CLI without waiting."""
        return subprocess.Popen([str(STAGEFLOW), *args], cwd=self.root, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)

    def url(self, env: str, path: str = "/health/") -> str:
        """Public URL of ``env`` (production is https, like the example)."""
        scheme = "https" if env == "production" else "http"
        return f"{scheme}://127.0.0.1:{self.ports[env]}{path}"

    def ssl_context(self, env: str = "production") -> ssl.SSLContext:
        """Trusts the self-signed certificate stageflow made for ``env``'s local rehearsal."""
        ctx = ssl.create_default_context(cafile=str(self.root / ".stageflow" / "tls" / env / "cert.pem"))
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return ctx

    def get(self, env: str, path: str = "/health/") -> tuple[int, dict[str, Any]]:
        """GET through the env's public URL (certificate verified for https)."""
        import httpx

        verify: ssl.SSLContext | bool = self.ssl_context(env) if env == "production" else True
        r = httpx.get(self.url(env, path), timeout=5, verify=verify)
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, {}

    def commit(self, message: str) -> str:
        """Commit everything; return the sha."""
        git(self.root, "add", "-A")
        git(self.root, "commit", "-qm", message)
        return git(self.root, "rev-parse", "HEAD").strip()

    def break_health(self) -> str:
        """Commit a change that makes /health/ answer 503."""
        p = self.root / "practika" / "health.py"
        p.write_text(p.read_text().replace("HEALTHY = True", "HEALTHY = False"))
        return self.commit("break health")

    def touch_commit(self, message: str = "a change") -> str:
        """Commit a harmless change."""
        p = self.root / "CHANGES.txt"
        p.write_text((p.read_text() if p.exists() else "") + message + "\n")
        return self.commit(message)

    def last_deployment(self, env: str) -> dict[str, Any]:
        """The newest deployment of ``env`` from ``history --json``, steps included."""
        import json

        rows: list[dict[str, Any]] = json.loads(self.sf("history", env, "--json", "--limit", "1").stdout)
        return rows[0]

    def status(self) -> dict[str, dict[str, Any]]:
        """``status --json`` by env."""
        import json

        return {row["env"]: row for row in json.loads(self.sf("status", "--json").stdout)}

    def instance_processes(self) -> list[psutil.Process]:
        """Every live (non-zombie) process stageflow started for this app."""
        found = []
        for p in psutil.process_iter(["pid"]):
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue
                if p.environ().get("STAGEFLOW_INSTANCE", "").startswith(f"{self.root}::"):
                    found.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def all_text(self) -> str:
        """Console output, logs and the state database: where secrets must never appear."""
        parts = list(self.outputs)
        for d in ("logs", ".stageflow/run"):
            for f in (self.root / d).rglob("*"):
                if f.is_file():
                    parts.append(f.read_text(errors="replace"))
        db = self.root / ".stageflow" / "state.db"
        if db.exists():
            import sqlite3

            con = sqlite3.connect(db)
            for table in ("deployments", "steps", "events", "releases", "locks", "backups"):
                parts += [repr(tuple(r)) for r in con.execute(f"SELECT * FROM {table}")]  # noqa: S608
            con.close()
        return "\n".join(parts)


def write_config(root: Path, ports: dict[str, int], app_ports: dict[str, list[int]], *,
                 nginx: bool = True, database: dict[str, Any] | None = None, watch: str = "1s") -> None:
    """A test variant of the example's stageflow.yml: private ports, shared venvs, short watch."""
    cfg = yaml.safe_load((EXAMPLE / "stageflow.yml").read_text())
    for env in ENVS:
        e = cfg["environments"][env]
        e["url"] = f"{'https' if env == 'production' and nginx else 'http'}://127.0.0.1:{ports[env]}"
        e["app_ports"] = app_ports[env]
        e["watch"] = watch
        e["drain"] = "5s"
    cfg["releases"]["venv_dir"] = str(VENVS / "shared")
    # A broken release answers 503 forever: don't wait the production default of 60 s for it.
    cfg["services"]["backend"]["health"]["deadline"] = "12s"
    cfg["nginx"] = {"enabled": "on" if nginx else "off"}
    if database:
        cfg["database"] = database
    (root / "stageflow.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def make_app(base: Path, *, nginx: bool = True, database: dict[str, Any] | None = None,
             extra_env: dict[str, str] | None = None) -> App:
    """Copy the example into ``base/app``, configure, write secrets, commit."""
    root = base / "app"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", "staticfiles"))
    ports = {env: free_port() for env in ENVS}
    app_ports = {env: [free_port(), free_port()] for env in ENVS}
    write_config(root, ports, app_ports, nginx=nginx, database=database)
    app = App(root, ports)
    git(root, "init", "-q")
    app.commit("Practika example")
    # Env files as a user makes them (`config setup`), with a recognisable canary as SECRET_KEY.
    app.sf("config", "setup")
    from stageflow.config.envfile import read_env_file, write_env_file

    for env in ENVS:
        key = f"{CANARY}-{env}"
        app.secrets[env] = key
        path = root / f".env.{env}"
        values = read_env_file(path)
        values.update({"SECRET_KEY": key, "DEBUG": "0", **(extra_env or {})})
        write_env_file(path, values)
    return app


def teardown_app(app: App) -> None:
    """Stop everything the app started, whatever state the test left it in."""
    for env in ENVS:
        subprocess.run([str(STAGEFLOW), "down", env], cwd=app.root, capture_output=True, timeout=60,
                       stdin=subprocess.DEVNULL, check=False)
    for p in app.instance_processes():
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    from stageflow.procs import is_ours

    for pid_file in (app.root / ".stageflow" / "nginx").glob("*/nginx.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            # A test may plant a hostile pid file (-1 would signal every process on the machine):
            # only this app's nginx master, recognised by its command line and directory, is killed.
            if is_ours(pid, argv_has=str(pid_file.parent), cwd_in=str(pid_file.parent)):
                os.kill(pid, 9)


@pytest.fixture
def practika(tmp_path: Path) -> Iterator[App]:
    """A fresh scratch app with nginx in front; everything it started is stopped afterwards."""
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed (scripts/bootstrap.sh --dev installs it)")
        pytest.skip("nginx is not installed")
    app = make_app(tmp_path)
    yield app
    teardown_app(app)


@pytest.fixture
def practika_no_nginx(tmp_path: Path) -> Iterator[App]:
    """A scratch app deployed without a proxy (stop-then-start)."""
    app = make_app(tmp_path, nginx=False)
    yield app
    teardown_app(app)


def step_started(app: App, name: str) -> bool:
    """A step called ``name`` of a running deployment has started (read straight from state.db)."""
    db = app.root / ".stageflow" / "state.db"
    if not db.exists():
        return False
    con = sqlite3.connect(db)
    try:
        row = con.execute(
            "SELECT 1 FROM steps s JOIN deployments d ON s.deployment_id = d.id "
            "WHERE d.outcome='running' AND s.name=?", (name,)
        ).fetchone()
        return row is not None
    except sqlite3.OperationalError:
        return False
    finally:
        con.close()


def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until true or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
