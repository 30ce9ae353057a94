"""Typed, frozen records of the state store, and the one place that decodes a stored row into them.

``state.db`` is stageflow's own file, but the trust model holds that it may be damaged (a crash of
the disk, a hand edit, an old tool). Every row is decoded column by column here, by the type its
record's field declares: a value of the wrong type, an impossible time or bad JSON is a
:class:`StateDamaged` naming the table, the row and the fix, never a ``TypeError`` deep inside a
deploy. Two records read damage as data instead, because a safe meaning exists: a damaged lock is
stale (taken over), a damaged placement is unknown (the runtime's routing is the truth).
Timestamps stay the ISO-8601 text the store wrote (checked to parse), so JSON output shows
exactly what was recorded.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, NewType, Protocol, TypeVar

from stageflow.errors import OperationError

#: What fixing a damaged row takes, said with every StateDamaged about one row.
ROW_FIX = ("repair or delete that row with the sqlite3 shell, or move .stageflow/state.db aside "
           "and stageflow starts a new one (history is lost)")


class StoredRow(Protocol):
    """A row as SQLite returns it (``sqlite3.Row``): columns by name."""

    def __getitem__(self, key: str) -> Any: ...

    def keys(self) -> list[str]: ...


class StateDamaged(OperationError):
    """``state.db`` cannot be read (corrupt, truncated, not SQLite, a damaged row, or a newer schema)."""


#: ISO-8601 text as the store wrote it (checked to parse when read back).
Timestamp = NewType("Timestamp", str)
#: A release id as stageflow makes them: one plain path component (it names the release's directory).
ReleaseId = NewType("ReleaseId", str)

#: A row's record type: a dataclass naming its table (and the column that identifies a row in messages).
Rec = TypeVar("Rec", bound="Record")


class Record:
    """Base of the stored records: each field is a column, decoded by the type of its annotation."""

    TABLE: ClassVar[str]
    KEY: ClassVar[str] = "id"

    @classmethod
    def decode(cls: type[Rec], row: StoredRow, **given: Any) -> Rec:
        """The record of ``row``; a value of the wrong type is :class:`StateDamaged`.

        Fields marked ``field(metadata=DERIVED)`` are not read from a column but ``given``.
        """
        values = dict(given)
        for name, check, problem, optional in _plan(cls):
            try:
                value = row[name]
            except (IndexError, KeyError):  # a table altered by hand, or by a tool that is not stageflow
                raise StateDamaged(f"state.db is damaged: table {cls.TABLE} has no column {name}",
                                   hint="move .stageflow/state.db aside and stageflow starts a new one "
                                        "(history is lost)") from None
            if value is None and optional:
                values[name] = None
                continue
            try:
                values[name] = check(value)
            except (TypeError, ValueError, OverflowError):
                raise damaged(cls.TABLE, row, cls.KEY, name, problem) from None
        return cls(**values)


#: Field metadata of a record field that is no column of its own.
DERIVED: dict[str, bool] = {"derived": True}


def damaged(table: str, row: StoredRow, key: str, column: str, problem: str) -> StateDamaged:
    """The error for a bad value in ``column`` of ``row``: the table, the row, the value and the fix."""
    where = f"{key}={row[key]!r}" if key in row.keys() else "?"  # noqa: SIM118 - sqlite3.Row has no __contains__
    value = repr(row[column])
    shown = value if len(value) <= 40 else value[:37] + "..."
    return StateDamaged(f"state.db is damaged: {table} row {where}: {column} {problem} (found {shown})", hint=ROW_FIX)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(column_type(value))
    return value


def _integer(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(column_type(value))
    return value


def _flag(value: Any) -> bool:
    if value not in (0, 1) or not isinstance(value, int):
        raise ValueError(value)
    return bool(value)


def _number(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or value != value:  # NaN
        raise TypeError(column_type(value))
    return float(value)


def _iso_time(value: Any) -> str:
    datetime.fromisoformat(_text(value))
    return str(value)


_RELEASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")


def _release_id(value: Any) -> str:
    if not _RELEASE_ID.fullmatch(_text(value)):
        raise ValueError(value)
    return str(value)


def _json_object(value: Any) -> dict[str, Any]:
    parsed = json.loads(_text(value))
    if not isinstance(parsed, dict):
        raise ValueError("not an object")
    return parsed


def _ids(value: Any) -> tuple[int, ...]:
    return tuple(int(i) for i in _text(value).split(",") if i)


def column_type(value: Any) -> str:
    """SQLite's name for the storage class of ``value``."""
    return {int: "INTEGER", float: "REAL", str: "TEXT", bytes: "BLOB"}.get(type(value), type(value).__name__)


#: Field type → (decode a column value, what is wrong when it fails).
_DECODERS: dict[Any, tuple[Callable[[Any], Any], str]] = {
    str: (_text, "is not text"),
    int: (_integer, "is not an integer"),
    bool: (_flag, "is not 0 or 1"),
    float: (_number, "is not a number"),
    Timestamp: (_iso_time, "is not an ISO-8601 time"),
    ReleaseId: (_release_id, "is not a release id (one plain name)"),
    Path: (lambda v: Path(_text(v)), "is not text"),
    dict[str, Any]: (_json_object, "is not a JSON object"),
    tuple[int, ...]: (_ids, "is not a comma-separated list of ids"),
}


_Plan = tuple[tuple[str, Callable[[Any], Any], str, bool], ...]
_PLANS: dict[type[Record], _Plan] = {}


def _plan(cls: type[Record]) -> _Plan:
    """(column, decoder, problem, may be NULL) for each stored field of ``cls``, from its annotations."""
    found = _PLANS.get(cls)
    if found is None:
        found = _PLANS[cls] = _make_plan(cls)
    return found


def _make_plan(cls: type[Record]) -> _Plan:
    hints = typing.get_type_hints(cls)
    plan = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]  # every Record is a dataclass
        if f.metadata.get("derived"):
            continue
        hint, optional = hints[f.name], False
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            args = typing.get_args(hint)
            optional = type(None) in args
            (hint,) = [a for a in args if a is not type(None)]
        check, problem = _DECODERS[hint]
        plan.append((f.name, check, problem, optional))
    return tuple(plan)


# records -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Release(Record):
    """A built release directory."""

    TABLE = "releases"

    id: ReleaseId
    commit_sha: str
    dirty: bool
    message: str
    created_at: Timestamp
    #: Where it was built. Informational: a release's directory is always ``<state dir>/releases/<id>``
    #: (``deploy.release.release_dir``), so a record cannot point a deploy or a cleanup elsewhere.
    path: Path
    requirements_hash: str | None
    #: The runtime's artifacts of this release (venv hash, image IDs); opaque to the store.
    artifacts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Deployment(Record):
    """One deploy, promotion or rollback of one environment."""

    TABLE = "deployments"

    id: int
    env: str
    release_id: str | None
    previous_release_id: str | None
    kind: str
    started_at: Timestamp
    finished_at: Timestamp | None
    outcome: str
    downtime: bool
    error: str | None
    actor: str
    pid: int | None

    def to_json(self) -> dict[str, Any]:
        """The record as ``history --json`` has always shown it (``downtime`` as 0/1)."""
        return {**dataclasses.asdict(self), "downtime": int(self.downtime)}


@dataclass(frozen=True)
class Step(Record):
    """One journal step of a deployment."""

    TABLE = "steps"

    id: int
    deployment_id: int
    name: str
    started_at: Timestamp
    finished_at: Timestamp | None
    seconds: float | None
    outcome: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        """The step as ``history --json`` shows it."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Event(Record):
    """One audit-trail entry."""

    TABLE = "events"

    id: int
    ts: Timestamp
    actor: str
    host: str
    command: str
    env: str | None
    outcome: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        """The event as ``history --audit --json`` shows it."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Backup(Record):
    """A recorded backup file."""

    TABLE = "backups"

    id: int
    env: str
    path: Path
    checksum: str
    size: int
    format: str
    engine: str
    created_at: Timestamp
    deployment_id: int | None


#: The largest pid a Linux kernel hands out (``pid_max`` ceiling); larger is a damaged record.
PID_MAX = 2**22


@dataclass(frozen=True)
class Lock(Record):
    """The lease lock of one environment.

    A damaged lock record is not an error: it vouches for no live holder, so it reads as a lock
    whose ``damaged`` says why, and is taken over like a stale one (a lock must never be held forever).
    """

    TABLE = "locks"
    KEY = "env"

    env: str
    owner: str
    pid: int
    host: str
    command: str
    started_at: Timestamp
    heartbeat_at: Timestamp
    lease_seconds: float
    damaged: str | None = field(default=None, metadata=DERIVED)

    @classmethod
    def read(cls, row: StoredRow) -> Lock:
        """From a ``locks`` row; a bad value gives a lock marked damaged."""
        try:
            lock = cls.decode(row)
            if not 0 < lock.pid <= PID_MAX:
                raise damaged(cls.TABLE, row, cls.KEY, "pid", "is not a process id")
            return lock
        except StateDamaged as exc:
            return cls(env=str(row["env"]), owner=str(row["owner"]), pid=0, host=str(row["host"]),
                       command=str(row["command"]), started_at=Timestamp(str(row["started_at"])),
                       heartbeat_at=Timestamp(str(row["heartbeat_at"])), lease_seconds=0.0, damaged=exc.message)

    def describe(self) -> str:
        """Who holds it, for messages."""
        pid = self.pid if not self.damaged else "?"
        return f"{self.owner}@{self.host} (pid {pid}, '{self.command}') since {self.started_at}"


@dataclass(frozen=True)
class EnvState(Record):
    """What runs in one environment."""

    TABLE = "env_state"
    KEY = "env"

    env: str
    current_release: str | None
    previous_release: str | None
    #: The runtime's own record of where the current release runs (opaque here), None when nothing
    #: runs. A damaged placement reads as None: the runtime's routing is the truth, and the next
    #: deploy or rollback repairs the record.
    placement: dict[str, Any] | None = field(metadata=DERIVED)
    deployed_at: Timestamp | None
    downtime: bool

    @classmethod
    def read(cls, row: StoredRow) -> EnvState:
        """From an ``env_state`` row."""
        try:
            placement: dict[str, Any] | None = _json_object(row["placement"]) if row["placement"] else None
        except (TypeError, ValueError):
            placement = None
        return cls.decode(row, placement=placement)
