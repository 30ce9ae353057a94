"""Class 12: read-only commands create nothing, --dry-run writes nothing, control characters are shown
escaped, and IPv6 URLs give valid addresses everywhere."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from stageflow.config.envfile import read_env_file, write_env_file
from stageflow.config.loader import load_env_context
from stageflow.deploy.probe import is_healthy
from stageflow.masking import printable
from stageflow.runner import Runner
from stageflow.runtimes.local import LocalRuntime
from tests.hardening.support import run
from tests.support.app import EXAMPLE, App, free_port, git
from tests.support.compose import write_practika_project

ESC = "\x1b]0;pwned\x07\x1b[2J\x1b[31m"


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` but git's own, with its size and mtime."""
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if rel.parts[0] == ".git" or "__pycache__" in rel.parts:
            continue
        st = p.lstat()
        out[str(rel)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    import shutil

    root = tmp_path / "app"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", "staticfiles"))
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "x")
    return root


def test_read_only_commands_in_a_fresh_app_create_nothing(fresh: Path) -> None:
    before = snapshot(fresh)
    for args in (("status",), ("status", "--json"), ("status", "dev"), ("history",), ("history", "--audit"),
                 ("lock", "status"), ("deploy", "dev", "--dry-run"), ("full", "--dry-run"),
                 ("config", "validate", "dev", "--no-django-check")):
        proc = run(fresh, *args)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
        assert snapshot(fresh) == before, (args, sorted(set(snapshot(fresh)) ^ set(before)))


@pytest.mark.e2e
def test_dry_run_on_a_deployed_app_writes_nothing(practika: App) -> None:
    practika.sf("deploy", "dev")
    practika.touch_commit()
    before = snapshot(practika.root)
    with sqlite3.connect(practika.root / ".stageflow" / "state.db") as con:
        rows = con.execute("SELECT count(*) FROM events").fetchone()
    for args in (("deploy", "dev", "--dry-run"), ("full", "--dry-run")):
        proc = practika.sf(*args)
        assert "Plan for" in proc.stdout
    after = snapshot(practika.root)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    # SQLite's own -wal/-shm files come and go as a connection opens and closes (and with them the
    # directory's mtime); nothing else may change.
    sqlite_own = {".stageflow", ".stageflow/state.db-wal", ".stageflow/state.db-shm"}
    assert [c for c in changed if c not in sqlite_own] == [], changed
    with sqlite3.connect(practika.root / ".stageflow" / "state.db") as con:
        assert con.execute("SELECT count(*) FROM events").fetchone() == rows


def test_printable_escapes_terminal_controls() -> None:
    assert printable(f"a{ESC}b\tc\nd") == "a\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mb\tc\nd"
    assert printable("\x9b31m \x7f \r") == "\\x9b31m \\x7f \\x0d"


def test_config_values_and_state_are_shown_escaped(tmp_path: Path) -> None:
    root = write_practika_project(tmp_path / "app")
    env = root / ".env.dev"
    write_env_file(env, {**read_env_file(env), "LOG_LEVEL": f"info{ESC}"})
    outputs = []
    for args in (("config", "setup"), ("config", "validate", "dev", "--no-django-check")):
        proc = run(root, *args)
        outputs.append(proc.stdout + proc.stderr)
    git(root, "init", "-q")
    assert run(root, "lock", "release", "dev").returncode == 0
    with sqlite3.connect(root / ".stageflow" / "state.db") as con:
        con.execute("INSERT INTO events (ts, actor, host, command, env, outcome, detail) VALUES "
                    "('2026-01-01T00:00:00', ?, 'h', 'c', 'dev', 'ok', ?)", (f"mallory{ESC}", f"detail{ESC}"))
        con.execute("INSERT INTO deployments (env, kind, started_at, actor, pid, outcome, error) VALUES "
                    "('dev', 'deploy', '2026-01-01T00:00:00', ?, 1, 'failed', ?)", (f"eve{ESC}", f"boom{ESC}"))
    for args in (("history", "--audit"), ("history",), ("status",)):
        proc = run(root, *args)
        assert proc.returncode == 0, (args, proc.stderr)
        outputs.append(proc.stdout + proc.stderr)
    text = "\n".join(outputs)
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b" in text


def test_unknown_names_with_controls_are_shown_escaped(tmp_path: Path) -> None:
    root = write_practika_project(tmp_path / "app")
    proc = run(root, "status", f"dev{ESC}")
    assert proc.returncode == 2 and "\x1b" not in proc.stderr and "\\x1b" in proc.stderr


def _ipv6_project(tmp_path: Path, port: int) -> Path:
    root = write_practika_project(tmp_path / "app")
    cfg = yaml.safe_load((root / "stageflow.yml").read_text())
    cfg["environments"]["dev"]["url"] = f"http://[::1]:{port}"
    cfg["nginx"] = {"enabled": "off"}
    (root / "stageflow.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root


def test_ipv6_health_urls_are_valid_and_probe_a_real_server(tmp_path: Path) -> None:
    class V6(HTTPServer):
        address_family = socket.AF_INET6

    class Ok(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health/" else 404)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return

    server = V6(("::1", 0), Ok)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        root = _ipv6_project(tmp_path, port)
        ctx = load_env_context(root, "dev", environ=dict(os.environ))
        rt = LocalRuntime(ctx, Runner())
        assert rt.listen_host == "::1"
        assert rt.public_probe()[0] == f"http://[::1]:{port}/health/"
        assert is_healthy(ctx, rt)[0]
        assert rt.port_in_use(port) and not rt.port_in_use(free_port())
        proc = run(root, "status")
        assert proc.returncode == 0 and f"http://[::1]:{port}" in proc.stdout  # nothing deployed: no probe
    finally:
        server.shutdown()


@pytest.mark.e2e
def test_a_deploy_on_an_ipv6_url_serves_through_nginx(practika: App) -> None:
    cfg_path = practika.root / "stageflow.yml"
    cfg = yaml.safe_load(cfg_path.read_text())
    port = free_port()
    cfg["environments"]["dev"]["url"] = f"http://[::1]:{port}"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    practika.commit("dev on IPv6")
    practika.sf("deploy", "dev")
    import httpx

    r = httpx.get(f"http://[::1]:{port}/health/", timeout=5)
    assert r.status_code == 200
    # nginx.conf includes the site `config nginx` renders, bound to the URL's address.
    conf = (practika.root / ".stageflow" / "nginx" / "dev" / "practika-dev.conf").read_text()
    assert f"listen [::1]:{port};" in conf
    assert "/practika-dev.conf;" in (practika.root / ".stageflow" / "nginx" / "dev" / "nginx.conf").read_text()
    upstream = (practika.root / ".stageflow" / "nginx" / "dev" / "upstream-dev.conf").read_text()
    assert "server [::1]:" in upstream
