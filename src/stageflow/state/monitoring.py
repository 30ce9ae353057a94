"""The monitor's tables in the state store: alert states and history, the outbox, send attempts, samples.

They live in ``.stageflow/state.db`` next to the deploy records, with their own versioned schema
(``monitor_meta.schema_version``) so that the deploy schema's migrations and these never collide:
each side appends its own steps. Writes that must agree (an alert's new state, its history row and
the messages it queues) go in one transaction, so a monitor killed at any moment leaves either all
of them or none: after a restart the same transition is found again and queued exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from stageflow.masking import masker
from stageflow.state.records import Record, StateDamaged

if TYPE_CHECKING:
    from stageflow.state.store import Store

# Each entry moves the monitor schema from version i to i+1; never edit a shipped entry, append one.
SCHEMA: list[str] = [
    """
    CREATE TABLE alerts (
        fingerprint TEXT PRIMARY KEY,
        env TEXT NOT NULL,
        check_name TEXT NOT NULL,
        target TEXT NOT NULL,
        state TEXT NOT NULL,
        severity TEXT NOT NULL,
        value REAL,
        threshold REAL,
        unit TEXT NOT NULL DEFAULT '',
        summary TEXT NOT NULL DEFAULT '',
        hint TEXT NOT NULL DEFAULT '',
        pending_since REAL,
        firing_since REAL,
        bad_count INTEGER NOT NULL DEFAULT 0,
        good_count INTEGER NOT NULL DEFAULT 0,
        good_since REAL,
        last_notified REAL,
        folded_under TEXT,
        updated_at REAL NOT NULL
    );
    CREATE TABLE alert_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        fingerprint TEXT NOT NULL,
        env TEXT NOT NULL,
        check_name TEXT NOT NULL,
        target TEXT NOT NULL,
        transition TEXT NOT NULL,
        severity TEXT NOT NULL,
        value REAL,
        summary TEXT NOT NULL DEFAULT '',
        duration REAL,
        note TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX alert_history_ts ON alert_history(ts);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at REAL NOT NULL,
        due_at REAL NOT NULL,
        notifier TEXT NOT NULL,
        env TEXT NOT NULL,
        kind TEXT NOT NULL,
        dedup_key TEXT NOT NULL,
        message TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        claimed_by TEXT,
        claimed_until REAL,
        last_error TEXT NOT NULL DEFAULT '',
        delivered_at REAL,
        UNIQUE (notifier, dedup_key)
    );
    CREATE INDEX outbox_due ON outbox(status, due_at);
    CREATE TABLE send_attempts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        outbox_ids TEXT NOT NULL,
        notifier TEXT NOT NULL,
        result TEXT NOT NULL,
        status_code INTEGER,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE samples (
        env TEXT NOT NULL,
        metric TEXT NOT NULL,
        target TEXT NOT NULL,
        ts REAL NOT NULL,
        value REAL NOT NULL
    );
    CREATE INDEX samples_env_metric ON samples(env, metric, ts);
    CREATE TABLE samples_hourly (
        env TEXT NOT NULL,
        metric TEXT NOT NULL,
        target TEXT NOT NULL,
        hour REAL NOT NULL,
        n INTEGER NOT NULL,
        total REAL NOT NULL,
        low REAL NOT NULL,
        high REAL NOT NULL,
        PRIMARY KEY (env, metric, target, hour)
    );
    CREATE TABLE log_cursors (
        path TEXT PRIMARY KEY,
        inode INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        kinds TEXT NOT NULL DEFAULT '[]'
    );
    CREATE TABLE monitor_leader (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        start_ticks INTEGER,
        started_at REAL NOT NULL,
        heartbeat REAL NOT NULL
    )
    """,
    # 2: when each log was last read, so throughput is per second of real time, not per interval
    "ALTER TABLE log_cursors ADD COLUMN read_at REAL",
]

OPEN_STATES = ("pending", "firing")


@dataclass
class AlertRow(Record):
    """One alert's current state (``state`` is ok, pending or firing).

    Not frozen: it is the rules' working copy of the stored state, moved through its states and saved.
    """

    TABLE = "alerts"
    KEY = "fingerprint"

    fingerprint: str
    env: str
    check_name: str
    target: str
    state: str = "ok"
    severity: str = "ok"
    value: float | None = None
    threshold: float | None = None
    unit: str = ""
    summary: str = ""
    hint: str = ""
    pending_since: float | None = None
    firing_since: float | None = None
    bad_count: int = 0
    good_count: int = 0
    good_since: float | None = None
    last_notified: float | None = None
    folded_under: str | None = None
    updated_at: float = 0.0


@dataclass(frozen=True)
class OutboxRow:
    """A queued message for one notifier."""

    id: int
    notifier: str
    env: str
    kind: str
    message: dict[str, Any]
    attempts: int
    created_at: float


@dataclass(frozen=True)
class OutboxEntry(Record):
    """An outbox row as stored, for reports and tests (``message`` is the queued JSON text)."""

    TABLE = "outbox"

    id: int
    created_at: float
    due_at: float
    notifier: str
    env: str
    kind: str
    dedup_key: str
    message: str
    status: str
    attempts: int
    claimed_by: str | None
    claimed_until: float | None
    last_error: str
    delivered_at: float | None


@dataclass(frozen=True)
class HistoryEntry(Record):
    """One stored alert transition."""

    TABLE = "alert_history"

    id: int
    ts: float
    fingerprint: str
    env: str
    check_name: str
    target: str
    transition: str
    severity: str
    value: float | None
    summary: str
    duration: float | None
    note: str


@dataclass(frozen=True)
class SendAttempt(Record):
    """One attempt to send a batch of outbox messages."""

    TABLE = "send_attempts"

    id: int
    ts: float
    outbox_ids: tuple[int, ...]
    notifier: str
    result: str
    status_code: int | None
    detail: str


@dataclass(frozen=True)
class MonitorLeader(Record):
    """The continuous monitor that holds the project."""

    TABLE = "monitor_leader"

    host: str
    pid: int
    start_ticks: int | None
    started_at: float
    heartbeat: float


@dataclass
class Transition:
    """One history entry."""

    ts: float
    fingerprint: str
    env: str
    check_name: str
    target: str
    transition: str
    severity: str
    value: float | None = None
    summary: str = ""
    duration: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class MonitorState:
    """Typed access to the monitor's tables, over the store's connection and transactions."""

    def __init__(self, store: Store) -> None:
        self.db = store.db
        self.tx = store.tx
        self._ensure_schema()

    @property
    def schema_version(self) -> int:
        """Version of the monitor's tables in this database."""
        row = self.db.execute("SELECT value FROM monitor_meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _ensure_schema(self) -> None:
        with self.tx() as db:
            db.execute("CREATE TABLE IF NOT EXISTS monitor_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            try:
                version = self.schema_version
            except ValueError:
                raise StateDamaged("state.db is damaged: monitor_meta row key='schema_version' is not a number",
                                   hint="move .stageflow/state.db aside and stageflow starts a new one "
                                        "(history is lost)") from None
            if version > len(SCHEMA):
                raise StateDamaged(
                    f"state.db: written by a newer stageflow (monitor schema {version}; this stageflow knows "
                    f"up to {len(SCHEMA)})",
                    hint="upgrade stageflow to the release that wrote it, or restore the copy of "
                         ".stageflow/state.db kept before upgrading",
                )
            for i, script in enumerate(SCHEMA[version:], start=version):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute("INSERT OR REPLACE INTO monitor_meta VALUES ('schema_version', ?)", (str(i + 1),))

    # alerts -------------------------------------------------------------------------------------
    def alert(self, fingerprint: str) -> AlertRow | None:
        """The stored state of one alert."""
        row = self.db.execute("SELECT * FROM alerts WHERE fingerprint=?", (fingerprint,)).fetchone()
        return AlertRow.decode(row) if row else None

    def alerts(self, states: Sequence[str] = OPEN_STATES) -> list[AlertRow]:
        """Alerts in the given states, most severe and oldest first."""
        marks = ",".join("?" * len(states))
        rows = self.db.execute(
            f"SELECT * FROM alerts WHERE state IN ({marks}) ORDER BY "  # noqa: S608 - placeholders only
            "CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, firing_since, pending_since",
            tuple(states),
        )
        return [AlertRow.decode(r) for r in rows]

    def save_alert(self, alert: AlertRow) -> None:
        """Insert or replace one alert's state."""
        data = asdict(alert)
        data["summary"] = masker.mask(data["summary"])
        cols = ",".join(data)
        self.db.execute(f"INSERT OR REPLACE INTO alerts ({cols}) VALUES ({','.join('?' * len(data))})",  # noqa: S608
                        tuple(data.values()))

    def add_transition(self, t: Transition) -> None:
        """Append a history entry."""
        self.db.execute(
            "INSERT INTO alert_history (ts, fingerprint, env, check_name, target, transition, severity, value, "
            "summary, duration, note) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (t.ts, t.fingerprint, t.env, t.check_name, t.target, t.transition, t.severity, t.value,
             masker.mask(t.summary), t.duration, masker.mask(t.note)),
        )

    def history(self, since: float, until: float | None = None, env: str | None = None) -> list[HistoryEntry]:
        """History entries in a time range, oldest first."""
        q = "SELECT * FROM alert_history WHERE ts >= ? AND ts < ?"
        args: list[Any] = [since, until if until is not None else 1e18]
        if env:
            q += " AND env = ?"
            args.append(env)
        return [HistoryEntry.decode(r) for r in self.db.execute(q + " ORDER BY id", args)]

    # outbox -------------------------------------------------------------------------------------
    def enqueue(self, notifier: str, env: str, kind: str, dedup_key: str, message: dict[str, Any],
                now: float) -> bool:
        """Queue a message for one notifier; False when that (notifier, key) was queued before."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO outbox (created_at, due_at, notifier, env, kind, dedup_key, message) "
            "VALUES (?,?,?,?,?,?,?)",
            (now, now, notifier, env, kind, dedup_key, masker.mask(json.dumps(message, default=str))),
        )
        return cur.rowcount == 1

    def claim(self, claimer: str, now: float, lease: float, notifiers: Sequence[str],
              reclaimable: Sequence[str] = (), limit: int = 200) -> list[OutboxRow]:
        """Take the due messages of ``notifiers`` nobody else holds (or whose holder is gone), oldest first."""
        with self.tx() as db:
            marks = ",".join("?" * len(reclaimable)) or "NULL"
            names = ",".join("?" * len(notifiers)) or "NULL"
            query = ("SELECT * FROM outbox WHERE status='pending' AND due_at <= ? AND (claimed_by IS NULL OR "  # noqa: S608
                     f"claimed_until < ? OR claimed_by = ? OR claimed_by IN ({marks})) AND notifier IN ({names}) "
                     "ORDER BY id LIMIT ?")
            rows = list(db.execute(query, (now, now, claimer, *reclaimable, *notifiers, limit)))
            out, damaged = [], []
            for r in rows:
                try:
                    message = json.loads(r["message"])
                    if not isinstance(message, dict):
                        raise ValueError("not an object")
                    out.append(OutboxRow(r["id"], r["notifier"], r["env"], r["kind"], message, int(r["attempts"]),
                                         float(r["created_at"])))
                except (ValueError, TypeError):
                    damaged.append(r["id"])
            db.executemany("UPDATE outbox SET claimed_by=?, claimed_until=? WHERE id=?",
                           [(claimer, now + lease, r.id) for r in out])
            # A row that no longer parses (a damaged state file) is set aside, never retried forever.
            db.executemany("UPDATE outbox SET status='failed', last_error='damaged row: not valid JSON' WHERE id=?",
                           [(i,) for i in damaged])
        return out

    def claimers(self) -> list[str]:
        """Who holds claims right now."""
        return [r[0] for r in self.db.execute(
            "SELECT DISTINCT claimed_by FROM outbox WHERE status='pending' AND claimed_by IS NOT NULL")]

    def delivered(self, ids: Sequence[int], now: float) -> None:
        """Mark messages sent."""
        with self.tx() as db:
            db.executemany("UPDATE outbox SET status='delivered', delivered_at=?, attempts=attempts+1, "
                           "claimed_by=NULL WHERE id=?", [(now, i) for i in ids])

    def release(self, ids: Sequence[int]) -> None:
        """Give claimed messages back untried (the drain ran out of time)."""
        with self.tx() as db:
            db.executemany("UPDATE outbox SET claimed_by=NULL WHERE id=?", [(i,) for i in ids])

    def retry_later(self, ids: Sequence[int], due: float, error: str) -> None:
        """Put messages back for another attempt at ``due``."""
        with self.tx() as db:
            db.executemany("UPDATE outbox SET due_at=?, attempts=attempts+1, claimed_by=NULL, last_error=? "
                           "WHERE id=?", [(due, masker.mask(error), i) for i in ids])

    def failed(self, ids: Sequence[int], error: str) -> None:
        """Give up on messages (a configuration error: retrying cannot help)."""
        with self.tx() as db:
            db.executemany("UPDATE outbox SET status='failed', attempts=attempts+1, claimed_by=NULL, last_error=? "
                           "WHERE id=?", [(masker.mask(error), i) for i in ids])

    def queued(self, dedup_key: str) -> bool:
        """A message with this key was queued before (for any notifier, in any status)."""
        return self.db.execute("SELECT 1 FROM outbox WHERE dedup_key=? LIMIT 1", (dedup_key,)).fetchone() is not None

    def outbox(self, status: str | None = None) -> list[OutboxEntry]:
        """Outbox rows (all, or with one status), oldest first."""
        if status:
            rows = self.db.execute("SELECT * FROM outbox WHERE status=? ORDER BY id", (status,))
        else:
            rows = self.db.execute("SELECT * FROM outbox ORDER BY id")
        return [OutboxEntry.decode(r) for r in rows]

    def count_outbox(self, status: str) -> int:
        """How many outbox rows have ``status``."""
        return int(self.db.execute("SELECT count(*) FROM outbox WHERE status=?", (status,)).fetchone()[0])

    def record_attempt(self, ids: Sequence[int], notifier: str, result: str, status_code: int | None, detail: str,
                       now: float) -> None:
        """Every send attempt, with its result."""
        with self.tx() as db:
            db.execute("INSERT INTO send_attempts (ts, outbox_ids, notifier, result, status_code, detail) "
                       "VALUES (?,?,?,?,?,?)",
                       (now, ",".join(map(str, ids)), notifier, result, status_code, masker.mask(detail)))

    def attempts(self, since: float = 0.0) -> list[SendAttempt]:
        """Send attempts since ``since``, oldest first."""
        return [SendAttempt.decode(r) for r in self.db.execute(
            "SELECT * FROM send_attempts WHERE ts >= ? ORDER BY id", (since,))]

    # samples ------------------------------------------------------------------------------------
    def add_samples(self, env: str, ts: float, values: Sequence[tuple[str, str, float]]) -> None:
        """Record (metric, target, value) samples taken at ``ts``."""
        self.db.executemany("INSERT INTO samples VALUES (?,?,?,?,?)",
                            [(env, metric, target, ts, value) for metric, target, value in values])

    def samples(self, env: str, metric: str, since: float, until: float) -> list[tuple[float, str, float]]:
        """(ts, target, value) of one metric: raw samples, then hourly means where raw ones were dropped."""
        raw = [(r[0], r[1], r[2]) for r in self.db.execute(
            "SELECT ts, target, value FROM samples WHERE env=? AND metric=? AND ts>=? AND ts<? ORDER BY ts",
            (env, metric, since, until))]
        first_raw = raw[0][0] if raw else until
        hourly = [(r[0], r[1], r[2]) for r in self.db.execute(
            "SELECT hour, target, total / n FROM samples_hourly WHERE env=? AND metric=? AND hour>=? AND hour<? "
            "ORDER BY hour", (env, metric, since, min(until, first_raw - 3600)))]
        return hourly + raw

    def downsample(self, now: float, raw_retention: float, retention: float) -> int:
        """Fold raw samples older than ``raw_retention`` into hourly rows; drop all older than ``retention``."""
        cutoff = now - raw_retention
        with self.tx() as db:
            db.execute(
                "INSERT INTO samples_hourly (env, metric, target, hour, n, total, low, high) "
                "SELECT env, metric, target, CAST(ts / 3600 AS INTEGER) * 3600.0, COUNT(*), SUM(value), MIN(value), "
                "MAX(value) FROM samples WHERE ts < ? GROUP BY 1, 2, 3, 4 "
                "ON CONFLICT (env, metric, target, hour) DO UPDATE SET n = n + excluded.n, "
                "total = total + excluded.total, low = MIN(low, excluded.low), high = MAX(high, excluded.high)",
                (cutoff,),
            )
            cur = db.execute("DELETE FROM samples WHERE ts < ?", (cutoff,))
            db.execute("DELETE FROM samples_hourly WHERE hour < ?", (now - retention,))
            db.execute("DELETE FROM alert_history WHERE ts < ?", (now - retention,))
            db.execute("DELETE FROM send_attempts WHERE ts < ?", (now - retention,))
            db.execute("DELETE FROM outbox WHERE status != 'pending' AND created_at < ?", (now - retention,))
            return cur.rowcount

    # log cursors --------------------------------------------------------------------------------
    def log_cursor_paths(self) -> list[str]:
        """Every log whose read position is remembered."""
        return [str(r[0]) for r in self.db.execute("SELECT path FROM log_cursors")]

    def log_cursor(self, path: str) -> tuple[int, int, list[str], float | None] | None:
        """(inode, offset, error kinds seen, when) where reading ``path`` stopped last time."""
        row = self.db.execute("SELECT inode, offset, kinds, read_at FROM log_cursors WHERE path=?",
                              (path,)).fetchone()
        if row is None:
            return None
        try:
            kinds = [str(k) for k in json.loads(row[2])][:500]
        except (ValueError, TypeError):
            kinds = []  # damaged: forget which kinds were seen rather than fail the check
        return int(row[0]), int(row[1]), kinds, float(row[3]) if row[3] is not None else None

    def set_log_cursor(self, path: str, inode: int, offset: int, kinds: Sequence[str], read_at: float) -> None:
        """Remember where (and when) reading ``path`` stopped."""
        self.db.execute("INSERT OR REPLACE INTO log_cursors (path, inode, offset, kinds, read_at) VALUES (?,?,?,?,?)",
                        (path, inode, offset, json.dumps(list(kinds)[-500:]), read_at))

    # the one continuous monitor ----------------------------------------------------------------
    def leader(self) -> MonitorLeader | None:
        """The continuous monitor that holds the project, if any."""
        row = self.db.execute("SELECT * FROM monitor_leader WHERE id=1").fetchone()
        return MonitorLeader.decode(row) if row else None

    def set_leader(self, host: str, pid: int, start_ticks: int | None, now: float) -> None:
        """Take the project for this continuous monitor."""
        self.db.execute("INSERT OR REPLACE INTO monitor_leader VALUES (1,?,?,?,?,?)",
                        (host, pid, start_ticks, now, now))

    def beat(self, pid: int, now: float) -> None:
        """Heartbeat of the continuous monitor."""
        with self.tx() as db:
            db.execute("UPDATE monitor_leader SET heartbeat=? WHERE pid=?", (now, pid))

    def drop_leader(self, pid: int) -> None:
        """Release the project (clean exit)."""
        with self.tx() as db:
            db.execute("DELETE FROM monitor_leader WHERE pid=?", (pid,))
