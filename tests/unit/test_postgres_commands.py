"""Exact argv for the PostgreSQL command builders, and the password staying out of argv."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stageflow.commands import postgres as pg
from stageflow.deploy.backup import DatabaseTarget
from stageflow.errors import ConfigError
from stageflow.masking import MASK, masker
from stageflow.runner import Runner

PASSWORD = "s3cret-Pa55word-unit"
TARGET = DatabaseTarget(
    engine="postgres", host="db.internal", port=6543, user="practica", password=PASSWORD, name="practica_staging"
)
CONN = ["-h", "db.internal", "-p", "6543", "-U", "practica", "--no-password"]


def test_pg_dump_plain() -> None:
    assert pg.pg_dump(TARGET, "plain") == [
        "pg_dump",
        *CONN,
        "--no-owner",
        "--no-privileges",
        "--clean",
        "--if-exists",
        "--format=plain",
        "-d",
        "practica_staging",
    ]


def test_pg_dump_custom_and_default_format() -> None:
    assert pg.pg_dump(TARGET, "custom")[-3:] == ["--format=custom", "-d", "practica_staging"]
    assert "--clean" not in pg.pg_dump(TARGET, "custom")  # pg_restore decides for archives
    assert pg.pg_dump(TARGET) == pg.pg_dump(TARGET, "plain")


def test_psql_file_defaults_to_target_database() -> None:
    assert pg.psql_file(TARGET, Path("/backups/b.sql")) == [
        "psql",
        "-X",
        *CONN,
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
        "--quiet",
        "-d",
        "practica_staging",
        "-f",
        "/backups/b.sql",
    ]


def test_psql_file_other_database_and_role() -> None:
    argv = pg.psql_file(TARGET, Path("b.sql"), "scratch_db", role='app"owner')
    # SET ROLE runs before the file, in the same session and single transaction.
    assert argv == [
        "psql",
        "-X",
        *CONN,
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
        "--quiet",
        "-d",
        "scratch_db",
        "-c",
        'SET ROLE "app""owner"',
        "-f",
        "b.sql",
    ]


def test_psql_command() -> None:
    assert pg.psql_command(TARGET, "SELECT 1", "postgres") == [
        "psql",
        "-X",
        *CONN,
        "-v",
        "ON_ERROR_STOP=1",
        "--no-align",
        "--tuples-only",
        "-d",
        "postgres",
        "-c",
        "SELECT 1",
    ]
    assert pg.psql_command(TARGET, "SELECT 1")[-3] == "practica_staging"


def test_pg_restore() -> None:
    assert pg.pg_restore(TARGET, Path("/b/x.dump"), "practica_restore") == [
        "pg_restore",
        *CONN,
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--single-transaction",
        "-d",
        "practica_restore",
        "/b/x.dump",
    ]
    with_role = pg.pg_restore(TARGET, Path("x.dump"), "d", role="practica")
    assert "--role=practica" in with_role
    assert with_role[-3:] == ["-d", "d", "x.dump"]


def test_createdb() -> None:
    assert pg.createdb(TARGET, "newdb") == ["createdb", *CONN, "newdb"]
    assert pg.createdb(TARGET, "newdb", owner="practica", template="template0") == [
        "createdb",
        *CONN,
        "-O",
        "practica",
        "-T",
        "template0",
        "newdb",
    ]


def test_dropdb() -> None:
    assert pg.dropdb(TARGET, "old") == ["dropdb", *CONN, "--if-exists", "old"]
    assert pg.dropdb(TARGET, "old", force=True) == ["dropdb", *CONN, "--if-exists", "--force", "old"]


def _all_argvs(target: DatabaseTarget) -> list[list[str]]:
    return [
        pg.pg_dump(target, "plain"),
        pg.pg_dump(target, "custom"),
        pg.psql_file(target, Path("f.sql"), role="practica"),
        pg.psql_command(target, "SELECT 1"),
        pg.pg_restore(target, Path("f.dump"), "d", role="practica"),
        pg.createdb(target, "d", owner="practica", template="template0"),
        pg.dropdb(target, "d", force=True),
    ]


def test_password_never_in_argv() -> None:
    for argv in _all_argvs(TARGET):
        assert all(PASSWORD not in arg for arg in argv), argv
        # Always explicit: PGHOST/PGPORT/PGUSER in the environment cannot redirect a command.
        for flag in ("-h", "-p", "-U"):
            assert flag in argv
        assert argv[0] in {"pg_dump", "psql", "pg_restore", "createdb", "dropdb"}  # PATH decides


def test_psql_ignores_psqlrc() -> None:
    for argv in _all_argvs(TARGET):
        if argv[0] == "psql":
            assert argv[1] == "-X"


def test_pg_env_carries_and_registers_password() -> None:
    target = DatabaseTarget(engine="postgres", name="x", password="another-Secret-42")
    assert pg.pg_env(target) == {"PGPASSWORD": "another-Secret-42"}
    assert masker.mask("error: another-Secret-42 rejected") == f"error: {MASK} rejected"


def test_pg_env_without_password_is_empty() -> None:
    assert pg.pg_env(DatabaseTarget(engine="postgres", name="x")) == {}


def test_target_repr_and_describe_hide_password() -> None:
    assert PASSWORD not in repr(TARGET)
    assert PASSWORD not in TARGET.describe()
    assert TARGET.describe() == "postgres practica_staging@db.internal:6543"


def test_runner_log_and_child_env(tmp_path: Path) -> None:
    """The password reaches the child through PGPASSWORD and is masked wherever it is echoed."""
    lines: list[str] = []
    runner = Runner(log=lines.append)
    argv = [sys.executable, "-c", "import os, sys; print(os.environ['PGPASSWORD']); sys.exit(3)"]
    result = runner.run(argv, env=pg.pg_env(TARGET))
    assert result.stdout.strip() == PASSWORD  # the child got it
    assert PASSWORD not in result.brief()
    assert MASK in result.brief()
    assert lines and all(PASSWORD not in line for line in lines)


@pytest.mark.parametrize("bad", ["", "-rf", "host=evil", "a" * 64, "x\x00y"])
def test_bad_names_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        pg.createdb(TARGET, bad)
    assert "\n" not in str(err.value)


def test_name_at_identifier_limit_is_fine() -> None:
    assert pg.dropdb(TARGET, "a" * 63)[-1] == "a" * 63


def test_quoting() -> None:
    assert pg.quote_literal("O'Reilly") == "'O''Reilly'"
    assert pg.quote_literal("plain") == "'plain'"
    assert pg.quote_ident('we"ird') == '"we""ird"'
    with pytest.raises(ConfigError):
        pg.quote_literal("a\x00b")
