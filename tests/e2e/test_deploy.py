"""The main job against real processes: promotion, failed deploys, rollback, cleanup, secrets."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from tests.support.app import ENVS, App

pytestmark = pytest.mark.e2e

#: The headers `config nginx` puts on every response; HSTS joins them over https only (RFC 6797:
#: a browser ignores it over plain http, and sending it there would say nothing).
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'; "
                               "object-src 'none'; img-src 'self' data:",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
    "permissions-policy": "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "
                          "microphone=(), payment=(), usb=()",
}
HSTS = ("strict-transport-security", "max-age=63072000")


def assert_serves_the_hardened_site(app: App) -> None:
    """Real responses through each env's deployed nginx carry what `config nginx` writes."""
    import httpx

    from stageflow.monitor.checks.logs import scan_access_log

    nginx = app.root / ".stageflow" / "nginx"
    for env in ENVS:
        verify = app.ssl_context(env) if env == "production" else True
        with httpx.Client(verify=verify, timeout=5) as client:
            expected = {**SECURITY_HEADERS, **(dict([HSTS]) if env == "production" else {})}
            token = (nginx / env / "probe.token").read_text().strip()
            for path, auth in (("/", None), ("/health/", None), ("/no-such-page/", None)):
                r = client.get(app.url(env, path), auth=auth)
                # staging is behind basic auth (its health path is not), and says so with the headers on.
                want = 401 if env == "staging" and path != "/health/" else 404 if path == "/no-such-page/" else 200
                assert r.status_code == want, (env, path, r.status_code)
                for name, value in expected.items():
                    assert r.headers.get(name) == value, (env, path, name, r.headers.get(name))
                if env != "production":
                    assert HSTS[0] not in r.headers, (env, path)
                assert r.headers["server"] == "nginx"  # server_tokens off: no version
                assert "x-stageflow-upstream" not in r.headers  # only stageflow's own probes learn it
            probe = client.get(app.url(env), headers={"X-Stageflow-Probe": token})
            assert probe.headers["x-stageflow-upstream"].startswith("127.0.0.1:"), probe.headers
            if env == "staging":
                password = (app.root / ".stageflow" / "secrets" / "basic-auth-staging.txt").read_text().strip()
                r = client.get(app.url(env, "/"), auth=("practika", password))
                assert r.status_code == 200 and r.headers["x-frame-options"] == "DENY"
                assert client.get(app.url(env, "/"), auth=("practika", "wrong")).status_code == 401
            if env == "production":
                r = client.get(app.url(env, "/admin/"))  # loopback may reach admin paths: Django answers
                assert r.status_code == 404 and r.headers["x-content-type-options"] == "nosniff"
        # The access log keeps the format the monitor reads (request time included).
        scan = scan_access_log((nginx / env / "access.log").read_text())
        assert scan.requests >= 4 and len(scan.times_ms) == scan.requests, (env, scan)
        site = (nginx / env / f"practika-{env}.conf").read_text()
        assert f"`stageflow config nginx {env}`" in site and "limit_req_zone" in site
        assert f"include {nginx / env}/practika-{env}.conf;" in (nginx / env / "nginx.conf").read_text()


def test_full_promotes_one_release_and_history_has_timed_steps(practika: App) -> None:
    out = practika.sf("full")
    assert "promoted" in out.stdout
    status = practika.status()
    assert set(status) == {"dev", "staging", "production"}
    releases = {row["release"] for row in status.values()}
    assert len(releases) == 1 and None not in releases
    release = releases.pop()
    for env, row in status.items():
        assert row["healthy"] is True, (env, row)
        assert row["runtime"] == "local" and row["url"] == practika.url(env, "")
        assert row["commit"] and row["deployed_at"]
        code, body = practika.get(env)
        assert code == 200 and body["version"] == release
    assert_serves_the_hardened_site(practika)
    history = json.loads(practika.sf("history", "--json").stdout)
    assert [d["env"] for d in history[:3]] == ["production", "staging", "dev"]
    for dep in history[:3]:
        assert dep["outcome"] == "succeeded" and dep["release_id"] == release
        names = [s["name"] for s in dep["steps"]]
        assert names[:3] == ["preflight", "backup", "release"]
        assert {"migrate", "start", "health", "cutover", "watch"} <= set(names)
        assert all(s["seconds"] is not None and s["seconds"] >= 0 for s in dep["steps"])
    # the workflow log exists, every line timestamped
    logs = sorted((practika.root / "logs").glob("workflow_*.log"))
    assert logs
    for line in logs[-1].read_text().splitlines():
        assert line[:4].isdigit() and line[10] == "T", line
    # the audit trail names who did it
    audit = json.loads(practika.sf("history", "--audit", "--json").stdout)
    assert any(e["command"].endswith("full") and e["outcome"] == "succeeded" for e in audit)
    assert all(e["actor"] and e["host"] for e in audit)
    # The human form: one line per env, plain columns, every env healthy on the same release.
    lines = practika.sf("status").stdout.splitlines()
    assert lines[0].split() == ["ENV", "RELEASE", "HEALTH", "URL", "RUNTIME", "DEPLOYED", "NOTES"]
    assert [ln.split()[:3] for ln in lines[1:]] == [[env, release, "healthy"] for env in ENVS]
    # The command people loop on reads the validated-config cache and /proc: none of these load.
    code = (
        "import sys\n"
        "import stageflow.cli.main as m\n"
        "heavy = ('pydantic', 'yaml', 'rich', 'psutil', 'http.client', 'cryptography', 'jinja2', 'httpx')\n"
        "def report(code):\n"
        "    sys.stdout.flush()\n"
        "    print('HEAVY', ','.join(x for x in heavy if x in sys.modules), 'EXIT', code)\n"
        "m._exit_now = report\n"
        "sys.argv = ['stageflow', 'status']\n"
        "m.run()\n"
    )
    probe = subprocess.run([sys.executable, "-c", code], cwd=practika.root, capture_output=True, text=True,
                           timeout=60)
    assert probe.stdout.splitlines()[-1] == "HEAVY  EXIT 0", probe.stdout + probe.stderr


def test_broken_release_keeps_previous_serving_in_production(practika: App) -> None:
    practika.sf("full")
    good = practika.status()["production"]["release"]
    practika.break_health()
    failed = practika.sf("deploy", "production", check=False)
    assert failed.returncode == 1
    assert "health gate failed" in failed.stderr
    assert "HTTP 503" in failed.stderr
    assert failed.stderr.count("\n") == 1, failed.stderr  # one line, no traceback
    code, body = practika.get("production")
    assert code == 200 and body["version"] == good
    assert practika.status()["production"]["release"] == good
    dep = practika.last_deployment("production")
    assert dep["outcome"] == "failed"
    names = [s["name"] for s in dep["steps"]]
    assert "rollback" in names and names.index("rollback") > names.index("health")
    health = next(s for s in dep["steps"] if s["name"] == "health")
    assert health["outcome"] == "failed" and "503" in health["detail"]
    # the failed release directory is gone, the serving one is untouched
    assert not (practika.root / ".stageflow" / "releases" / dep["release_id"]).exists()
    assert (practika.root / ".stageflow" / "releases" / good).is_dir()


def test_rollback_then_cleanup_keeps_current_and_previous(practika: App) -> None:
    practika.sf("deploy", "staging")
    first = practika.status()["staging"]["release"]
    for i in range(3):
        practika.touch_commit(f"change {i}")
        practika.sf("deploy", "staging")
    latest = practika.status()["staging"]["release"]
    previous = practika.status()["staging"]["previous"]
    assert latest != previous and first not in (latest, previous)
    practika.sf("rollback", "staging")
    st = practika.status()["staging"]
    assert st["release"] == previous and st["healthy"]
    assert practika.get("staging")[1]["version"] == previous
    assert st["previous"] == latest
    practika.sf("cleanup", "--keep", "2")
    left = {p.name for p in (practika.root / ".stageflow" / "releases").iterdir() if not p.name.startswith(".")}
    assert {previous, latest} <= left
    assert first not in left
    assert len(left) == 2
    # rollback to a release that is gone is refused, nothing changes
    gone = practika.sf("rollback", "staging", "--to", first, check=False)
    assert gone.returncode == 1 and "does not exist" in gone.stderr
    assert practika.status()["staging"]["release"] == previous


def test_without_nginx_deploy_is_stop_then_start_and_says_so(practika_no_nginx: App) -> None:
    app = practika_no_nginx
    app.sf("deploy", "dev")
    app.touch_commit()
    app.sf("deploy", "dev")
    st = app.status()["dev"]
    assert st["healthy"] and st["downtime"] is True
    dep = app.last_deployment("dev")
    stop = next(s for s in dep["steps"] if s["name"] == "stop-old")
    assert "downtime" in stop["detail"]
    assert dep["downtime"] == 1
    assert "downtime" in app.sf("status").stdout
    # a broken release without a proxy: the old one is started again, and the record keeps the downtime
    good = app.status()["dev"]["release"]
    app.break_health()
    assert app.sf("deploy", "dev", check=False).returncode == 1
    failed = app.last_deployment("dev")
    assert failed["outcome"] == "failed" and failed["downtime"] == 1
    st = app.status()["dev"]
    assert st["release"] == good and st["healthy"]


def test_secrets_never_leak(practika: App) -> None:
    practika.sf("full")
    practika.sf("deploy", "dev", "--dry-run")
    practika.sf("history")
    practika.sf("deploy", "nope", check=False)
    practika.break_health()
    practika.sf("deploy", "dev", check=False)
    text = practika.all_text()
    assert "canary-Secret" not in text
    # the secret really reached the app (so the check above is meaningful)
    db = practika.root / ".stageflow" / "state.db"
    assert db.exists()
    env = (practika.root / ".env.production").read_text()
    assert practika.secrets["production"] in env


def test_backup_before_every_deploy_and_sqlite_round_trip(practika: App) -> None:
    practika.sf("deploy", "dev")
    dbfile = practika.root / "data" / "practica_dev.sqlite3"
    con = sqlite3.connect(dbfile)
    con.execute("INSERT INTO notes_note (title, body, created) VALUES ('keep me', 'x', '2026-01-01')")
    con.commit()
    practika.touch_commit()
    practika.sf("deploy", "dev")
    dep = practika.last_deployment("dev")
    backup_step = next(s for s in dep["steps"] if s["name"] == "backup")
    assert backup_step["outcome"] == "ok" and "sha256" in backup_step["detail"]
    listed = json.loads(practika.sf("backup", "list", "dev", "--json").stdout)
    assert len(listed) == 1
    assert (practika.root / ".stageflow/backups/dev" / listed[0]["file"]).stat().st_mode & 0o777 == 0o600
    con.execute("DELETE FROM notes_note")
    con.commit()
    assert "OK" in practika.sf("backup", "verify", "dev").stdout
    refused = practika.sf("backup", "restore", "dev", check=False)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert con.execute("SELECT count(*) FROM notes_note").fetchone()[0] == 0
    practika.sf("backup", "restore", "dev", "--yes")
    assert con.execute("SELECT title FROM notes_note").fetchall() == [("keep me",)]
    con.close()


def test_rollback_restore_db_shows_what_is_lost_and_asks(practika: App) -> None:
    practika.sf("deploy", "dev")
    v1 = practika.status()["dev"]["release"]
    con = sqlite3.connect(practika.root / "data" / "practica_dev.sqlite3")
    con.execute("INSERT INTO notes_note (title, body, created) VALUES ('v1 data', '', '2026-01-01')")
    con.commit()
    practika.touch_commit()
    practika.sf("deploy", "dev")  # its backup holds 'v1 data'
    v2 = practika.status()["dev"]["release"]
    con.execute("INSERT INTO notes_note (title, body, created) VALUES ('v2 data', '', '2026-01-02')")
    con.commit()
    refused = practika.sf("rollback", "dev", "--restore-db", check=False)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert "will be lost" in refused.stdout
    assert practika.status()["dev"]["release"] == v2  # nothing changed
    assert len(con.execute("SELECT * FROM notes_note").fetchall()) == 2
    practika.sf("rollback", "dev", "--restore-db", "--yes")
    assert practika.status()["dev"]["release"] == v1
    assert con.execute("SELECT title FROM notes_note").fetchall() == [("v1 data",)]
    # a rollback without --restore-db never touches the database (v2 was rolled back away from,
    # so going back to it needs its name)
    practika.sf("rollback", "dev", "--to", v2)
    assert practika.status()["dev"]["release"] == v2
    assert con.execute("SELECT title FROM notes_note").fetchall() == [("v1 data",)]
    con.close()


def test_full_stops_at_the_first_failure(practika: App) -> None:
    practika.sf("full")
    before = {env: row["release"] for env, row in practika.status().items()}
    practika.break_health()
    failed = practika.sf("full", check=False)
    assert failed.returncode == 1 and "health gate failed" in failed.stderr
    after = practika.status()
    assert {env: row["release"] for env, row in after.items()} == before
    assert all(row["healthy"] for row in after.values())
    history = json.loads(practika.sf("history", "--json").stdout)
    assert history[0]["env"] == "dev" and history[0]["outcome"] == "failed"
    assert [d["env"] for d in history[1:4]] == ["production", "staging", "dev"]  # the earlier, good promotion


def test_down_stops_the_env_and_status_says_so(practika: App) -> None:
    import httpx

    practika.sf("deploy", "dev")
    release = practika.status()["dev"]["release"]
    assert practika.instance_processes()
    practika.sf("down", "dev")
    assert practika.instance_processes() == []
    with pytest.raises(httpx.ConnectError):
        practika.get("dev")  # the env's nginx is gone too
    row = practika.status()["dev"]
    assert row["release"] is None and row["previous"] == release and row["healthy"] is False
    assert row["reason"].startswith("stopped at ") and row["deployed_at"] is None and row["processes"] == 0
    line = next(ln for ln in practika.sf("status").stdout.splitlines() if ln.startswith("dev "))
    assert line.split()[2] == "stopped" and release in line
    practika.sf("deploy", "dev")
    assert practika.status()["dev"]["healthy"] is True


def test_a_crashed_app_is_restarted_by_its_supervisor(practika: App) -> None:
    import signal
    import time

    import psutil

    practika.sf("deploy", "dev")
    release = practika.status()["dev"]["release"]
    pid_file = next((practika.root / ".stageflow/run/dev").glob("backend-*.json"))
    supervisor = psutil.Process(json.loads(pid_file.read_text())["pid"])
    master = supervisor.children()[0]
    assert "gunicorn" in " ".join(master.cmdline())
    time.sleep(10.5)  # past the supervisor's grace period: a death now is a crash, not a failed start
    master.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = practika.status()["dev"]
        if row["healthy"] and all(p.pid != master.pid for p in supervisor.children()):
            break
        time.sleep(0.3)
    assert row["healthy"] is True and row["release"] == release and row["processes"] == 1, row
    log = (practika.root / ".stageflow/run/dev/logs").glob("backend-*.log")
    assert any("exited with signal SIGKILL" in p.read_text() for p in log)
    # status tells: the count in --json, the story in the notes column.
    assert row["restarts"] == 1 and row["supervisor"][0].startswith("backend restarted 1× (last: signal SIGKILL")
    line = next(ln for ln in practika.sf("status").stdout.splitlines() if ln.startswith("dev "))
    assert "backend restarted 1×" in line
    practika.sf("down", "dev")
    assert practika.instance_processes() == []


BROKEN_MIGRATION = '''from django.db import migrations, models


def fail(apps, schema_editor):
    raise RuntimeError("data migration failed on purpose")


class Migration(migrations.Migration):
    dependencies = [("notes", "0001_initial")]
    operations = [
        migrations.AddField("note", "tag", models.CharField(max_length=20, default="")),
        migrations.RunPython(fail),
    ]
'''


def test_a_failing_migration_changes_nothing_that_serves(practika: App) -> None:
    practika.sf("deploy", "dev")
    good = practika.status()["dev"]["release"]
    (practika.root / "notes/migrations/0002_broken.py").write_text(BROKEN_MIGRATION)
    practika.commit("a migration that fails")
    failed = practika.sf("deploy", "dev", check=False)
    assert failed.returncode == 1
    assert "release command" in failed.stderr and "data migration failed on purpose" in failed.stderr
    assert failed.stderr.count("\n") == 1  # one line
    code, body = practika.get("dev")
    assert code == 200 and body["version"] == good
    dep = practika.last_deployment("dev")
    steps = {s["name"]: s for s in dep["steps"]}
    assert dep["outcome"] == "failed" and steps["migrate"]["outcome"] == "failed"
    assert "start" not in steps and "cutover" not in steps
    assert not (practika.root / ".stageflow/releases" / str(dep["release_id"])).exists()
    # The migration ran in a transaction: the column it added is not left behind.
    con = sqlite3.connect(practika.root / "data/practica_dev.sqlite3")
    try:
        columns = [row[1] for row in con.execute("PRAGMA table_info(notes_note)")]
    finally:
        con.close()
    assert "tag" not in columns
