"""The lock held on the target host too: the rules in deploy/lock.py against an in-memory record.

The real record (a container on a Docker Engine) is exercised by tests/e2e/test_compose_remote.py;
here every branch of taking, refusing, taking over and releasing, in milliseconds.
"""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stageflow.deploy.lock import EnvLock, LockInfo, force_release, read_lock
from stageflow.errors import LockHeldError, OperationError
from stageflow.state.store import Store


class MemoryHostLock:
    """A record with create-if-absent semantics, like a container with a fixed name."""

    where = "the Docker Engine at ssh://deploy@engine"

    def __init__(self) -> None:
        self.record: tuple[LockInfo, str] | None = None
        self.serial = 0
        self.beats: list[str] = []
        self.fail_create = False

    def create(self, info: LockInfo) -> str | None:
        if self.fail_create:
            raise OperationError("the engine does not answer")
        if self.record is not None:
            return None
        self.serial += 1
        self.record = (info, f"id{self.serial}")
        return self.record[1]

    def read(self) -> tuple[LockInfo, str] | None:
        return self.record

    def beat(self, token: str, at: str) -> None:
        if self.record and self.record[1] == token:
            self.record = (replace(self.record[0], heartbeat_at=at), token)
            self.beats.append(at)

    def remove(self, token: str | None) -> None:
        if self.record is not None and (token is None or self.record[1] == token):
            self.record = None


def _holder(*, host: str = "other-machine", pid: int = 4242, age: float = 0.0, lease: float = 120.0) -> LockInfo:
    at = (datetime.now(UTC) - timedelta(seconds=age)).isoformat(timespec="seconds")
    return LockInfo("staging", "bob", pid, host, "stageflow deploy staging", at, at, lease)


def _dead_pid() -> int:
    pid = 999_999
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state.db")


def test_taken_after_the_local_lock_and_released_with_it(store: Store) -> None:
    target = MemoryHostLock()
    with EnvLock(store, "staging", "alice", "stageflow deploy staging", host_lock=target):
        assert target.record is not None
        info, _ = target.record
        assert (info.owner, info.pid, info.host) == ("alice", os.getpid(), socket.gethostname())
        assert read_lock(store, "staging") is not None
    assert target.record is None and read_lock(store, "staging") is None


def test_a_live_holder_elsewhere_refuses_with_its_name_and_leaves_no_local_lock(store: Store) -> None:
    target = MemoryHostLock()
    target.record = (_holder(), "theirs")
    lock = EnvLock(store, "staging", "alice", "stageflow deploy staging", host_lock=target)
    with pytest.raises(LockHeldError, match=r"locked on the Docker Engine at ssh://deploy@engine by "
                                            r"bob@other-machine \(pid 4242"):
        lock.acquire()
    assert target.record is not None and target.record[1] == "theirs"  # untouched
    assert read_lock(store, "staging") is None  # this checkout's lock went back


def test_a_crashed_holder_on_this_machine_is_taken_over(store: Store) -> None:
    target = MemoryHostLock()
    target.record = (_holder(host=socket.gethostname(), pid=_dead_pid()), "stale")
    warned: list[str] = []
    with EnvLock(store, "staging", "alice", "x", host_lock=target, warn=warned.append) as lock:
        assert lock.took_over_host is not None and lock.took_over_host.owner == "bob"
        assert target.record is not None and target.record[0].owner == "alice"
    assert any("stale lock" in w and "is gone" in w for w in warned), warned


def test_a_holder_elsewhere_whose_lease_expired_is_taken_over(store: Store) -> None:
    target = MemoryHostLock()
    target.record = (_holder(age=600, lease=120), "stale")
    warned: list[str] = []
    with EnvLock(store, "staging", "alice", "x", host_lock=target, warn=warned.append):
        assert target.record is not None and target.record[0].owner == "alice"
    assert any("lease expired" in w for w in warned), warned


def test_a_damaged_record_is_stale_not_a_crash(store: Store) -> None:
    target = MemoryHostLock()
    target.record = (replace(_holder(), damaged="pid is not a process id"), "junk")
    with EnvLock(store, "staging", "alice", "x", host_lock=target):
        assert target.record is not None and target.record[0].owner == "alice"


def test_release_removes_only_its_own_record(store: Store) -> None:
    target = MemoryHostLock()
    lock = EnvLock(store, "staging", "alice", "x", host_lock=target)
    lock.acquire()
    # Someone broke the lock (`stageflow lock release`) and another deploy took it meanwhile.
    target.record = (_holder(), "newer")
    lock.release()
    assert target.record is not None and target.record[1] == "newer"


def test_an_unreachable_target_fails_and_leaves_no_local_lock(store: Store) -> None:
    target = MemoryHostLock()
    target.fail_create = True
    with pytest.raises(OperationError, match="does not answer"):
        EnvLock(store, "staging", "alice", "x", host_lock=target).acquire()
    assert read_lock(store, "staging") is None


def test_heartbeats_reach_the_target(store: Store) -> None:
    target = MemoryHostLock()
    lock = EnvLock(store, "staging", "alice", "x", lease=4.0, host_lock=target)  # a beat every second
    lock.acquire()
    try:
        lock._stop.wait(1.5)
    finally:
        lock.release()
    assert target.beats, "no heartbeat reached the host lock"


def test_force_release_removes_the_record_on_the_target_too(store: Store) -> None:
    target = MemoryHostLock()
    target.record = (_holder(), "theirs")
    info = force_release(store, "staging", target)
    assert target.record is None and info is not None and info.owner == "bob"
