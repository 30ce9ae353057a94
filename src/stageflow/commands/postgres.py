"""Argv builders for the PostgreSQL client tools (pg_dump, psql, pg_restore, createdb, dropdb).

Every builder returns a ``list[str]`` and runs nothing: :meth:`stageflow.runner.Runner.run`
executes them. Passwords never appear in argv; :func:`pg_env` supplies them as ``PGPASSWORD``.

Binaries are named, not pathed, so ``PATH`` decides which installation is used (on Debian the
client tools live in ``/usr/bin``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from stageflow.errors import ConfigError
from stageflow.masking import masker

DumpFormat = Literal["plain", "custom"]

# PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN - 1).
MAX_IDENTIFIER_BYTES = 63


class PgTarget(Protocol):
    """What the builders need to know about a server; ``deploy.backup.DatabaseTarget`` fits."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def user(self) -> str: ...

    @property
    def password(self) -> str | None: ...

    @property
    def name(self) -> str: ...


def check_name(kind: str, value: str) -> str:
    """Return ``value`` if it is usable as a database or role name in argv, else raise ConfigError.

    A leading ``-`` would be parsed as an option and an ``=`` makes libpq read the whole
    value as a connection string, so both are refused rather than quoted.
    """
    if not value:
        raise ConfigError(f"empty {kind} name", hint=f"set the {kind} name in the environment config")
    if value.startswith("-") or "=" in value or "\x00" in value:
        raise ConfigError(
            f"invalid {kind} name {value!r}",
            hint="use letters, digits and underscores; no leading '-' and no '='",
        )
    if len(value.encode()) > MAX_IDENTIFIER_BYTES:
        raise ConfigError(
            f"{kind} name {value!r} is longer than {MAX_IDENTIFIER_BYTES} bytes",
            hint="choose a shorter name",
        )
    return value


def quote_literal(value: str) -> str:
    """Quote ``value`` as an SQL string literal (standard_conforming_strings is on since 9.1)."""
    if "\x00" in value:
        raise ConfigError("SQL literal contains a NUL byte", hint="remove it from the value")
    return "'" + value.replace("'", "''") + "'"


def quote_ident(value: str) -> str:
    """Quote ``value`` as an SQL identifier."""
    if "\x00" in value:
        raise ConfigError("SQL identifier contains a NUL byte", hint="remove it from the name")
    return '"' + value.replace('"', '""') + '"'


def pg_env(target: PgTarget) -> dict[str, str]:
    """Environment for a client tool: ``PGPASSWORD`` when the target has a password.

    The password is registered with the process-wide masker so that no log line, error
    message or state file can show it.
    """
    if not target.password:
        return {}
    masker.add(target.password)
    return {"PGPASSWORD": target.password}


def _connection(target: PgTarget) -> list[str]:
    # Explicit -h/-p/-U so PGHOST/PGPORT/PGUSER in the caller's environment cannot redirect us;
    # --no-password so a missing password fails fast instead of prompting on the tty.
    return [
        "-h",
        target.host,
        "-p",
        str(target.port),
        "-U",
        check_name("user", target.user),
        "--no-password",
    ]


def pg_dump(target: PgTarget, fmt: DumpFormat = "plain") -> list[str]:
    """``pg_dump`` of ``target.name`` to standard output.

    ``--no-owner --no-privileges`` make the dump restorable by whichever role runs the
    restore; a plain dump also drops each object first if it exists (``--clean --if-exists``), so
    ``psql -U practica -d practica_<env> < backup.sql`` restores it cleanly over the live database
    as well as into an empty one. Custom archives take that choice at ``pg_restore`` time.
    """
    clean = ["--clean", "--if-exists"] if fmt == "plain" else []
    return [
        "pg_dump",
        *_connection(target),
        "--no-owner",
        "--no-privileges",
        *clean,
        f"--format={fmt}",
        "-d",
        check_name("database", target.name),
    ]


def psql_file(target: PgTarget, path: Path, database: str | None = None, *, role: str | None = None) -> list[str]:
    """``psql`` running the SQL file ``path`` in ``database`` (default ``target.name``).

    Stops at the first error and runs the file in one transaction, so a failed restore
    leaves nothing half-loaded. ``role`` switches role first (``SET ROLE``) so the restored
    objects belong to it rather than to the connecting user.
    """
    argv = [
        "psql",
        "-X",
        *_connection(target),
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
        "--quiet",
        "-d",
        check_name("database", database or target.name),
    ]
    if role:
        argv += ["-c", f"SET ROLE {quote_ident(check_name('role', role))}"]
    return [*argv, "-f", str(path)]


def psql_command(target: PgTarget, sql: str, database: str | None = None) -> list[str]:
    """``psql`` running one SQL command in ``database`` (default ``target.name``).

    Output is unaligned tuples only (``|``-separated columns) so callers can parse it.
    """
    return [
        "psql",
        "-X",
        *_connection(target),
        "-v",
        "ON_ERROR_STOP=1",
        "--no-align",
        "--tuples-only",
        "-d",
        check_name("database", database or target.name),
        "-c",
        sql,
    ]


def pg_restore(target: PgTarget, path: Path, database: str, *, role: str | None = None) -> list[str]:
    """``pg_restore`` of the custom-format archive ``path`` into ``database``.

    One transaction and exit on the first error: by default pg_restore carries on past
    errors and leaves a partly restored database behind.
    """
    argv = [
        "pg_restore",
        *_connection(target),
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--single-transaction",
    ]
    if role:
        argv.append(f"--role={check_name('role', role)}")
    return [*argv, "-d", check_name("database", database), str(path)]


def createdb(target: PgTarget, name: str, owner: str | None = None, *, template: str | None = None) -> list[str]:
    """``createdb name`` owned by ``owner`` (default: the connecting user).

    Pass ``template="template0"`` before restoring a dump: objects added to template1 would
    otherwise collide with the ones in the dump.
    """
    argv = ["createdb", *_connection(target)]
    if owner:
        argv += ["-O", check_name("role", owner)]
    if template:
        argv += ["-T", check_name("database", template)]
    return [*argv, check_name("database", name)]


def dropdb(target: PgTarget, name: str, *, force: bool = False) -> list[str]:
    """``dropdb --if-exists name``; ``force`` also disconnects other sessions (PostgreSQL 13+)."""
    argv = ["dropdb", *_connection(target), "--if-exists"]
    if force:
        argv.append("--force")
    return [*argv, check_name("database", name)]
