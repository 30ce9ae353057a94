"""The deploy pipeline on a real PostgreSQL server: pg_dump before every deploy, verify, restore."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stageflow.config.envfile import read_env_file, write_env_file
from tests.support.app import REPO, STAGEFLOW, App, make_app, teardown_app
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def pg_app(tmp_path: Path, postgres_server: PostgresServer) -> Iterator[tuple[App, PostgresServer]]:
    database = {"engine": "postgres", "name": "practica_{env}", "user": "practica_{env}",
                "password": "${POSTGRES_PASSWORD}", "host": postgres_server.host, "port": postgres_server.port}
    app = make_app(tmp_path, database=database)
    for env in ("dev", "staging", "production"):
        path = app.root / f".env.{env}"
        values = read_env_file(path)
        postgres_server.create_database(f"practica_{env}", f"practica_{env}", values["POSTGRES_PASSWORD"])
    yield app, postgres_server
    teardown_app(app)


def test_pg_dump_before_deploy_verify_and_restore(pg_app: tuple[App, PostgresServer]) -> None:
    app, pg = pg_app
    password = read_env_file(app.root / ".env.staging")["POSTGRES_PASSWORD"]
    app.sf("deploy", "staging")
    with pg.connect("practica_staging", user="practica_staging", password=password) as con:
        con.execute("INSERT INTO notes_note (title, body, created) VALUES ('före', 'it''s', now())")
    app.touch_commit()
    app.sf("deploy", "staging")
    dep = app.last_deployment("staging")
    backup = next(s for s in dep["steps"] if s["name"] == "backup")
    assert backup["outcome"] == "ok" and ".sql" in backup["detail"]
    files = json.loads(app.sf("backup", "list", "staging", "--json").stdout)
    dump = Path(files[0]["path"])
    assert "CREATE TABLE public.notes_note" in dump.read_text()
    # the original recovery line works on a stageflow backup
    pg.create_database("practica_recovery", "practica_staging", password)
    psql = shutil.which("psql") or "psql"
    line = f"{psql} -X -q -h {pg.host} -p {pg.port} -U practica_staging -d practica_recovery < {dump}"
    subprocess.run(line, shell=True, check=True, env={"PGPASSWORD": password, "PATH": "/usr/bin:/bin"},  # noqa: S602
                   capture_output=True)
    with pg.connect("practica_recovery", user="practica_staging", password=password) as con:
        assert con.execute("SELECT title, body FROM notes_note").fetchall() == [("före", "it's")]
    # ... and over the live database, where every object already exists: not one ERROR line
    live = subprocess.run(f"{psql} -U practica_staging -d practica_staging < {dump}", shell=True,  # noqa: S602
                          env={"PGPASSWORD": password, "PGHOST": pg.host, "PGPORT": str(pg.port),
                               "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert live.returncode == 0 and "ERROR" not in live.stderr, live.stderr[:500]
    with pg.connect("practica_staging", user="practica_staging", password=password) as con:
        assert con.execute("SELECT title, body FROM notes_note").fetchall() == [("före", "it's")]
    verify = app.sf("backup", "verify", "staging")
    assert "OK" in verify.stdout
    assert not any(d.startswith("practica_staging_verify") for d in pg.databases())
    with pg.connect("practica_staging", user="practica_staging", password=password) as con:
        con.execute("DELETE FROM notes_note")
    app.sf("backup", "restore", "staging", "--yes")
    with pg.connect("practica_staging", user="practica_staging", password=password) as con:
        assert con.execute("SELECT title FROM notes_note").fetchall() == [("före",)]
    assert app.status()["staging"]["healthy"]
    assert password not in app.all_text()


def test_unreachable_database_fails_preflight(pg_app: tuple[App, PostgresServer]) -> None:
    app, _ = pg_app
    wrong = "wrong-password-0123456789abcdefghijklmnopqrstuv"
    proc = app.sf("deploy", "dev", check=False, env={"POSTGRES_PASSWORD": wrong})
    assert proc.returncode == 1
    assert "pre-flight failed: database" in proc.stderr
    assert wrong not in proc.stdout + proc.stderr


def test_a_database_that_does_not_exist_fails_preflight_saying_how_to_create_it(
        pg_app: tuple[App, PostgresServer]) -> None:
    app, pg = pg_app
    pg.drop_database("practica_dev")
    proc = app.sf("deploy", "dev", check=False)
    assert proc.returncode == 1
    assert "pre-flight failed: database: database practica_dev does not exist" in proc.stderr
    assert f"createdb -h {pg.host} -p {pg.port} -O practica_dev practica_dev" in proc.stderr


def test_the_original_staging_line_with_the_password_in_the_shell(pg_app: tuple[App, PostgresServer]) -> None:
    """`POSTGRES_PASSWORD=custom-password ./scripts/workflow-orchestrator.sh staging`, as written."""
    import os

    app, pg = pg_app
    with pg.connect("postgres") as con:
        con.execute("ALTER ROLE practica_staging PASSWORD 'custom-password'")
    path = app.root / ".env.staging"
    values = read_env_file(path)
    del values["POSTGRES_PASSWORD"]  # only in the shell
    write_env_file(path, values)
    (app.root / "scripts").mkdir()
    for name in ("workflow-orchestrator.sh", "_stageflow.sh"):
        shutil.copy2(REPO / "scripts" / name, app.root / "scripts" / name)
    app.commit("the wrapper scripts")
    proc = subprocess.run(["./scripts/workflow-orchestrator.sh", "staging"], cwd=app.root, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL,
                          env={**os.environ, "POSTGRES_PASSWORD": "custom-password", "STAGEFLOW": str(STAGEFLOW)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert "missing from" not in proc.stdout + proc.stderr
    assert "too short" in proc.stdout  # a weak secret outside production is said, not refused
    row = json.loads(app.sf("status", "staging", "--json", env={"POSTGRES_PASSWORD": "custom-password"}).stdout)[0]
    assert row["healthy"], row
