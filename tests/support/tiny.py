"""A tiny real HTTP app for fast e2e deploys: no requirements file, so no virtualenv to build.

It answers every GET with the release it runs (``APP_VERSION``). A release carrying a ``flip`` file
answers 200 at first and 503 from 1.5 s after it started. Each request to ``/leak/`` holds on to
2 MB more, so a memory gate can see the service grow. Its optional release command
(``migrate.py``) logs when it starts and ends, and takes ``MIGRATION_SECONDS``.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.app import App, free_port, git

SERVER = '''
import http.server, os, sys, time
START = time.monotonic()
FLIP = os.path.exists("flip")
HOARD = []

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/leak"):
            HOARD.append(b"x" * (2 << 20))
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

# Appends "start <t>" and "end <t>" around a few seconds of work, like a slow migration.
MIGRATE = '''
import os, sys, time
log = os.environ["MIGRATION_LOG"]
with open(log, "a") as f:
    f.write(f"start {time.time()}\\n")
time.sleep(float(os.environ.get("MIGRATION_SECONDS", "0")))
with open(log, "a") as f:
    f.write(f"end {time.time()}\\n")
'''


def make_tiny(tmp_path: Path, *, watch: str, drain: str, release: bool = False, extra: str = "") -> App:
    """A committed tiny app with one ``staging`` env behind nginx (``release``: the slow migration;
    ``extra``: more top-level ``stageflow.yml`` lines)."""
    root = tmp_path / "app"
    root.mkdir()
    (root / "server.py").write_text(SERVER)
    (root / "migrate.py").write_text(MIGRATE)
    port = free_port()
    log = tmp_path / "migrations.log"
    release_line = "    release: python3 migrate.py\n" if release else ""
    (root / "stageflow.yml").write_text(f"""
project: tiny
services:
  web:
    command: python3 server.py {{port}}
    port: 8000
{release_line}    health: {{path: /health/, interval: 100ms, deadline: 10s, timeout: 2s}}
database: {{engine: none}}
environments:
  staging:
    url: http://127.0.0.1:{port}
    app_ports: [{free_port()}, {free_port()}]
    watch: {watch}
    drain: {drain}
    skip_checks: [config]
    variables: {{MIGRATION_LOG: "{log}", MIGRATION_SECONDS: "${{MIGRATION_SECONDS:-0}}"}}
nginx: {{enabled: "on"}}
{extra}""")
    (root / ".gitignore").write_text(".stageflow/\nlogs/\n.env.*\n")
    git(root, "init", "-q")
    app = App(root, {"staging": port})
    app.commit("tiny app")
    return app
