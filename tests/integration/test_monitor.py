"""The monitor against real PostgreSQL, Redis, processes, logs, and a recording receiver standing in for Slack."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from stageflow.monitor.engine import Cycle, Monitor
from stageflow.runner import Runner
from stageflow.state.store import Store
from tests.support.postgres import PostgresServer
from tests.support.receiver import Receiver
from tests.support.redis import RedisServer

pytestmark = pytest.mark.integration
STAGEFLOW = Path(sys.executable).parent / "stageflow"
DB_PASSWORD = "Mon-Pw 'quoted' ; $(x)"


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def app_server() -> Iterator[str]:
    """The app's public URL: a real HTTP server answering 200 on 127.0.0.1."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class Clock:
    """An injected clock: each cycle is one second later, whatever the machine's pace."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Project:
    root: Path
    environ: dict[str, str]
    clock: Clock

    def monitor(self, window: float = 0.3) -> Monitor:
        store = Store(self.root / ".stageflow" / "state.db")
        m = Monitor(self.root, store, Runner(), ["dev"], environ=self.environ, clock=self.clock, host=False,
                    window=window)
        m.sleep = self.clock.sleep
        return m

    def cycle(self, m: Monitor, step: float = 1.0) -> Cycle:
        async def go() -> Cycle:
            c = await m.cycle()
            await m.deliver()
            return c

        self.clock.now += step
        return asyncio.run(go())


def project(tmp_path: Path, url: str, receiver: Receiver, *, extra: dict[str, Any] | None = None,
            services: dict[str, Any] | None = None) -> Project:
    root = tmp_path / "app"
    root.mkdir(parents=True)
    cfg: dict[str, Any] = {
        "project": "mon",
        "services": services or {"web": {"command": "python3 -m http.server {port} --bind {host}", "port": 8000,
                                          "health": {"path": "/health/"}}},
        "database": {"engine": "none"},
        "environments": {"dev": {"url": url}},
        "nginx": {"enabled": "off"},
        "monitoring": {"timeout": "5s", "consecutive": 2, "health_json": {"status": "ok"}},
        "alerts": {"slack": {"webhook": "${SLACK_WEBHOOK}", "environments": ["dev"]}, "min_gap": "50ms"},
    }
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    (root / "stageflow.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (root / ".stageflow").mkdir()
    environ = {"SLACK_WEBHOOK": receiver.url + "/slack", "PATH": os.environ["PATH"]}
    return Project(root, environ, Clock())


def texts(receiver: Receiver) -> list[str]:
    return [b["text"] for b in receiver.delivered()]


def severities(obs: Cycle, check: str) -> list[str]:
    return [o.severity for o in obs.observations if o.check == check]


def test_database_and_cache_outages_alert_once_and_resolve_once(
        tmp_path: Path, app_server: str, receiver: Receiver, postgres_server: PostgresServer,
        redis_server: RedisServer) -> None:
    postgres_server.create_database("mon_dev", "mon_user", DB_PASSWORD)
    p = project(tmp_path, app_server, receiver, extra={
        "database": {"engine": "postgres", "name": "mon_{env}", "user": "mon_user", "password": "${DB_PW}",
                     "host": "127.0.0.1", "port": postgres_server.port},
        "cache": {"engine": "redis", "url": "${REDIS_URL}"}})
    p.environ.update({"DB_PW": DB_PASSWORD, "REDIS_URL": redis_server.url()})
    m = p.monitor()
    for _ in range(3):
        c = p.cycle(m)
        assert {o.check: o.severity for o in c.observations} == {
            "http": "ok", "response_time": "ok", "postgres": "ok", "db_connections": "ok",
            "long_transaction": "ok", "redis": "ok"}, [o.summary for o in c.observations]
    assert receiver.received == []

    with postgres_server.outage():
        for _ in range(4):
            c = p.cycle(m)
            assert severities(c, "postgres") == ["critical"]
        (msg,) = receiver.delivered()
        assert msg["text"].startswith("[FIRING] CRITICAL dev: postgres mon_dev@127.0.0.1:")
        att = msg["attachments"][0]
        assert att["color"] == "#d40e0d" and "PostgreSQL is down" in att["text"]
        assert "Hint: is the server running? pg_isready" in att["text"]
        assert {"title": "Environment", "value": "dev", "short": True} in att["fields"]
    for _ in range(3):
        c = p.cycle(m)
    assert severities(c, "postgres") == ["ok"]
    assert texts(receiver)[1:] == [texts(receiver)[1]] and texts(receiver)[1].startswith("[RESOLVED] CRITICAL dev")
    assert receiver.delivered()[1]["attachments"][0]["color"] == "#2eb886"

    redis_server.stop()
    try:
        for _ in range(3):
            c = p.cycle(m)
        assert severities(c, "redis") == ["critical"]
    finally:
        redis_server.start()
    for _ in range(3):
        p.cycle(m)
    got = texts(receiver)[2:]
    assert len(got) == 2 and got[0].startswith("[FIRING] CRITICAL dev: redis 127.0.0.1:")
    assert got[1].startswith("[RESOLVED] CRITICAL dev: redis")
    assert DB_PASSWORD not in repr(receiver.received) and redis_server.password not in repr(receiver.received)


def test_the_app_health_alert_folds_under_the_database(
        tmp_path: Path, receiver: Receiver, postgres_server: PostgresServer) -> None:
    postgres_server.create_database("mon_dev", "mon_user", DB_PASSWORD)
    # The app's URL refuses connections: its alert belongs under the database's while that is down.
    p = project(tmp_path, "http://127.0.0.1:9", receiver, extra={
        "database": {"engine": "postgres", "name": "mon_{env}", "user": "mon_user", "password": DB_PASSWORD,
                     "host": "127.0.0.1", "port": postgres_server.port}})
    m = p.monitor()
    with postgres_server.outage():
        for _ in range(3):
            p.cycle(m)
    (msg,) = receiver.delivered()
    assert "postgres" in msg["text"]
    assert {"title": "Also affected", "value": "http (public)", "short": False} in msg["attachments"][0]["fields"]
    # The database is back but the app still fails: now the app's own alert speaks.
    for _ in range(3):
        p.cycle(m)
    assert [t.split(":")[0] for t in texts(receiver)] == ["[FIRING] CRITICAL dev", "[RESOLVED] CRITICAL dev",
                                                          "[FIRING] CRITICAL dev"]
    assert "http public" in texts(receiver)[2]


BURN = "python3 -c 'while True: pass'"


def test_cpu_burn_warns_after_the_for_duration_and_a_flapping_burn_sends_nothing(
        tmp_path: Path, app_server: str, receiver: Receiver) -> None:
    from stageflow.config.loader import load_env_context
    from stageflow.runtimes.local import LocalRuntime

    p = project(tmp_path, app_server, receiver, services={
        "web": {"command": "sleep 600 # {port}", "port": 8000},  # idle: only the burner may cross the threshold
        "burner": {"command": BURN}}, extra={
        "monitoring": {"consecutive": 2, "fire_after": "3s",
                       # Low: this 2-core machine is shared, the burner may get little of a core.
                       "environments": {"dev": {"thresholds": {"cpu": {"warning": 3}}}}}})
    ctx = load_env_context(p.root, "dev", p.environ)
    rt = LocalRuntime(ctx, Runner())
    # Inside the app root: the runtime only ever signals processes that run from there.
    release = p.root / ".stageflow" / "releases" / "r1"
    release.mkdir(parents=True)
    procs = rt.start_color(release, "r1", "blue", None)
    burner = next(x for x in procs if x.service == "burner")
    try:
        m = p.monitor(window=0.8)
        # Flapping: the burner paused every other check.
        for i in range(8):
            os.killpg(burner.pid, signal.SIGSTOP if i % 2 else signal.SIGCONT)
            c = p.cycle(m)
        os.killpg(burner.pid, signal.SIGCONT)
        assert receiver.received == []
        sent_at = []
        for _ in range(6):
            c = p.cycle(m)
            cpu = next(o for o in c.observations if o.check == "service_cpu" and o.target == "burner")
            assert cpu.severity == "warning", cpu.summary
            sent_at.append(len(receiver.delivered()))
        # Bad from the 1st of these cycles: pending, 2 in a row after 1 s, but `for` 3 s → fires on the 4th.
        assert sent_at == [0, 0, 0, 1, 1, 1]
        (msg,) = receiver.delivered()
        assert msg["text"].startswith("[FIRING] WARNING dev: service_cpu burner: burner CPU")
        assert msg["attachments"][0]["color"] == "#e8a317"
        value = next(f["value"] for f in msg["attachments"][0]["fields"] if f["title"] == "Value")
        assert value.endswith("(threshold 3%)")
    finally:
        os.killpg(burner.pid, signal.SIGCONT)
        assert rt.stop_color("blue", 2.0) == 2
        for x in procs:  # never leave a burner behind on a shared machine, whatever happened
            with contextlib.suppress(ProcessLookupError):
                os.killpg(x.pid, signal.SIGKILL)


TRACEBACK = textwrap.dedent("""\
    Traceback (most recent call last):
      File "/app/views.py", line 12, in index
        return 1 / 0
    ZeroDivisionError: division by zero
    """)


def test_tracebacks_and_nginx_5xx_are_counted_and_alert_at_the_threshold(
        tmp_path: Path, app_server: str, receiver: Receiver) -> None:
    p = project(tmp_path, app_server, receiver, extra={
        "monitoring": {"consecutive": 1, "min_requests": 10,
                       "thresholds": {"log_errors": {"warning": 4}, "error_rate": {"warning": 5, "critical": 15}}}})
    Store(p.root / ".stageflow" / "state.db").set_env_state("dev", "r1", None, {"slot": "blue", "port": 18000}, False)
    logs = p.root / ".stageflow" / "run" / "dev" / "logs"
    logs.mkdir(parents=True)
    log = logs / "web-blue.log"
    log.write_text("old ERROR from before the monitor started\n")
    access = p.root / ".stageflow" / "nginx" / "dev" / "access.log"
    access.parent.mkdir(parents=True)
    access.write_text("")
    m = p.monitor()
    c = p.cycle(m)
    assert severities(c, "log_errors") == ["ok"]  # what was there before is history
    with log.open("a") as fh:
        fh.write("INFO started\n" + TRACEBACK + "ERROR Internal Server Error: /orders/17\n" + TRACEBACK)
    line = '127.0.0.1 - - [01/Dec/2026:09:00:00 +0000] "GET /orders/{n} HTTP/1.1" {s} 12 "-" "curl" rt={t}\n'
    with access.open("a") as fh:
        for n in range(18):
            fh.write(line.format(n=n, s=500 if n % 6 == 0 else 200, t=f"0.0{n % 10}"))
    c = p.cycle(m)
    (logs_obs,) = [o for o in c.observations if o.check == "log_errors"]
    assert logs_obs.value == 3 and logs_obs.severity == "ok"  # 1 error line + 2 tracebacks: below 4
    assert logs_obs.details[0].startswith("new: Traceback (most recent call last):")
    assert "ZeroDivisionError: division by zero" in logs_obs.details[0]
    (rate,) = [o for o in c.observations if o.check == "error_rate"]
    assert rate.severity == "critical" and rate.summary == "3 of 18 requests failed with 5xx (16.7%)"
    (latency,) = [o for o in c.observations if o.check == "latency"]
    # 18 requests in the one second since the last check (the injected clock)
    assert latency.summary == "p50 40ms, p95 90ms, p99 90ms over 18 requests (18.0/s)"
    with log.open("a") as fh:
        fh.write(TRACEBACK * 3 + "ERROR payment gateway timeout after 30s\n" * 2)
    c = p.cycle(m)
    (logs_obs,) = [o for o in c.observations if o.check == "log_errors"]
    assert logs_obs.value == 5 and logs_obs.severity == "warning"
    assert logs_obs.details == ["new: ERROR payment gateway timeout after 30s"]  # the traceback kind is known
    (rate,) = [o for o in c.observations if o.check == "error_rate"]
    assert rate.summary.startswith("0 request(s), 0 5xx: below 10")  # not judged: the alert stays as it was
    got = texts(receiver)
    assert len(got) == 2
    assert any(t.startswith("[FIRING] CRITICAL dev: error_rate nginx: 3 of 18 requests failed") for t in got)
    assert any(t.startswith("[FIRING] WARNING dev: log_errors web: 2 error line(s), 3 traceback(s)") for t in got)


def outbox(root: Path) -> list[tuple[str, str]]:
    con = sqlite3.connect(root / ".stageflow" / "state.db")
    try:
        return [(r[0], r[1]) for r in con.execute("SELECT kind, status FROM outbox ORDER BY id")]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def wait(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_continuous_killed_with_kill_9_loses_and_doubles_nothing(
        tmp_path: Path, app_server: str, receiver: Receiver, postgres_server: PostgresServer) -> None:
    postgres_server.create_database("mon_dev", "mon_user", DB_PASSWORD)
    p = project(tmp_path, app_server, receiver, extra={
        "database": {"engine": "postgres", "name": "mon_{env}", "user": "mon_user", "password": DB_PASSWORD,
                     "host": "127.0.0.1", "port": postgres_server.port},
        "monitoring": {"timeout": "3s", "consecutive": 2}})
    env = {**os.environ, **p.environ}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen([str(STAGEFLOW), "monitor", "continuous", "1"], cwd=p.root, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL)

    receiver.always(500)  # Slack is down: whatever fires waits in the outbox
    proc = start()
    try:
        postgres_server.stop()
        try:
            wait(lambda: ("firing", "pending") in outbox(p.root))
            wait(lambda: len(receiver.received) >= 1)  # it tried, and got 500
            proc.kill()  # kill -9
            proc.wait(10)
            receiver.always(200)
            proc = start()
            firing = receiver.wait_for(1, timeout=30)
            time.sleep(3)  # a few more cycles: the firing alert stays one message
            proc.kill()
            proc.wait(10)
            proc = start()
            time.sleep(3)
            assert len(receiver.delivered()) == 1
        finally:
            postgres_server.start()
        got = receiver.wait_for(2, timeout=30)
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    got = receiver.delivered()
    assert [g["text"].split(":")[0] for g in got] == ["[FIRING] CRITICAL dev", "[RESOLVED] CRITICAL dev"], got
    assert firing[0] == got[0]
    assert all(status == "delivered" for _, status in outbox(p.root))
    # Every attempt is on record: the 500s before the kill and the successes after.
    con = sqlite3.connect(p.root / ".stageflow" / "state.db")
    results = [r[0] for r in con.execute("SELECT result FROM send_attempts ORDER BY id")]
    con.close()
    assert "retry" in results and results.count("ok") == 2


def test_cli_once_table_exit_codes_and_bad_variables(tmp_path: Path, app_server: str, receiver: Receiver) -> None:
    # This shared machine's own load must not decide the exit code: host levels warn only.
    calm = {"monitoring": {"thresholds": {k: {"warning": 99.9} for k in ("cpu", "memory", "disk")}}}
    p = project(tmp_path, app_server, receiver, extra=calm)
    env = {**os.environ, "SLACK_WEBHOOK": ""}
    run = subprocess.run([str(STAGEFLOW), "monitor", "env", "dev"], cwd=p.root, env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[0].split() == ["ENV", "CHECK", "TARGET", "STATUS", "VALUE", "THRESHOLD", "DETAIL"]
    assert any(line.split()[:4] == ["dev", "http", "public", "ok"] for line in run.stdout.splitlines())
    assert run.stderr.count("alerts.slack.webhook: ${SLACK_WEBHOOK} is not set") == 1
    # status and other commands are not affected by the unset webhook
    assert subprocess.run([str(STAGEFLOW), "status"], cwd=p.root, env=env, capture_output=True,
                          timeout=60).returncode == 0
    bad = subprocess.run([str(STAGEFLOW), "monitor", "all"], cwd=p.root, env={**env, "CPU_USAGE": "eighty"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        "error: CPU_USAGE='eighty': must be a number like 80% (fix or unset CPU_USAGE)")
    down = project(tmp_path / "down", "http://127.0.0.1:9", receiver, extra=calm)
    run = subprocess.run([str(STAGEFLOW), "monitor", "all", "--json"], cwd=down.root, env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 1
    import json

    doc = json.loads(run.stdout)
    assert doc["critical"] and any(c["check"] == "http" and c["status"] == "critical" for c in doc["checks"])


class Hostile(BaseHTTPRequestHandler):
    """An app whose error page carries terminal control sequences (retitle the window, clear the screen)."""

    def do_GET(self) -> None:
        body = b"\x1b]2;owned\x07\x1b[2J\x1b[31mboom"
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_cli_shows_what_the_app_sends_escaped(tmp_path: Path, receiver: Receiver) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        calm = {"monitoring": {"thresholds": {k: {"warning": 99.9} for k in ("cpu", "memory", "disk")}}}
        p = project(tmp_path, f"http://127.0.0.1:{server.server_address[1]}", receiver, extra=calm)
        run = subprocess.run([str(STAGEFLOW), "monitor", "env", "dev"], cwd=p.root,
                             env={**os.environ, "SLACK_WEBHOOK": ""}, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert run.returncode == 1, run.stdout + run.stderr
    (line,) = [ln for ln in run.stdout.splitlines() if ln.split()[:4] == ["dev", "http", "public", "CRITICAL"]]
    assert "HTTP 500 (expected 200): \\x1b]2;owned\\x07\\x1b[2J\\x1b[31mboom" in line
    assert "\x1b" not in run.stdout + run.stderr and "\x07" not in run.stdout


def test_report_in_markdown_html_and_json_and_prometheus_metrics(
        tmp_path: Path, app_server: str, receiver: Receiver) -> None:
    import json

    import httpx

    from stageflow.monitor.metrics import Metrics
    from stageflow.monitor.report import build_report, render
    from tests.support.postgres import free_port

    p = project(tmp_path, app_server, receiver, extra={"monitoring": {
        "consecutive": 1, "endpoints": [{"url": "http://127.0.0.1:9/api/", "name": "api"}]}})
    m = p.monitor()
    for _ in range(4):
        p.cycle(m, step=60)
    rep = build_report(m, "dev", 3600, now=p.clock.now + 1)
    assert rep.current.uptime == 100.0 and rep.current.checks == 4
    assert [i["fingerprint"] for i in rep.incidents] == ["dev/http/api"] and rep.incidents[0]["end"] is None
    assert rep.breaches == {"http": 1}
    md = render(rep, "md")
    assert "| uptime | 100.00% |" in md and "- **critical** dev/http/api: connection refused" in md
    html = render(rep, "html")
    assert html.count("<svg") == 1 and "<polyline" in html  # response time; no CPU samples without host checks
    assert "<script" not in html
    assert json.loads(render(rep, "json"))["incidents"][0]["severity"] == "critical"

    port = free_port()
    metrics = Metrics(port)
    try:
        metrics.update(p.cycle(m, step=60), m.state)
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        metrics.close()
    assert 'stageflow_check_severity{check="http",env="dev",target="api"} 3.0' in text
    assert 'stageflow_alerts_open{env="dev",severity="critical",state="firing"} 1.0' in text


def test_tls_days_left_of_an_https_url(tmp_path: Path, receiver: Receiver) -> None:
    import ssl

    from tests.support.nginx import self_signed_cert
    from tests.support.postgres import free_port

    port = free_port()
    p = project(tmp_path, f"https://127.0.0.1:{port}", receiver)
    # Where the local runtime keeps a loopback rehearsal's self-signed pair: the monitor trusts it.
    cert, key = self_signed_cert(p.root / ".stageflow" / "tls" / "dev")
    server = ThreadingHTTPServer(("127.0.0.1", port), Health)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        c = p.cycle(p.monitor())
    finally:
        server.shutdown()
        server.server_close()
    by = {o.check: o for o in c.observations}
    assert by["http"].severity == "ok", by["http"].summary  # verified against the served certificate
    assert by["tls"].severity == "critical" and by["tls"].summary == "certificate expires in 1 days"
    assert by["tls"].threshold == 14 and by["tls"].hint == "renew the certificate"


def test_a_deploy_silences_its_env_and_a_still_firing_alert_is_announced_after(
        tmp_path: Path, receiver: Receiver) -> None:
    from stageflow.deploy.lock import EnvLock

    p = project(tmp_path, "http://127.0.0.1:9", receiver)
    m = p.monitor()
    lock = EnvLock(m.store, "dev", "tester", "stageflow deploy dev")
    lock.acquire()
    try:
        for _ in range(3):
            p.cycle(m)
        assert receiver.received == []
        assert [a.state for a in m.state.alerts()] == ["firing"]
    finally:
        lock.release()
    p.cycle(m)
    (msg,) = receiver.delivered()
    assert msg["text"].startswith("[FIRING] CRITICAL dev: http public: connection refused")
    notes = [r.note for r in m.state.history(0) if r.transition == "silenced"]
    assert notes and set(notes) == {"dev is being deployed"}


def test_postgres_long_transaction_and_redis_memory(
        tmp_path: Path, app_server: str, receiver: Receiver, postgres_server: PostgresServer,
        redis_server: RedisServer) -> None:
    postgres_server.create_database("mon_dev", "mon_user", DB_PASSWORD)
    p = project(tmp_path, app_server, receiver, extra={
        "database": {"engine": "postgres", "name": "mon_{env}", "user": "mon_user", "password": DB_PASSWORD,
                     "host": "127.0.0.1", "port": postgres_server.port},
        "cache": {"engine": "redis", "url": redis_server.url()},
        "monitoring": {"consecutive": 1, "thresholds": {"long_transaction_s": {"warning": 1},
                                                         "redis_memory": {"warning": 10}}}})
    client = redis_server.client()
    client.config_set("maxmemory", str(4 * 2**20))
    client.set("k", "x" * 2**20)
    # As the app's own role: PostgreSQL shows a role the transactions of its own sessions only
    # (or all of them with pg_read_all_stats).
    with postgres_server.connect("mon_dev", user="mon_user", password=DB_PASSWORD) as conn:
        conn.execute("BEGIN")
        conn.execute("SELECT 1")
        time.sleep(1.5)  # a transaction left open, as a stuck worker would
        c = p.cycle(p.monitor())
    by = {o.check: o for o in c.observations}
    assert by["long_transaction"].severity == "warning" and by["long_transaction"].value is not None
    assert by["long_transaction"].value >= 1.4
    assert by["redis_memory"].severity == "warning" and by["redis_memory"].summary.endswith("of 4 MB (" +
                                                                                           f"{by['redis_memory'].value:.0f}%)")
    assert "connections" in by["db_connections"].summary and by["postgres"].summary.startswith("up, SELECT 1 in")
    assert sorted(m["text"].split(":")[1].strip().split()[0] for m in receiver.delivered()) == [
        "long_transaction", "redis_memory"]


def test_the_wrapper_script_and_alerts_json(tmp_path: Path, receiver: Receiver) -> None:
    import json

    calm = {"monitoring": {"consecutive": 1,
                           "thresholds": {k: {"warning": 99.9} for k in ("cpu", "memory", "disk")}}}
    p = project(tmp_path, "http://127.0.0.1:9", receiver, extra=calm)
    env = {**os.environ, "STAGEFLOW": str(STAGEFLOW), "SLACK_WEBHOOK": receiver.url + "/slack"}
    script = Path(__file__).resolve().parents[2] / "scripts" / "monitoring-system.sh"
    run = subprocess.run([str(script), "env", "dev"], cwd=p.root, env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 1 and "connection refused" in run.stdout, run.stdout + run.stderr
    (msg,) = receiver.wait_for(1)
    assert msg["text"].startswith("[FIRING] CRITICAL dev: http public")
    out = subprocess.run([str(script), "alerts", "--json"], cwd=p.root, env=env, capture_output=True, text=True,
                         timeout=60)
    doc = json.loads(out.stdout)
    # (this shared machine's host CPU may warn too: only the dev env is asserted)
    assert [(a["fingerprint"], a["state"], a["severity"]) for a in doc["active"] if a["env"] == "dev"] == [
        ("dev/http/public", "firing", "critical")]
    assert doc["last_24h"]["fired_by_severity"]["critical"] == 1 and doc["outbox"] == {"pending": 0, "failed": []}
    text = subprocess.run([str(script), "alerts"], cwd=p.root, env=env, capture_output=True, text=True, timeout=60)
    assert text.stdout.splitlines()[1].split()[:5] == ["CRITICAL", "firing", "dev", "http", "public"]
    report = subprocess.run([str(script), "report", "dev", "--format", "html", "-o", str(tmp_path / "r.html")],
                            cwd=p.root, env=env, capture_output=True, text=True, timeout=60)
    assert report.returncode == 0 and (tmp_path / "r.html").read_text().startswith("<!doctype html>")
    bad = subprocess.run([str(script), "report", "dev", "--format", "pdf"], cwd=p.root, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: unknown report format 'pdf' (use md, html or json)"
