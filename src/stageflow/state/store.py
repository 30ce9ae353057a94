"""The SQLite store (WAL). This module owns the schema and its versioned migrations."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from stageflow.masking import masker
from stageflow.state.records import (
    Backup,
    Deployment,
    EnvState,
    Event,
    Lock,
    Release,
    StateDamaged,
    Step,
)

__all__ = ["Backup", "Deployment", "EnvState", "Event", "Lock", "Release", "StateDamaged", "Step", "Store"]

R = TypeVar("R")

# Each entry migrates from version i to i+1; never edit a shipped entry, append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE releases (
        id TEXT PRIMARY KEY,
        commit_sha TEXT NOT NULL,
        dirty INTEGER NOT NULL DEFAULT 0,
        message TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        path TEXT NOT NULL,
        requirements_hash TEXT
    );
    CREATE TABLE deployments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        env TEXT NOT NULL,
        release_id TEXT,
        previous_release_id TEXT,
        kind TEXT NOT NULL DEFAULT 'deploy',
        started_at TEXT NOT NULL,
        finished_at TEXT,
        outcome TEXT NOT NULL DEFAULT 'running',
        downtime INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        actor TEXT NOT NULL DEFAULT '',
        pid INTEGER
    );
    CREATE INDEX deployments_env ON deployments(env, id);
    CREATE TABLE steps (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        deployment_id INTEGER NOT NULL REFERENCES deployments(id),
        name TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        seconds REAL,
        outcome TEXT NOT NULL DEFAULT 'running',
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX steps_deployment ON steps(deployment_id, id);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts TEXT NOT NULL,
        actor TEXT NOT NULL,
        host TEXT NOT NULL,
        command TEXT NOT NULL,
        env TEXT,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE locks (
        env TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        command TEXT NOT NULL,
        started_at TEXT NOT NULL,
        heartbeat_at TEXT NOT NULL,
        lease_seconds REAL NOT NULL
    );
    CREATE TABLE env_state (
        env TEXT PRIMARY KEY,
        current_release TEXT,
        previous_release TEXT,
        color TEXT,
        port INTEGER,
        deployed_at TEXT,
        downtime INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE backups (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        env TEXT NOT NULL,
        path TEXT NOT NULL,
        checksum TEXT NOT NULL,
        size INTEGER NOT NULL,
        format TEXT NOT NULL,
        engine TEXT NOT NULL,
        created_at TEXT NOT NULL,
        deployment_id INTEGER
    );
    """,
    # 2: where a release runs belongs to its runtime (local: color + port; compose: a slot), stored as
    # an opaque JSON placement; releases get the runtime's artifacts (venv hash, image IDs).
    """
    CREATE TABLE env_state_v2 (
        env TEXT PRIMARY KEY,
        current_release TEXT,
        previous_release TEXT,
        placement TEXT,
        deployed_at TEXT,
        downtime INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO env_state_v2 (env, current_release, previous_release, placement, deployed_at, downtime)
        SELECT env, current_release, previous_release,
               CASE WHEN color IS NULL THEN NULL ELSE json_object('slot', color, 'port', port) END,
               deployed_at, downtime
        FROM env_state;
    DROP TABLE env_state;
    ALTER TABLE env_state_v2 RENAME TO env_state;
    ALTER TABLE releases ADD COLUMN artifacts TEXT NOT NULL DEFAULT '{}'
    """,
]


def utcnow() -> str:
    """Current UTC time as ISO-8601 with seconds precision."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Store:
    """Thin typed access to ``.stageflow/state.db``.

    Every write is its own short transaction so a crash never leaves a half-written record;
    ``busy_timeout`` lets concurrent stageflow processes wait for each other instead of failing.
    """

    def __init__(self, path: Path, *, memory: bool = False) -> None:
        from stageflow.fsutil import create_private, make_dirs

        self.path = path
        if not memory:
            # Created 0600 (in a 0700 directory) before SQLite opens it; its -wal and -shm files
            # take the database's mode. Never through a symlink.
            make_dirs(path.parent, root=path.parent.parent)
            create_private(path, root=path.parent.parent)
        self.db = sqlite3.connect(":memory:" if memory else path, timeout=30, isolation_level=None,
                                  check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA busy_timeout=30000")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise StateDamaged(
                f"{path}: not a readable stageflow state database ({exc})",
                hint="move it aside (history is lost) and stageflow starts a new one",
            ) from None
        except StateDamaged:
            self.db.close()
            raise

    @classmethod
    def empty(cls, path: Path) -> Store:
        """An empty store in memory, for read-only commands in a project with no ``path`` yet:
        they see a project never deployed, and create nothing on disk."""
        return cls(path, memory=True)

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: takes the write lock up front so check-then-write is atomic.

        Inside an open transaction it joins that one (the monitor writes several tables as one unit).
        """
        if self.db.in_transaction:
            yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        """The schema version of this database."""
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        with self.tx():
            version = self.schema_version
            if version > len(MIGRATIONS):
                # Its tables may mean something this code does not know: reading or writing them
                # could lose what the newer stageflow recorded.
                raise StateDamaged(
                    f"{self.path}: written by a newer stageflow (state schema {version}; this stageflow knows "
                    f"up to {len(MIGRATIONS)})",
                    hint="upgrade stageflow to the release that wrote it, or restore the copy of "
                         ".stageflow/state.db kept before upgrading",
                )
            for i, script in enumerate(MIGRATIONS[version:], start=version):
                for statement in filter(str.strip, script.split(";")):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {i + 1}")

    # releases ---------------------------------------------------------------------------------
    def add_release(
        self, rid: str, commit: str, dirty: bool, message: str, path: Path, requirements_hash: str | None
    ) -> None:
        """Record a release directory."""
        with self.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO releases (id, commit_sha, dirty, message, created_at, path, requirements_hash)"
                " VALUES (?,?,?,?,?,?,?)",
                (rid, commit, int(dirty), message, utcnow(), str(path), requirements_hash),
            )

    def _all(self, decode: Callable[[sqlite3.Row], R], query: str, args: tuple[Any, ...] = ()) -> list[R]:
        return [decode(row) for row in self.db.execute(query, args)]

    def _one(self, decode: Callable[[sqlite3.Row], R], query: str, args: tuple[Any, ...] = ()) -> R | None:
        row = self.db.execute(query, args).fetchone()
        return decode(row) if row is not None else None

    def release(self, rid: str) -> Release | None:
        """One release by id."""
        return self._one(Release.decode, "SELECT * FROM releases WHERE id=?", (rid,))

    def releases(self) -> list[Release]:
        """All releases, newest first."""
        return self._all(Release.decode, "SELECT * FROM releases ORDER BY id DESC")

    def delete_release(self, rid: str) -> None:
        """Forget a release."""
        with self.tx() as db:
            db.execute("DELETE FROM releases WHERE id=?", (rid,))

    # deployments and the step journal -----------------------------------------------------------
    def start_deployment(self, env: str, kind: str, actor: str, pid: int, previous: str | None) -> int:
        """Open a deployment record and return its id."""
        with self.tx() as db:
            cur = db.execute(
                "INSERT INTO deployments (env, kind, started_at, actor, pid, previous_release_id)"
                " VALUES (?,?,?,?,?,?)",
                (env, kind, utcnow(), actor, pid, previous),
            )
            return int(cur.lastrowid or 0)

    def set_deployment_release(self, dep_id: int, release_id: str) -> None:
        """Attach the release being deployed."""
        with self.tx() as db:
            db.execute("UPDATE deployments SET release_id=? WHERE id=?", (release_id, dep_id))

    def set_deployment_previous(self, dep_id: int, previous: str | None) -> None:
        """What served when the deployment began (known once routing and the record agree)."""
        with self.tx() as db:
            db.execute("UPDATE deployments SET previous_release_id=? WHERE id=?", (previous, dep_id))

    def finish_deployment(self, dep_id: int, outcome: str, error: str | None = None, downtime: bool = False) -> None:
        """Close a deployment record; a record is closed once (the first, most specific outcome wins)."""
        with self.tx() as db:
            db.execute(
                "UPDATE deployments SET finished_at=?, outcome=?, error=?, downtime=? WHERE id=? AND outcome='running'",
                (utcnow(), outcome, masker.mask(error) if error else None, int(downtime), dep_id),
            )

    def abandon_running(self, env: str, reason: str) -> int:
        """Mark deployments left 'running' by a dead process as failed; return how many."""
        with self.tx() as db:
            cur = db.execute(
                "UPDATE deployments SET outcome='crashed', finished_at=?, error=? WHERE env=? AND outcome='running'",
                (utcnow(), reason, env),
            )
            db.execute(
                "UPDATE steps SET outcome='crashed', finished_at=? WHERE outcome='running' AND deployment_id IN "
                "(SELECT id FROM deployments WHERE env=?)",
                (utcnow(), env),
            )
            return cur.rowcount

    def watched(self, env: str, release: str) -> bool:
        """An interrupted deployment of ``release`` to ``env`` finished its watch period."""
        row = self.db.execute(
            "SELECT 1 FROM steps s JOIN deployments d ON s.deployment_id = d.id WHERE d.env=? AND d.release_id=?"
            " AND d.outcome IN ('running', 'crashed') AND s.name='watch' AND s.outcome='ok' LIMIT 1",
            (env, release),
        ).fetchone()
        return row is not None

    def start_step(self, dep_id: int, name: str) -> int:
        """Open a journal step."""
        with self.tx() as db:
            cur = db.execute(
                "INSERT INTO steps (deployment_id, name, started_at) VALUES (?,?,?)", (dep_id, name, utcnow())
            )
            return int(cur.lastrowid or 0)

    def finish_step(self, step_id: int, outcome: str, detail: str, seconds: float) -> None:
        """Close a journal step."""
        with self.tx() as db:
            db.execute(
                "UPDATE steps SET finished_at=?, outcome=?, detail=?, seconds=? WHERE id=?",
                (utcnow(), outcome, masker.mask(detail), seconds, step_id),
            )

    def deployments(self, env: str | None = None, limit: int = 50) -> list[Deployment]:
        """Deployments, newest first."""
        if env:
            q = "SELECT * FROM deployments WHERE env=? ORDER BY id DESC LIMIT ?"
            return self._all(Deployment.decode, q, (env, limit))
        return self._all(Deployment.decode, "SELECT * FROM deployments ORDER BY id DESC LIMIT ?", (limit,))

    def deployment(self, dep_id: int) -> Deployment | None:
        """One deployment by id."""
        return self._one(Deployment.decode, "SELECT * FROM deployments WHERE id=?", (dep_id,))

    def releases_deploying(self) -> set[str]:
        """Releases a running deployment uses."""
        return {str(r[0]) for r in self.db.execute(
            "SELECT release_id FROM deployments WHERE outcome='running' AND release_id IS NOT NULL")}

    def releases_named(self) -> set[str]:
        """Releases some deployment (of any outcome) names."""
        return {str(r[0]) for r in self.db.execute(
            "SELECT DISTINCT release_id FROM deployments WHERE release_id IS NOT NULL")}

    def steps(self, dep_id: int) -> list[Step]:
        """Journal steps of one deployment, in order."""
        return self._all(Step.decode, "SELECT * FROM steps WHERE deployment_id=? ORDER BY id", (dep_id,))

    # audit ---------------------------------------------------------------------------------------
    def add_event(self, actor: str, host: str, command: str, env: str | None, outcome: str, detail: str = "") -> None:
        """Append an audit event (masked)."""
        with self.tx() as db:
            db.execute(
                "INSERT INTO events (ts, actor, host, command, env, outcome, detail) VALUES (?,?,?,?,?,?,?)",
                (utcnow(), actor, host, masker.mask(command), env, outcome, masker.mask(detail)),
            )

    def events(self, env: str | None = None, limit: int = 100) -> list[Event]:
        """Audit events, newest first."""
        if env:
            return self._all(Event.decode, "SELECT * FROM events WHERE env=? ORDER BY id DESC LIMIT ?", (env, limit))
        return self._all(Event.decode, "SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))

    # environment state -------------------------------------------------------------------------
    def env_state(self, env: str) -> EnvState:
        """What currently runs in ``env`` (all None when never deployed)."""
        found = self._one(EnvState.read, "SELECT * FROM env_state WHERE env=?", (env,))
        return found or EnvState(env, None, None, None, None, False)

    def set_env_state(
        self, env: str, current: str | None, previous: str | None, placement: dict[str, Any] | None,
        downtime: bool,
    ) -> None:
        """Record what now serves ``env``."""
        with self.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO env_state (env, current_release, previous_release, placement, deployed_at,"
                " downtime) VALUES (?,?,?,?,?,?)",
                (env, current, previous, json.dumps(placement) if placement is not None else None, utcnow(),
                 int(downtime)),
            )

    def release_in_use(self, rid: str) -> bool:
        """True when some environment serves ``rid`` or keeps it as its previous release."""
        row = self.db.execute(
            "SELECT 1 FROM env_state WHERE current_release=? OR previous_release=? LIMIT 1", (rid, rid)
        ).fetchone()
        return row is not None

    def release_deploying(self, rid: str) -> bool:
        """True when a deployment of ``rid`` is still running."""
        row = self.db.execute("SELECT 1 FROM deployments WHERE release_id=? AND outcome='running'", (rid,)).fetchone()
        return row is not None

    def set_release_artifacts(self, rid: str, artifacts: dict[str, Any]) -> None:
        """Merge the runtime's artifacts of a release (e.g. image IDs) into its record."""
        with self.tx() as db:
            release = self.release(rid)
            if release is None:
                return
            merged = {**release.artifacts, **artifacts}
            db.execute("UPDATE releases SET artifacts=? WHERE id=?", (json.dumps(merged), rid))

    def release_artifacts(self, rid: str) -> dict[str, Any]:
        """The runtime's artifacts of a release ({} when none)."""
        release = self.release(rid)
        return release.artifacts if release else {}

    def clear_env_state(self, env: str) -> None:
        """Forget what serves ``env`` (after ``down``)."""
        with self.tx() as db:
            db.execute("DELETE FROM env_state WHERE env=?", (env,))

    def env_releases(self, env: str) -> list[str]:
        """Releases that successfully served ``env``, newest first, without repeats."""
        rows = self.db.execute(
            "SELECT release_id FROM deployments WHERE env=? AND outcome='succeeded' AND release_id IS NOT NULL"
            " ORDER BY id DESC",
            (env,),
        )
        seen: list[str] = []
        for (rid,) in rows:
            if rid not in seen:
                seen.append(str(rid))
        return seen

    def rolled_back_from(self, env: str) -> set[str]:
        """Releases of ``env`` a rollback went away from, and that have not served it again since."""
        marked: set[str] = set()
        for d in self._all(Deployment.decode, "SELECT * FROM deployments WHERE env=? AND outcome='succeeded'"
                           " ORDER BY id", (env,)):
            if d.release_id is not None:
                marked.discard(d.release_id)
            if d.kind == "rollback" and d.previous_release_id not in (None, d.release_id):
                marked.add(d.previous_release_id)
        return marked

    # backups ------------------------------------------------------------------------------------
    def add_backup(
        self, env: str, path: Path, checksum: str, size: int, fmt: str, engine: str, deployment_id: int | None
    ) -> None:
        """Record a backup file."""
        with self.tx() as db:
            db.execute(
                "INSERT INTO backups (env, path, checksum, size, format, engine, created_at, deployment_id)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (env, str(path), checksum, size, fmt, engine, utcnow(), deployment_id),
            )

    def backup_before(self, env: str, release: str | None) -> Backup | None:
        """The newest backup taken by a successful deployment of ``release`` (else the newest of ``env``)."""
        found = self._one(
            Backup.decode,
            "SELECT b.* FROM backups b JOIN deployments d ON b.deployment_id = d.id "
            "WHERE b.env=? AND d.release_id=? AND d.outcome='succeeded' ORDER BY b.id DESC LIMIT 1",
            (env, release),
        )
        if found is not None:
            return found
        recorded = self.backups(env)
        return recorded[0] if recorded else None

    # locks --------------------------------------------------------------------------------------------
    # Single statements: they join the caller's transaction (EnvLock's check-then-take) or autocommit.
    def lock(self, env: str) -> Lock | None:
        """The lock record of ``env`` (a damaged one says so in ``Lock.damaged``)."""
        return self._one(Lock.read, "SELECT * FROM locks WHERE env=?", (env,))

    def put_lock(self, env: str, owner: str, pid: int, host: str, command: str, lease: float) -> None:
        """Write the lock of ``env`` (replacing a stale one)."""
        now = utcnow()
        self.db.execute("INSERT OR REPLACE INTO locks VALUES (?,?,?,?,?,?,?,?)",
                        (env, owner, pid, host, command, now, now, lease))

    def beat_lock(self, env: str, pid: int, host: str) -> None:
        """Renew the lease of the lock we hold."""
        self.db.execute("UPDATE locks SET heartbeat_at=? WHERE env=? AND pid=? AND host=?", (utcnow(), env, pid, host))

    def drop_lock(self, env: str, pid: int | None = None, host: str | None = None) -> None:
        """Delete the lock of ``env`` (only if held by ``pid``@``host`` when given)."""
        if pid is None:
            self.db.execute("DELETE FROM locks WHERE env=?", (env,))
        else:
            self.db.execute("DELETE FROM locks WHERE env=? AND pid=? AND host=?", (env, pid, host))

    def backups(self, env: str) -> list[Backup]:
        """Recorded backups of ``env``, newest first."""
        return self._all(Backup.decode, "SELECT * FROM backups WHERE env=? ORDER BY id DESC", (env,))

    def forget_backup(self, path: Path) -> None:
        """Drop the record of a deleted backup file."""
        with self.tx() as db:
            db.execute("DELETE FROM backups WHERE path=?", (str(path),))


def database_error(exc: BaseException) -> bool:
    """True when ``exc`` comes from SQLite (a damaged or foreign state file the store did not catch)."""
    return isinstance(exc, sqlite3.Error)


def dumps(obj: Any) -> str:
    """JSON for CLI output."""
    return json.dumps(obj, indent=2, default=str)
