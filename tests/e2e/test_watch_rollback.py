"""Failure after cutover: a release that passes the health gate and then turns unhealthy during the
watch period is rolled back automatically, and the previous release serves again.

The app is a tiny real HTTP server (no requirements file, so no virtualenv) whose release can carry a
`flip` file: such a release answers 200 at first and 503 from 1.5 s after it started.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.app import STAGEFLOW, App, free_port, git, teardown_app

pytestmark = pytest.mark.e2e

SERVER = '''
import http.server, os, sys, time
START = time.monotonic()
FLIP = os.path.exists("flip")

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        bad = FLIP and time.monotonic() - START > 1.5
        body = (b'{"status": "error"}' if bad else b'{"status": "ok", "version": "%s"}'
                % os.environ["APP_VERSION"].encode())
        self.send_response(503 if bad else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[App]:
    root = tmp_path / "app"
    root.mkdir()
    (root / "server.py").write_text(SERVER)
    port = free_port()
    (root / "stageflow.yml").write_text(f"""
project: tiny
services:
  web:
    command: python3 server.py {{port}}
    port: 8000
    health: {{path: /health/, interval: 100ms, deadline: 10s, timeout: 2s}}
database: {{engine: none}}
environments:
  staging:
    url: http://127.0.0.1:{port}
    app_ports: [{free_port()}, {free_port()}]
    watch: 4s
    drain: 2s
nginx: {{enabled: "on"}}
""")
    (root / ".gitignore").write_text(".stageflow/\nlogs/\n.env.*\n")
    git(root, "init", "-q")
    app = App(root, {"staging": port})
    app.commit("tiny app")
    yield app
    teardown_app(app)


def test_unhealthy_during_watch_rolls_back_to_previous(tiny: App) -> None:
    tiny.sf("deploy", "staging", "--skip-check", "config")
    good = tiny.status()["staging"]["release"]
    (tiny.root / "flip").write_text("1")
    tiny.commit("turns unhealthy after start")
    failed = tiny.sf("deploy", "staging", "--skip-check", "config", check=False)
    assert failed.returncode == 1
    assert "watch period" in failed.stderr and "HTTP 503" in failed.stderr
    r = httpx.get(f"http://127.0.0.1:{tiny.ports['staging']}/health/", timeout=5)
    assert r.status_code == 200 and r.json()["version"] == good
    dep = tiny.last_deployment("staging")
    names = [s["name"] for s in dep["steps"]]
    assert names.index("cutover") < names.index("watch") < names.index("rollback")
    rollback = next(s for s in dep["steps"] if s["name"] == "rollback")
    assert "traffic back on" in rollback["detail"] and good in rollback["detail"]
    assert tiny.status()["staging"]["release"] == good
    # the skipped check is in the audit trail
    audit = json.loads(tiny.sf("history", "--audit", "--json").stdout)
    assert any(e["outcome"] == "skip-check" and "config" in e["detail"] for e in audit)
    assert subprocess.run([str(STAGEFLOW), "lock", "status"], cwd=tiny.root, capture_output=True,
                          text=True, check=True).stdout.strip() == "staging: unlocked"
