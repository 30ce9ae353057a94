"""Database backups: create, list, prune, verify and restore, for SQLite and PostgreSQL.

All I/O with the outside world goes through the :class:`~stageflow.runner.Runner` and an
injected clock, so callers (and tests) decide how commands run and what time it is.

Backup files are named ``<env>_<UTC %Y%m%dT%H%M%S%fZ>.<sql|dump|sqlite3>`` and each has a
``<file>.sha256`` sidecar in ``sha256sum`` format, so ``sha256sum -c`` works by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from stageflow.commands import postgres as pg
from stageflow.errors import ConfigError, OperationError
from stageflow.masking import masker
from stageflow.runner import Result, Runner

Engine = Literal["sqlite", "postgres"]
BackupFormat = Literal["sqlite", "plain", "custom"]

SIDECAR_SUFFIX = ".sha256"
MAINTENANCE_DB = "postgres"

_EXTENSIONS: dict[BackupFormat, str] = {"plain": ".sql", "custom": ".dump", "sqlite": ".sqlite3"}
_FORMATS: dict[str, BackupFormat] = {"sql": "plain", "dump": "custom", "sqlite3": "sqlite"}
_STAMP = "%Y%m%dT%H%M%S%fZ"
_BACKUP_NAME = re.compile(r"^(?P<env>.+)_(?P<stamp>\d{8}T\d{12}Z)\.(?P<ext>sql|dump|sqlite3)\Z")
_ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_CUSTOM_MAGIC = b"PGDMP"
# libpq waits for the TCP timeout (minutes) on a blackholed host unless told otherwise.
_CONNECT_TIMEOUT = "10"
# How long a SQLite backup/restore may wait for another connection's lock before giving up.
_SQLITE_LOCK_TIMEOUT = 60.0

# Exact row counts for every ordinary table, in one round trip. ONLY stops inheritance
# parents from counting their children's rows a second time.
_PG_COUNT_SQL = """
SELECT count(*),
       coalesce(sum((xpath('/row/n/text()', query_to_xml(
           format('SELECT count(*) AS n FROM ONLY %I.%I', n.nspname, c.relname),
           false, true, '')))[1]::text::bigint), 0)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%'
  AND n.nspname NOT LIKE 'pg\\_temp%'
""".strip()


@dataclass(frozen=True)
class DatabaseTarget:
    """A database to back up or restore: a SQLite file or a PostgreSQL database."""

    engine: Engine
    path: Path | None = None
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    # repr=False: dataclass reprs end up in logs and tracebacks.
    password: str | None = field(default=None, repr=False)
    name: str = ""

    def __post_init__(self) -> None:
        if self.engine == "sqlite":
            if self.path is None:
                raise ConfigError("sqlite database target has no file path", hint="set the database path")
        elif self.engine == "postgres":
            if not self.name:
                raise ConfigError("postgres database target has no database name", hint="set the name")
        else:
            raise ConfigError(f"unknown database engine {self.engine!r}", hint="use 'sqlite' or 'postgres'")
        masker.add(self.password)

    def describe(self) -> str:
        """Human-readable identity for messages, e.g. ``postgres practica_staging@127.0.0.1:5432``."""
        if self.engine == "sqlite":
            return f"sqlite {self.path}"
        return f"postgres {self.name}@{self.host}:{self.port}"


@dataclass(frozen=True)
class BackupResult:
    """One backup file on disk."""

    path: Path
    checksum: str
    size: int
    format: BackupFormat
    created_at: datetime
    engine: Engine


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of restoring a backup into a scratch database."""

    ok: bool
    tables: int
    rows: int
    detail: str


# --------------------------------------------------------------------------- public API


def checksum(path: Path) -> str:
    """SHA-256 of the file at ``path`` as lowercase hex, streamed."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def sidecar_path(backup: Path) -> Path:
    """The ``.sha256`` file that belongs to ``backup``."""
    return backup.with_name(backup.name + SIDECAR_SUFFIX)


def verify_checksum(backup: Path) -> str:
    """Return the checksum of ``backup`` after checking it against its sidecar.

    Raises :class:`OperationError` when the file or sidecar is missing or they disagree.
    """
    if not backup.is_file():
        raise OperationError(f"backup {backup} not found", hint="pick one from the backup list")
    expected = _read_sidecar(backup)
    try:
        actual = checksum(backup)
    except OSError as exc:
        raise OperationError(f"cannot read backup {backup}: {_os_error(exc)}") from exc
    if actual != expected:
        raise OperationError(
            f"checksum mismatch for backup {backup.name}: expected {expected[:12]}…, got {actual[:12]}…",
            hint="the file is corrupt or was modified; use another backup",
        )
    return actual


def database_exists(target: DatabaseTarget, runner: Runner) -> bool:
    """True when the database exists and (for SQLite) is not an empty file.

    PostgreSQL is asked through the ``postgres`` maintenance database, so a missing
    application database is "False" while an unreachable server raises OperationError.
    """
    if target.engine == "sqlite":
        path = _sqlite_path(target)
        return path.is_file() and path.stat().st_size > 0
    return _pg_database_exists(target, target.name, runner)


def create_backup(
    target: DatabaseTarget,
    dest_dir: Path,
    *,
    env: str,
    runner: Runner,
    fmt: Literal["plain", "custom"] = "plain",
    now: Callable[[], datetime],
) -> BackupResult | None:
    """Back up ``target`` into ``dest_dir``; ``None`` when the database does not exist yet.

    The file appears under its final name only when complete (temp file + rename), is
    mode 0600 in a 0700 directory, and gets a ``sha256sum``-compatible sidecar. ``now``
    should return an aware datetime; a naive one is taken to be UTC.
    """
    if not _ENV_NAME.match(env):
        raise ConfigError(f"invalid environment name {env!r} for a backup file", hint="use letters, digits, _ . -")
    if fmt not in ("plain", "custom"):
        raise ConfigError(f"unknown backup format {fmt!r}", hint="use 'plain' or 'custom'")
    if not database_exists(target, runner):
        return None
    created_at = _utc(now())
    kind: BackupFormat = "sqlite" if target.engine == "sqlite" else fmt
    final = dest_dir / f"{env}_{created_at.strftime(_STAMP)}{_EXTENSIONS[kind]}"
    try:
        _ensure_private_dir(dest_dir)
        if final.exists():
            raise OperationError(f"backup {final} already exists", hint="wait a moment and run the backup again")
        tmp = _private_temp(dest_dir, final.name)
        try:
            if target.engine == "sqlite":
                _sqlite_copy(_sqlite_path(target), tmp, what=f"backup of {target.describe()}")
            else:
                _pg(runner, pg.pg_dump(target, fmt), target, "pg_dump", stdout_path=tmp)
            _fsync(tmp)
            digest = checksum(tmp)
            size = tmp.stat().st_size
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _write_sidecar(final, digest)
        _fsync_dir(dest_dir)
    except OSError as exc:
        raise OperationError(
            f"backup of {target.describe()} to {dest_dir} failed: {_os_error(exc)}",
            hint="check that the backup directory is writable and the disk is not full",
        ) from exc
    return BackupResult(final, digest, size, kind, created_at, target.engine)


def restore_backup(target: DatabaseTarget, backup: Path, *, runner: Runner) -> None:
    """Replace the contents of ``target`` with ``backup`` after checking its checksum.

    SQLite: the online backup API copies the file into the live database. PostgreSQL: the
    dump is loaded into a new staging database first; only when that succeeds is the old
    database dropped (disconnecting its sessions) and the staging one renamed into place,
    so a failed restore leaves the current data untouched. The connecting user needs
    CREATEDB (or superuser) and must own the database or be able to ``SET ROLE`` to its owner.
    """
    verify_checksum(backup)
    if target.engine == "sqlite":
        _require_sqlite_file(backup)
        dest = _sqlite_path(target)
        try:
            with (
                contextlib.closing(_sqlite_readonly(backup)) as source,
                contextlib.closing(sqlite3.connect(dest)) as live,
            ):
                _sqlite_backup(source, live, what=f"restore into {target.describe()}")
        except sqlite3.Error as exc:
            raise OperationError(
                f"restore into {target.describe()} failed: {exc}",
                hint="stop the app so nothing holds the database, then retry",
            ) from exc
        return
    _restore_postgres(target, backup, runner)


def verify_backup(target: DatabaseTarget, backup: Path, *, runner: Runner, scratch_dir: Path) -> VerifyResult:
    """Prove ``backup`` restores: load it into a scratch database and count what arrived.

    Problems with the backup itself (checksum, failed restore, failed integrity check) give
    ``ok=False`` with the reason in ``detail``; an unusable server raises OperationError.
    The scratch database (or file) is removed afterwards, also on failure.
    """
    try:
        verify_checksum(backup)
    except OperationError as exc:
        return VerifyResult(False, 0, 0, str(exc))
    if target.engine == "sqlite":
        return _verify_sqlite(backup, scratch_dir)
    return _verify_postgres(target, backup, runner)


def list_backups(dest_dir: Path, *, env: str | None = None) -> list[BackupResult]:
    """Complete backups in ``dest_dir`` (those with a sidecar), newest first.

    ``env`` limits the list to one environment's files. Checksums come from the sidecars;
    call :func:`verify_checksum` to compare them against the file contents.
    """
    results: list[BackupResult] = []
    for path, file_env, stamp, kind in _backup_files(dest_dir):
        if env is not None and file_env != env:
            continue
        try:
            digest = _read_sidecar(path)
            size = path.stat().st_size
        except (OperationError, OSError):
            continue  # no usable sidecar: a crashed or in-flight backup, not one to offer
        results.append(BackupResult(path, digest, size, kind, stamp, "sqlite" if kind == "sqlite" else "postgres"))
    results.sort(key=lambda b: (b.created_at, b.path.name), reverse=True)
    return results


def prune_backups(dest_dir: Path, *, keep: int, protect: Collection[Path] = (), env: str | None = None) -> list[Path]:
    """Delete all but the newest ``keep`` complete backups (by the timestamp in the name).

    Files in ``protect`` are never deleted and do not use up one of the ``keep`` slots.
    Sidecars go with their backups. A backup without a sidecar is only deleted when it is
    older than the oldest kept one, because a newer one may still be being written.
    Returns the deleted backup files.
    """
    if keep < 1:
        raise ConfigError(f"backup retention keep={keep} would delete every backup", hint="set keep to 1 or more")
    protected = {p.resolve() for p in protect}
    complete = {b.path for b in list_backups(dest_dir, env=env)}
    files = [(stamp, path) for path, file_env, stamp, _ in _backup_files(dest_dir) if env in (None, file_env)]
    files.sort(key=lambda item: (item[0], item[1].name), reverse=True)
    kept = 0
    oldest_kept: datetime | None = None
    removed: list[Path] = []
    for stamp, path in files:
        if path in complete and kept < keep:
            kept += 1
            oldest_kept = stamp
            continue
        if path.resolve() in protected:
            continue
        if path not in complete and (oldest_kept is None or stamp >= oldest_kept):
            continue
        try:
            path.unlink(missing_ok=True)
            sidecar_path(path).unlink(missing_ok=True)
        except OSError as exc:
            raise OperationError(f"cannot delete old backup {path}: {_os_error(exc)}") from exc
        removed.append(path)
    return removed


# --------------------------------------------------------------------------- files


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _os_error(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{reason}: {exc.filename}" if exc.filename else reason


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _ensure_private_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        return  # an existing directory keeps the permissions its owner chose
    os.chmod(path, 0o700)  # mkdir's mode is filtered through the umask


def _private_temp(directory: Path, name: str) -> Path:
    # Hidden, unique, created 0600 before any data goes in: the content is never readable
    # by others, not even briefly, and listing/pruning never sees a half-written file.
    tmp = directory / f".{name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    return tmp


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    # Makes the renames durable; not every filesystem supports it, and that is not fatal.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_sidecar(backup: Path, digest: str) -> None:
    tmp = _private_temp(backup.parent, backup.name + SIDECAR_SUFFIX)
    try:
        # Two spaces = text mode in sha256sum's format; the bare name makes `sha256sum -c`
        # work from inside the backup directory.
        tmp.write_text(f"{digest}  {backup.name}\n", encoding="utf-8")
        os.replace(tmp, sidecar_path(backup))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_sidecar(backup: Path) -> str:
    sidecar = sidecar_path(backup)
    try:
        text = sidecar.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise OperationError(
            f"backup {backup.name} has no checksum file {sidecar.name}",
            hint="the backup is incomplete or was copied without its .sha256 file",
        ) from exc
    except OSError as exc:
        raise OperationError(f"cannot read {sidecar}: {_os_error(exc)}") from exc
    digest = text.split()[0].lower() if text.split() else ""
    if not _SHA256.match(digest):
        raise OperationError(f"checksum file {sidecar.name} is malformed", hint="expected sha256sum output")
    return digest


def _backup_files(dest_dir: Path) -> list[tuple[Path, str, datetime, BackupFormat]]:
    if not dest_dir.is_dir():
        return []
    found: list[tuple[Path, str, datetime, BackupFormat]] = []
    for path in dest_dir.iterdir():
        match = _BACKUP_NAME.match(path.name)
        if not match or not path.is_file():
            continue
        stamp = datetime.strptime(match["stamp"], _STAMP).replace(tzinfo=UTC)
        found.append((path, match["env"], stamp, _FORMATS[match["ext"]]))
    return found


def _magic(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(len(_SQLITE_MAGIC))


# --------------------------------------------------------------------------- SQLite


def _sqlite_path(target: DatabaseTarget) -> Path:
    if target.path is None:  # excluded by __post_init__; this narrows the type
        raise ConfigError("sqlite database target has no file path", hint="set the database path")
    return target.path


def _sqlite_readonly(path: Path) -> sqlite3.Connection:
    # Read-only so that opening a backup can never change it (and so its checksum).
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def _require_sqlite_file(backup: Path) -> None:
    if not _magic(backup).startswith(_SQLITE_MAGIC):
        raise ConfigError(
            f"backup {backup.name} is not a SQLite database file",
            hint="restore PostgreSQL dumps into a postgres target",
        )


def _sqlite_backup(source: sqlite3.Connection, dest: sqlite3.Connection, *, what: str) -> None:
    """Copy ``source`` into ``dest`` in one step, so the copy is one consistent snapshot.

    Python retries forever while another connection holds a conflicting lock; the progress
    callback (called after every attempt) puts a deadline on that.
    """
    deadline = time.monotonic() + _SQLITE_LOCK_TIMEOUT

    def progress(status: int, remaining: int, total: int) -> None:
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and time.monotonic() > deadline:
            raise OperationError(
                f"{what}: database stayed locked for {_SQLITE_LOCK_TIMEOUT:.0f}s",
                hint="another process holds a long write lock; retry when it is idle",
            )

    source.backup(dest, pages=-1, progress=progress)


def _sqlite_copy(source_path: Path, dest: Path, *, what: str) -> None:
    try:
        # A normal (not read-only) connection: read-only ones cannot always open WAL databases.
        with (
            contextlib.closing(sqlite3.connect(source_path)) as source,
            contextlib.closing(sqlite3.connect(dest)) as copy,
        ):
            _sqlite_backup(source, copy, what=what)
            # A WAL source leaves the copy in WAL mode; a rollback-journal file is
            # self-contained, which is what a backup file should be.
            copy.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as exc:
        raise OperationError(f"{what} failed: {exc}", hint="check that the file is a SQLite database") from exc


def _verify_sqlite(backup: Path, scratch_dir: Path) -> VerifyResult:
    if not _magic(backup).startswith(_SQLITE_MAGIC):
        return VerifyResult(False, 0, 0, f"{backup.name} is not a SQLite database file")
    try:
        _ensure_private_dir(scratch_dir)
        scratch = _private_temp(scratch_dir, backup.name + ".verify")
    except OSError as exc:
        raise OperationError(f"cannot create a scratch file in {scratch_dir}: {_os_error(exc)}") from exc
    try:
        with (
            contextlib.closing(_sqlite_readonly(backup)) as source,
            contextlib.closing(sqlite3.connect(scratch)) as db,
        ):
            _sqlite_backup(source, db, what=f"verify of {backup.name}")
            problems = [str(row[0]) for row in db.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                return VerifyResult(False, 0, 0, "integrity_check: " + "; ".join(problems[:3]))
            names = [
                str(row[0])
                for row in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
                )
            ]
            rows = 0
            for name in names:
                # The name comes from sqlite_master and is quoted as an identifier.
                rows += int(db.execute(f"SELECT count(*) FROM {pg.quote_ident(name)}").fetchone()[0])  # noqa: S608
    except sqlite3.Error as exc:
        return VerifyResult(False, 0, 0, _one_line(f"restore failed: {exc}"))
    finally:
        for leftover in (scratch, scratch.with_name(scratch.name + "-journal")):
            leftover.unlink(missing_ok=True)
    return VerifyResult(True, len(names), rows, f"restored into a scratch file: {len(names)} tables, {rows} rows")


# --------------------------------------------------------------------------- PostgreSQL


def _pg_env(target: DatabaseTarget) -> dict[str, str]:
    return {**pg.pg_env(target), "PGCONNECT_TIMEOUT": _CONNECT_TIMEOUT}


def _pg_hint(target: DatabaseTarget, text: str) -> str | None:
    low = text.lower()
    if "password authentication failed" in low or "no password supplied" in low:
        return f"check the password for database user {target.user!r} in the env file"
    if any(s in low for s in ("connection refused", "could not connect", "timeout expired", "translate host")):
        return f"check that PostgreSQL is running and reachable at {target.host}:{target.port}"
    if "permission denied to create database" in low:
        return f"allow it with ALTER ROLE {target.user} CREATEDB, or use an admin user"
    if "must be owner" in low or "permission denied" in low:
        return "connect as the database owner or a superuser"
    return None


_ERROR_LINE = re.compile(r"\b(error|fatal)\b", re.IGNORECASE)


def _pg_brief(result: Result, limit: int = 300) -> str:
    """One masked line from a client tool's stderr.

    libpq and the pg tools print the cause first ("... failed: Connection refused") and
    advice or detail on the next line, so the first error line plus one says the most.
    """
    lines = [ln.strip() for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
    first = next((i for i, ln in enumerate(lines) if _ERROR_LINE.search(ln)), None)
    picked = lines[first : first + 2] if first is not None else lines[-3:]
    text = " ".join(" ".join(picked).split()) or f"exit code {result.returncode}"
    return masker.mask(text)[:limit]


def _pg(
    runner: Runner, argv: list[str], target: DatabaseTarget, what: str, *, stdout_path: Path | None = None
) -> Result:
    """Run one client tool against ``target``; a failure becomes a one-line OperationError."""
    result = runner.run(argv, env=_pg_env(target), stdout_path=stdout_path, what=what)
    if not result.ok:
        brief = _pg_brief(result)
        raise OperationError(f"{what} failed for {target.describe()}: {brief}", hint=_pg_hint(target, brief))
    return result


def _pg_query(target: DatabaseTarget, runner: Runner, sql: str, database: str, what: str) -> str:
    return _pg(runner, pg.psql_command(target, sql, database), target, what).stdout.strip()


def _pg_database_exists(target: DatabaseTarget, name: str, runner: Runner) -> bool:
    sql = f"SELECT 1 FROM pg_catalog.pg_database WHERE datname = {pg.quote_literal(name)}"  # noqa: S608
    return _pg_query(target, runner, sql, MAINTENANCE_DB, "database check") == "1"


def _pg_owner(target: DatabaseTarget, name: str, runner: Runner) -> str | None:
    sql = (
        "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_catalog.pg_database "  # noqa: S608
        f"WHERE datname = {pg.quote_literal(name)}"
    )
    return _pg_query(target, runner, sql, MAINTENANCE_DB, "owner lookup") or None


def _pg_kind(backup: Path) -> Literal["plain", "custom"]:
    magic = _magic(backup)
    if magic.startswith(_SQLITE_MAGIC):
        raise ConfigError(
            f"backup {backup.name} is a SQLite file, not a PostgreSQL dump",
            hint="restore it into a sqlite target",
        )
    return "custom" if magic.startswith(_CUSTOM_MAGIC) else "plain"


def _scratch_name(base: str, purpose: str) -> str:
    suffix = f"_{purpose}_{secrets.token_hex(4)}"
    room = pg.MAX_IDENTIFIER_BYTES - len(suffix)
    # Truncate ourselves: the server would truncate silently and dropdb would then miss it.
    head = base.encode()[:room].decode(errors="ignore")
    return head + suffix


def _pg_load(target: DatabaseTarget, backup: Path, database: str, runner: Runner, *, role: str | None) -> None:
    if _pg_kind(backup) == "custom":
        argv = pg.pg_restore(target, backup, database, role=role)
    else:
        argv = pg.psql_file(target, backup, database, role=role)
    _pg(runner, argv, target, f"restore of {backup.name}")


def _pg_drop_quietly(target: DatabaseTarget, name: str, runner: Runner) -> bool:
    return runner.run(pg.dropdb(target, name, force=True), env=_pg_env(target), what="dropdb").ok


def _restore_postgres(target: DatabaseTarget, backup: Path, runner: Runner) -> None:
    _pg_kind(backup)  # refuse a SQLite file before touching the server
    owner = _pg_owner(target, target.name, runner) or target.user
    # With --no-owner dumps, restored objects belong to whoever runs the restore; switch to
    # the database owner so an admin-run restore does not lock the app out of its tables.
    role = owner if owner != target.user else None
    staging = _scratch_name(target.name, "restore")
    _pg(runner, pg.createdb(target, staging, owner=owner, template="template0"), target, "createdb (staging)")
    try:
        _pg_load(target, backup, staging, runner, role=role)
        _pg(runner, pg.dropdb(target, target.name, force=True), target, "dropdb (old database)")
    except BaseException:
        _pg_drop_quietly(target, staging, runner)
        raise
    rename = f"ALTER DATABASE {pg.quote_ident(staging)} RENAME TO {pg.quote_ident(target.name)}"
    result = runner.run(pg.psql_command(target, rename, MAINTENANCE_DB), env=_pg_env(target), what="rename")
    if not result.ok:
        raise OperationError(
            f"restored data is in database {staging} but renaming it to {target.name} failed: {_pg_brief(result)}",
            hint=f"rename it by hand: {rename}",
        )


def _verify_postgres(target: DatabaseTarget, backup: Path, runner: Runner) -> VerifyResult:
    try:
        _pg_kind(backup)
    except ConfigError as exc:
        return VerifyResult(False, 0, 0, str(exc))
    scratch = _scratch_name(target.name, "verify")
    _pg(runner, pg.createdb(target, scratch, template="template0"), target, "createdb (scratch)")
    try:
        try:
            _pg_load(target, backup, scratch, runner, role=None)
        except OperationError as exc:
            result = VerifyResult(False, 0, 0, str(exc))
        else:
            counts = _pg_query(target, runner, _PG_COUNT_SQL, scratch, "counting rows")
            tables, rows = (int(part) for part in counts.split("|"))
            result = VerifyResult(
                True, tables, rows, f"restored into scratch database {scratch}: {tables} tables, {rows} rows"
            )
    except BaseException:
        _pg_drop_quietly(target, scratch, runner)
        raise
    if not _pg_drop_quietly(target, scratch, runner):
        raise OperationError(
            f"verify of {backup.name} left scratch database {scratch} behind",
            hint=f"drop it by hand: dropdb {scratch}",
        )
    return result
