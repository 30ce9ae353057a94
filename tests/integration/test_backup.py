"""Real backup/restore/verify round trips: SQLite files and a private PostgreSQL cluster."""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from stageflow.deploy.backup import (
    DatabaseTarget,
    checksum,
    create_backup,
    database_exists,
    list_backups,
    prune_backups,
    restore_backup,
    sidecar_path,
    verify_backup,
)
from stageflow.errors import ConfigError, OperationError
from stageflow.runner import Runner
from tests.support.postgres import PostgresServer, free_port

pytestmark = pytest.mark.integration

PRACTICA_PW = "Practica-Pw-4711-xyz"
NOTES = [
    "hello",
    "žluťoučký kůň 🐎 日本語",
    'O\'Reilly said "hi"; DROP TABLE notes; --',
    "back\\slash\ttab\nnewline",
]
TAGS = [(1, "a"), (2, "ünï"), (3, "q'uote")]
ROWS = len(NOTES) + len(TAGS)


class Clock:
    """Deterministic UTC clock: every call is one second later."""

    def __init__(self) -> None:
        self.moment = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.moment += timedelta(seconds=1)
        return self.moment


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runner() -> Runner:
    return Runner(default_timeout=60)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_one_line(message: str) -> None:
    assert message and "\n" not in message and "Traceback" not in message


def sha256sum_check(backup: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sha256sum", "-c", sidecar_path(backup).name],
        cwd=backup.parent,
        capture_output=True,
        text=True,
        check=False,
    )


# --------------------------------------------------------------------------- SQLite


def make_sqlite(path: Path, journal_mode: str = "delete") -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA journal_mode={journal_mode}")
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        db.execute("CREATE TABLE tags (id INTEGER PRIMARY KEY, note_id INTEGER REFERENCES notes(id), tag TEXT)")
        db.executemany("INSERT INTO notes (body) VALUES (?)", [(n,) for n in NOTES])
        db.executemany("INSERT INTO tags (note_id, tag) VALUES (?, ?)", TAGS)
        db.commit()


def sqlite_notes(path: Path) -> list[tuple[int, str]]:
    with closing(sqlite3.connect(path)) as db:
        return [(int(r[0]), str(r[1])) for r in db.execute("SELECT id, body FROM notes ORDER BY id")]


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_sqlite_backup_during_write_restore_and_verify(
    tmp_path: Path, clock: Clock, runner: Runner, journal_mode: str
) -> None:
    live = tmp_path / "app" / "db.sqlite3"
    live.parent.mkdir()
    make_sqlite(live, journal_mode)
    target = DatabaseTarget(engine="sqlite", path=live)
    dest = tmp_path / "backups"
    original = sqlite_notes(live)

    # The app is mid-transaction while the backup runs: the backup must be a consistent
    # snapshot of committed data, without the uncommitted row.
    with closing(sqlite3.connect(live, isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO notes (body) VALUES ('uncommitted')")
        result = create_backup(target, dest, env="staging", runner=runner, now=clock)
        writer.execute("COMMIT")

    assert result is not None
    assert result.path == dest / "staging_20240501T120001000000Z.sqlite3"
    assert result.format == "sqlite" and result.engine == "sqlite"
    assert result.created_at == datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC)
    assert result.size == result.path.stat().st_size > 0
    assert result.checksum == checksum(result.path)
    assert mode(dest) == 0o700 and mode(result.path) == 0o600
    assert sidecar_path(result.path).read_text() == f"{result.checksum}  {result.path.name}\n"
    assert sha256sum_check(result.path).returncode == 0
    assert sorted(p.name for p in dest.iterdir()) == [result.path.name, result.path.name + ".sha256"]
    assert sqlite_notes(result.path) == original  # snapshot excludes the in-flight row
    assert len(sqlite_notes(live)) == len(NOTES) + 1

    # Damage the live database, keep an idle app connection open across the restore.
    with closing(sqlite3.connect(live)) as app:
        app.execute("DELETE FROM tags")
        app.execute("DELETE FROM notes")
        app.execute("INSERT INTO notes (body) VALUES ('junk')")
        app.commit()
        restore_backup(target, result.path, runner=runner)
        assert [(r[0], r[1]) for r in app.execute("SELECT id, body FROM notes ORDER BY id")] == original
        assert app.execute("SELECT count(*) FROM tags").fetchone()[0] == len(TAGS)

    scratch = tmp_path / "scratch"
    verified = verify_backup(target, result.path, runner=runner, scratch_dir=scratch)
    assert verified.ok, verified.detail
    assert (verified.tables, verified.rows) == (2, ROWS)
    assert list(scratch.iterdir()) == []  # scratch copy removed
    # Self-contained rollback-journal file (header bytes 18-19 are 2 for WAL): restoring and
    # verifying it left no -wal/-shm files next to it and did not change it.
    assert result.path.read_bytes()[18:20] == b"\x01\x01"
    assert sorted(p.name for p in dest.iterdir()) == [result.path.name, result.path.name + ".sha256"]
    assert checksum(result.path) == result.checksum


def test_sqlite_missing_or_empty_database_is_skipped(tmp_path: Path, clock: Clock, runner: Runner) -> None:
    target = DatabaseTarget(engine="sqlite", path=tmp_path / "nope.sqlite3")
    assert database_exists(target, runner) is False
    assert create_backup(target, tmp_path / "backups", env="staging", runner=runner, now=clock) is None
    assert not (tmp_path / "backups").exists()

    (tmp_path / "nope.sqlite3").touch()
    assert database_exists(target, runner) is False
    assert create_backup(target, tmp_path / "backups", env="staging", runner=runner, now=clock) is None


def test_sqlite_corrupted_backup_is_refused(tmp_path: Path, clock: Clock, runner: Runner) -> None:
    live = tmp_path / "db.sqlite3"
    make_sqlite(live)
    target = DatabaseTarget(engine="sqlite", path=live)
    result = create_backup(target, tmp_path / "b", env="prod", runner=runner, now=clock)
    assert result is not None

    data = bytearray(result.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    result.path.write_bytes(bytes(data))
    with closing(sqlite3.connect(live)) as db:
        db.execute("DELETE FROM notes WHERE id = 1")
        db.commit()

    with pytest.raises(OperationError) as err:
        restore_backup(target, result.path, runner=runner)
    assert "checksum mismatch" in str(err.value)
    assert_one_line(str(err.value))
    assert [n for _, n in sqlite_notes(live)] == NOTES[1:]  # live data untouched

    verified = verify_backup(target, result.path, runner=runner, scratch_dir=tmp_path / "s")
    assert not verified.ok and "checksum mismatch" in verified.detail
    assert sha256sum_check(result.path).returncode != 0

    sidecar_path(result.path).unlink()
    with pytest.raises(OperationError, match="no checksum file"):
        restore_backup(target, result.path, runner=runner)


def test_sqlite_verify_reports_a_bad_file_with_matching_checksum(tmp_path: Path, runner: Runner) -> None:
    bogus = tmp_path / "staging_20240101T000000000000Z.sqlite3"
    bogus.write_bytes(b"SQLite format 3\x00" + b"\x07" * 4000)
    sidecar_path(bogus).write_text(f"{checksum(bogus)}  {bogus.name}\n")
    target = DatabaseTarget(engine="sqlite", path=tmp_path / "db.sqlite3")
    verified = verify_backup(target, bogus, runner=runner, scratch_dir=tmp_path / "s")
    assert not verified.ok
    assert verified.detail
    assert list((tmp_path / "s").iterdir()) == []


def test_prune_keeps_newest_and_protected(tmp_path: Path, clock: Clock, runner: Runner) -> None:
    live = tmp_path / "db.sqlite3"
    make_sqlite(live)
    target = DatabaseTarget(engine="sqlite", path=live)
    dest = tmp_path / "backups"
    made = [create_backup(target, dest, env="prod", runner=runner, now=clock) for _ in range(5)]
    paths = [r.path for r in made if r is not None]
    assert len(paths) == 5
    other_env = create_backup(target, dest, env="staging", runner=runner, now=clock)
    assert other_env is not None
    # A leftover from a crashed run (no sidecar), older than anything we keep.
    orphan = dest / "prod_20240101T000000000000Z.sqlite3"
    orphan.write_bytes(b"partial")

    listed = list_backups(dest, env="prod")
    assert [b.path for b in listed] == paths[::-1]  # newest first, orphan not offered
    assert all(b.checksum == checksum(b.path) for b in listed)

    removed = prune_backups(dest, keep=2, protect=[paths[0]], env="prod")
    assert sorted(removed) == sorted([paths[1], paths[2], orphan])
    for gone in removed:
        assert not gone.exists() and not sidecar_path(gone).exists()
    assert [b.path for b in list_backups(dest, env="prod")] == [paths[4], paths[3], paths[0]]
    assert other_env.path.exists()  # other environment untouched

    with pytest.raises(ConfigError):
        prune_backups(dest, keep=0)


# --------------------------------------------------------------------------- PostgreSQL


def pg_target(server: PostgresServer, name: str = "practica_staging", **overrides: object) -> DatabaseTarget:
    fields: dict[str, object] = {
        "host": server.host,
        "port": server.port,
        "user": "practica",
        "password": PRACTICA_PW,
        "name": name,
    }
    fields.update(overrides)
    return DatabaseTarget(engine="postgres", **fields)  # type: ignore[arg-type]


def admin_target(server: PostgresServer, name: str = "practica_staging") -> DatabaseTarget:
    return pg_target(server, name, user=server.superuser, password=server.password)


def populate(server: PostgresServer, db: str) -> None:
    with server.connect(db, user="practica", password=PRACTICA_PW) as conn:
        conn.execute(
            "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL, "
            "created_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute("CREATE TABLE tags (id serial PRIMARY KEY, note_id int NOT NULL REFERENCES notes(id), tag text)")
        for body in NOTES:
            conn.execute("INSERT INTO notes (body) VALUES (%s)", (body,))
        for note_id, tag in TAGS:
            conn.execute("INSERT INTO tags (note_id, tag) VALUES (%s, %s)", (note_id, tag))


def snapshot(server: PostgresServer, db: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    with server.connect(db) as conn:
        notes = conn.execute("SELECT id, body, created_at FROM notes ORDER BY id").fetchall()
        tags = conn.execute("SELECT id, note_id, tag FROM tags ORDER BY id").fetchall()
    return notes, tags


def table_owners(server: PostgresServer, db: str) -> set[str]:
    with server.connect(db) as conn:
        rows = conn.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {str(r[0]) for r in rows}


def leftover_databases(server: PostgresServer) -> set[str]:
    return {d for d in server.databases() if re.search(r"_(verify|restore)_[0-9a-f]{8}$", d)}


@pytest.fixture
def practica(postgres_server: PostgresServer) -> Iterator[DatabaseTarget]:
    """A fresh practica_staging owned by role practica, with two tables of awkward rows."""
    postgres_server.create_database("practica_staging", "practica", PRACTICA_PW)
    populate(postgres_server, "practica_staging")
    yield pg_target(postgres_server)
    assert leftover_databases(postgres_server) == set()


def test_pg_plain_backup_restores_with_the_recovery_line(
    postgres_server: PostgresServer, practica: DatabaseTarget, tmp_path: Path, clock: Clock, runner: Runner
) -> None:
    assert database_exists(practica, runner)
    dest = tmp_path / "backups"
    result = create_backup(practica, dest, env="staging", runner=runner, now=clock)
    assert result is not None
    assert result.path.name == "staging_20240501T120001000000Z.sql"
    assert (result.format, result.engine) == ("plain", "postgres")
    assert mode(result.path) == 0o600 and mode(dest) == 0o700
    assert result.checksum == checksum(result.path) and result.size == result.path.stat().st_size
    check = sha256sum_check(result.path)
    assert check.returncode == 0 and f"{result.path.name}: OK" in check.stdout
    dump = result.path.read_text(encoding="utf-8")
    assert "CREATE TABLE public.notes" in dump
    # --no-owner/--no-privileges: restorable by the app role; --clean --if-exists: every DROP is
    # conditional, so the same file restores into an empty database and over the live one.
    assert not re.search(r"^(ALTER .* OWNER TO|GRANT |REVOKE )", dump, re.MULTILINE)
    drops = re.findall(r"^DROP .*$", dump, re.MULTILINE)
    assert drops and all(" IF EXISTS " in d for d in drops), drops
    assert [p.name for p in dest.iterdir() if p.name.startswith(".")] == []  # no temp files left

    # The documented manual recovery: plain psql as the app user into an EMPTY database.
    postgres_server.create_database("practica_restorecheck", "practica", PRACTICA_PW)
    line = (
        f"psql -U practica -h {postgres_server.host} -p {postgres_server.port} "
        f"-d practica_restorecheck < {shlex.quote(str(result.path))}"
    )
    proc = subprocess.run(
        ["bash", "-c", line],
        env={**os.environ, "PGPASSWORD": PRACTICA_PW},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ERROR" not in proc.stderr, proc.stderr  # psql exits 0 on SQL errors without ON_ERROR_STOP
    assert snapshot(postgres_server, "practica_restorecheck") == snapshot(postgres_server, "practica_staging")
    assert table_owners(postgres_server, "practica_restorecheck") == {"practica"}
    with postgres_server.connect("practica_restorecheck", user="practica", password=PRACTICA_PW) as conn:
        new_id = conn.execute("INSERT INTO notes (body) VALUES ('after') RETURNING id").fetchone()
    assert new_id == (len(NOTES) + 1,)  # sequences restored, not reset
    postgres_server.drop_database("practica_restorecheck")
    # The original line exactly, into the LIVE database where every object exists: no ERROR line.
    before = snapshot(postgres_server, "practica_staging")
    with postgres_server.connect("practica_staging", user="practica", password=PRACTICA_PW) as conn:
        conn.execute("INSERT INTO notes (body) VALUES ('written after the backup')")
    live = subprocess.run(
        ["bash", "-c", f"psql -U practica -d practica_staging < {shlex.quote(str(result.path))}"],
        env={**os.environ, "PGPASSWORD": PRACTICA_PW, "PGHOST": postgres_server.host,
             "PGPORT": str(postgres_server.port)},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert live.returncode == 0 and "ERROR" not in live.stderr, live.stderr
    assert snapshot(postgres_server, "practica_staging") == before  # back to the backup's rows


@pytest.mark.parametrize(("fmt", "as_admin"), [("plain", False), ("custom", False), ("plain", True), ("custom", True)])
def test_pg_restore_brings_rows_back(
    postgres_server: PostgresServer,
    practica: DatabaseTarget,
    tmp_path: Path,
    clock: Clock,
    runner: Runner,
    fmt: str,
    as_admin: bool,
) -> None:
    before = snapshot(postgres_server, "practica_staging")
    result = create_backup(practica, tmp_path, env="staging", runner=runner, fmt=fmt, now=clock)  # type: ignore[arg-type]
    assert result is not None and result.format == fmt
    assert result.path.suffix == (".dump" if fmt == "custom" else ".sql")
    assert result.path.read_bytes().startswith(b"PGDMP") == (fmt == "custom")

    app = postgres_server.connect("practica_staging", user="practica", password=PRACTICA_PW)
    app.execute("DELETE FROM tags")
    app.execute("UPDATE notes SET body = 'changed'")
    app.execute("CREATE TABLE extra (x int)")
    assert snapshot(postgres_server, "practica_staging") != before

    # An admin-run restore must still leave the tables owned by the app's role.
    target = admin_target(postgres_server) if as_admin else practica
    restore_backup(target, result.path, runner=runner)

    assert snapshot(postgres_server, "practica_staging") == before
    assert table_owners(postgres_server, "practica_staging") == {"practica"}  # and no 'extra'
    with postgres_server.connect() as conn:
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'practica_staging'"
        ).fetchone()
    assert owner == ("practica",)
    with pytest.raises(psycopg.OperationalError):
        app.execute("SELECT 1")  # the restore disconnected the app's session
    app.close()


@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_pg_verify_counts_and_leaves_no_scratch_database(
    postgres_server: PostgresServer, practica: DatabaseTarget, tmp_path: Path, clock: Clock, runner: Runner, fmt: str
) -> None:
    result = create_backup(practica, tmp_path, env="staging", runner=runner, fmt=fmt, now=clock)  # type: ignore[arg-type]
    assert result is not None
    databases_before = postgres_server.databases()
    verified = verify_backup(practica, result.path, runner=runner, scratch_dir=tmp_path / "scratch")
    assert verified.ok, verified.detail
    assert (verified.tables, verified.rows) == (2, ROWS)
    assert postgres_server.databases() == databases_before


def test_pg_verify_failed_restore_still_drops_scratch(
    postgres_server: PostgresServer, practica: DatabaseTarget, tmp_path: Path, clock: Clock, runner: Runner
) -> None:
    result = create_backup(practica, tmp_path, env="staging", runner=runner, fmt="custom", now=clock)
    assert result is not None
    # A dump that was broken when written: truncated, with a sidecar that matches it.
    result.path.write_bytes(result.path.read_bytes()[:200])
    sidecar_path(result.path).write_text(f"{checksum(result.path)}  {result.path.name}\n")
    databases_before = postgres_server.databases()
    verified = verify_backup(practica, result.path, runner=runner, scratch_dir=tmp_path / "scratch")
    assert not verified.ok
    assert "restore" in verified.detail and "\n" not in verified.detail
    assert postgres_server.databases() == databases_before


def test_pg_restore_refuses_corrupted_backup(
    postgres_server: PostgresServer, practica: DatabaseTarget, tmp_path: Path, clock: Clock, runner: Runner
) -> None:
    result = create_backup(practica, tmp_path, env="staging", runner=runner, now=clock)
    assert result is not None
    with open(result.path, "a", encoding="utf-8") as fh:
        fh.write("DROP TABLE notes;\n")
    with pytest.raises(OperationError, match="checksum mismatch") as err:
        restore_backup(practica, result.path, runner=runner)
    assert_one_line(str(err.value))
    assert len(snapshot(postgres_server, "practica_staging")[0]) == len(NOTES)


def test_pg_missing_database_is_skipped(postgres_server: PostgresServer, tmp_path: Path, runner: Runner) -> None:
    postgres_server.create_role("practica", PRACTICA_PW)
    target = pg_target(postgres_server, "practica_nope")
    assert database_exists(target, runner) is False
    assert create_backup(target, tmp_path / "b", env="staging", runner=runner, now=Clock()) is None
    assert not (tmp_path / "b").exists()


def test_pg_failed_dump_leaves_no_partial_file(
    postgres_server: PostgresServer, practica: DatabaseTarget, tmp_path: Path, clock: Clock, runner: Runner
) -> None:
    # A table the app role cannot read makes pg_dump fail part-way.
    with postgres_server.connect("practica_staging") as conn:
        conn.execute("CREATE TABLE secret_admin_table (x int)")
    dest = tmp_path / "b"
    with pytest.raises(OperationError) as err:
        create_backup(practica, dest, env="staging", runner=runner, now=clock)
    assert "pg_dump failed" in str(err.value) and "permission denied" in str(err.value)
    assert_one_line(str(err.value))
    assert list(dest.iterdir()) == []


def test_pg_wrong_password_is_one_clean_line(
    postgres_server: PostgresServer, practica: DatabaseTarget, tmp_path: Path, runner: Runner
) -> None:
    wrong = "Wrong-Password-0815-zz"
    target = pg_target(postgres_server, password=wrong)
    with pytest.raises(OperationError) as err:
        create_backup(target, tmp_path / "b", env="staging", runner=runner, now=Clock())
    message = str(err.value)
    assert_one_line(message)
    assert wrong not in message and PRACTICA_PW not in message
    assert "password authentication failed" in message
    assert "practica_staging@127.0.0.1" in message  # names the target
    assert not (tmp_path / "b").exists()


def test_pg_unreachable_server_is_one_clean_line(tmp_path: Path, runner: Runner) -> None:
    port = free_port()
    target = DatabaseTarget(engine="postgres", port=port, user="practica", password=PRACTICA_PW, name="practica_x")
    with pytest.raises(OperationError) as err:
        create_backup(target, tmp_path / "b", env="staging", runner=runner, now=Clock())
    message = str(err.value)
    assert_one_line(message)
    assert PRACTICA_PW not in message
    assert f"127.0.0.1:{port}" in message and "Connection refused" in message
    assert "PostgreSQL is running" in message  # the fix, not just the symptom


def test_pg_restore_without_createdb_keeps_current_data(
    postgres_server: PostgresServer, practica: DatabaseTarget, tmp_path: Path, clock: Clock, runner: Runner
) -> None:
    result = create_backup(practica, tmp_path, env="staging", runner=runner, now=clock)
    assert result is not None
    postgres_server.create_role("practica", PRACTICA_PW, createdb=False)
    try:
        with postgres_server.connect("practica_staging") as conn:
            conn.execute("DELETE FROM tags")
        with pytest.raises(OperationError) as err:
            restore_backup(practica, result.path, runner=runner)
        assert_one_line(str(err.value))
        assert "ALTER ROLE practica CREATEDB" in str(err.value)
        notes, tags = snapshot(postgres_server, "practica_staging")
        assert len(notes) == len(NOTES) and tags == []  # untouched, not half-restored
    finally:
        postgres_server.create_role("practica", PRACTICA_PW, createdb=True)


def test_pg_target_refuses_sqlite_backup(
    postgres_server: PostgresServer, practica: DatabaseTarget, tmp_path: Path, clock: Clock, runner: Runner
) -> None:
    make_sqlite(tmp_path / "db.sqlite3")
    sqlite_backup = create_backup(
        DatabaseTarget(engine="sqlite", path=tmp_path / "db.sqlite3"), tmp_path / "b", env="x", runner=runner, now=clock
    )
    assert sqlite_backup is not None
    with pytest.raises(ConfigError, match="SQLite file"):
        restore_backup(practica, sqlite_backup.path, runner=runner)
    assert len(snapshot(postgres_server, "practica_staging")[0]) == len(NOTES)
