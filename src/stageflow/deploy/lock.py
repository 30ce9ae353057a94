"""Per-environment lease lock kept in the state database, and on the target host when the runtime has one.

A lock records owner, pid, host, start and heartbeat. A holder that is dead (same host, pid gone)
or whose lease expired without a heartbeat is taken over with a warning; a live holder makes the
second deploy fail with who holds it and since when.

The state database is this checkout's own: two operators on two machines (or two clones of the
app) have two. A runtime whose target is shared (an engine both deploy to) also offers a
:class:`HostLock`, an atomic object on that target with the same record; it is taken after the
local lock, beaten with it, released on every exit path, and judged stale by the same rules.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from stageflow.errors import LockHeldError
from stageflow.procs import running
from stageflow.state.records import Timestamp
from stageflow.state.store import Deployment, Lock, Store

#: The lock record (a frozen record of the store; ``damaged`` says why a stored one made no sense).
LockInfo = Lock


class HostLock(Protocol):
    """A lock record kept on the runtime's target host (the runtime says how); the rules stay here."""

    #: For messages: where the record is (the runtime's words, e.g. its engine's address).
    where: str

    def create(self, info: LockInfo) -> str | None:
        """Create the record atomically and return its token; None when one exists already."""
        ...

    def read(self) -> tuple[LockInfo, str] | None:
        """The record and a token naming that very record (for :meth:`remove`), or None."""
        ...

    def beat(self, token: str, at: str) -> None:
        """Record a heartbeat at ``at`` (ISO time) on the record ``token`` names."""
        ...

    def remove(self, token: str | None) -> None:
        """Remove the record ``token`` names (None: whichever there is); never fails when it is gone."""
        ...


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _age(ts: str) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(ts)).total_seconds()


def read_lock(store: Store, env: str) -> LockInfo | None:
    """The current lock of ``env`` or None."""
    return store.lock(env)


def stale_reason(info: LockInfo, host: str | None = None) -> str | None:
    """Why ``info`` may be taken over, or None when its holder is alive."""
    host = host or socket.gethostname()
    # Read back from state.db, which may be damaged: a record that makes no sense vouches for
    # no live holder, so it is stale (and says why) rather than a crash or a lock held forever.
    if info.damaged:
        return "the lock record is damaged"
    try:
        age = _age(info.heartbeat_at)
    except TypeError:  # a naive time where an aware one is expected: not written by stageflow
        return "the lock record is damaged"
    lease = info.lease_seconds
    if info.host == host and not running(info.pid):
        return f"holder pid {info.pid} is gone"
    if age > lease:
        return f"lease expired ({age:.0f}s since the last heartbeat)"
    return None


class EnvLock:
    """Context manager holding the lock of one environment, with a heartbeat thread."""

    def __init__(
        self, store: Store, env: str, owner: str, command: str, *, lease: float = 120.0,
        warn: Callable[[str], None] | None = None, host_lock: HostLock | None = None,
    ) -> None:
        self.store, self.env, self.owner, self.command = store, env, owner, command
        self.lease = lease
        self.warn = warn or (lambda _m: None)
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.took_over: LockInfo | None = None
        self.took_over_reason = ""
        self.host_lock = host_lock
        self._host_token: str | None = None
        #: A stale record on the target host that this lock replaced, and why.
        self.took_over_host: LockInfo | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`LockHeldError`."""
        with self.store.tx():
            current = read_lock(self.store, self.env)
            if current is not None:
                reason = stale_reason(current, self.host)
                if reason is None:
                    raise LockHeldError(
                        f"environment {self.env} is locked by {current.describe()}",
                        hint=f"wait for it to finish, or if it is gone: stageflow lock release {self.env}",
                    )
                self.took_over, self.took_over_reason = current, reason
                self.warn(f"taking over a stale lock of {self.env}: {reason} (was {current.describe()})")
            self.store.put_lock(self.env, self.owner, self.pid, self.host, self.command, self.lease)
        if self.host_lock is not None:
            try:
                self._acquire_host(self.host_lock)
            except BaseException:
                self.store.drop_lock(self.env, self.pid, self.host)
                raise
        self._thread = threading.Thread(target=self._beat, name=f"lock-{self.env}", daemon=True)
        self._thread.start()

    def _acquire_host(self, target: HostLock) -> None:
        """Create the record on the target host; a live one refuses, a stale one is replaced (once)."""
        now = Timestamp(_now())
        mine = LockInfo(self.env, self.owner, self.pid, self.host, self.command, now, now, self.lease)
        for _ in range(3):
            self._host_token = target.create(mine)
            if self._host_token is not None:
                return
            found = target.read()
            if found is None:
                continue  # released meanwhile: try again
            current, token = found
            reason = stale_reason(current, self.host)
            if reason is None:
                raise LockHeldError(
                    f"environment {self.env} is locked on {target.where} by {current.describe()}",
                    hint=f"wait for it to finish, or if it is gone: stageflow lock release {self.env}",
                )
            self.warn(f"taking over a stale lock of {self.env} on {target.where}: {reason} (was {current.describe()})")
            self.took_over_host = current
            # By token: a second deployer that judged the same record stale removes nothing of ours.
            target.remove(token)
        raise LockHeldError(f"environment {self.env}: could not take the lock on {target.where} (it keeps changing)",
                            hint="retry in a moment")

    def _beat(self) -> None:
        while not self._stop.wait(max(1.0, self.lease / 4)):
            try:
                self.store.beat_lock(self.env, self.pid, self.host)
                if self.host_lock is not None and self._host_token:
                    self.host_lock.beat(self._host_token, _now())
            except Exception:  # noqa: S112 - a missed beat only shortens the lease
                continue

    def release(self) -> None:
        """Drop the lock if we still hold it."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        try:
            if self.host_lock is not None and self._host_token:
                self.host_lock.remove(self._host_token)
                self._host_token = None
        finally:
            self.store.drop_lock(self.env, self.pid, self.host)

    def __enter__(self) -> EnvLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def force_release(store: Store, env: str, host_lock: HostLock | None = None) -> LockInfo | None:
    """Remove the lock of ``env`` whoever holds it (on the target host too); return what was removed."""
    with store.tx():
        info = read_lock(store, env)
        store.drop_lock(env)
    if host_lock is not None:
        found = host_lock.read()
        if found is not None:
            host_lock.remove(found[1])
            info = info or found[0]
    return info


def deployment_outcome(store: Store, dep: Deployment) -> tuple[str, str | None]:
    """(outcome, error) of a deployment row as it really is.

    A deploy killed with ``kill -9`` stays ``running`` in the record until the next command of its
    environment marks it; a running deployment whose process no longer holds the lock is shown as
    ``crashed`` meanwhile, without writing (read-only commands change nothing).
    """
    if dep.outcome != "running":
        return dep.outcome, dep.error
    info = read_lock(store, dep.env)
    if info is not None and info.pid == dep.pid:
        why = stale_reason(info)
        if why is None:
            return "running", None
        return "crashed", f"deploy process {dep.pid} is gone ({why}); the next deploy of {dep.env} takes over"
    return "crashed", f"deploy process {dep.pid} is gone (it holds no lock)"
