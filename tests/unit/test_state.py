"""State store and lease lock on a real SQLite file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stageflow.deploy.lock import EnvLock, read_lock, stale_reason
from stageflow.errors import LockHeldError
from stageflow.state.store import MIGRATIONS, Store


def test_schema_versioned_and_wal(tmp_path: Path) -> None:
    s = Store(tmp_path / "state.db")
    assert s.schema_version == len(MIGRATIONS)
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()
    s2 = Store(tmp_path / "state.db")  # reopening migrates nothing and loses nothing
    assert s2.schema_version == len(MIGRATIONS)


def test_journal_and_masking(tmp_path: Path) -> None:
    from stageflow.masking import masker

    masker.add("topsecret-journal-value")
    s = Store(tmp_path / "state.db")
    dep = s.start_deployment("dev", "deploy", "me", 1, None)
    step = s.start_step(dep, "preflight")
    s.finish_step(step, "ok", "used topsecret-journal-value", 0.5)
    s.finish_deployment(dep, "failed", "boom topsecret-journal-value")
    assert "topsecret" not in s.steps(dep)[0]["detail"]
    assert "topsecret" not in s.deployments("dev")[0]["error"]


def test_live_lock_refuses_dead_lock_is_taken_over(tmp_path: Path) -> None:
    s = Store(tmp_path / "state.db")
    warnings: list[str] = []
    held = r"locked by alice@.*'stageflow deploy staging'\) since"
    with EnvLock(s, "staging", "alice", "stageflow deploy staging"), pytest.raises(LockHeldError, match=held):
        EnvLock(Store(tmp_path / "state.db"), "staging", "bob", "x").acquire()
    assert read_lock(s, "staging") is None
    # a holder whose process is gone
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    s.db.execute("INSERT INTO locks VALUES ('staging','ghost',?, ?, 'cmd', '2026-01-01T00:00:00+00:00',"
                 " '2099-01-01T00:00:00+00:00', 120)", (dead.pid, __import__("socket").gethostname()))
    info = read_lock(s, "staging")
    assert info is not None and "gone" in (stale_reason(info) or "")
    lock = EnvLock(s, "staging", "bob", "deploy", warn=warnings.append)
    lock.acquire()
    assert lock.took_over is not None and "stale lock" in warnings[0]
    lock.release()


def test_expired_lease_is_stale(tmp_path: Path) -> None:
    s = Store(tmp_path / "state.db")
    s.db.execute("INSERT INTO locks VALUES ('dev','x', 1, 'other-host', 'cmd', '2026-01-01T00:00:00+00:00',"
                 " '2026-01-01T00:00:00+00:00', 60)")
    info = read_lock(s, "dev")
    assert info is not None and "lease expired" in (stale_reason(info) or "")


def test_schema_2_upgrades_a_state_db_written_by_schema_1(tmp_path: Path) -> None:
    """A state.db as the release before runtime placements wrote it: color and port columns."""
    import sqlite3

    path = tmp_path / "state.db"
    old = sqlite3.connect(path, isolation_level=None)
    for statement in filter(str.strip, MIGRATIONS[0].split(";")):
        old.execute(statement)
    old.execute("PRAGMA user_version = 1")
    # Exactly the writes of schema 1's Store.add_release and Store.set_env_state.
    old.execute("INSERT OR REPLACE INTO releases VALUES (?,?,?,?,?,?,?)",
                ("r1", "a" * 40, 0, "first", "2026-01-01T00:00:00+00:00", str(tmp_path / "r1"), "h"))
    old.execute("INSERT OR REPLACE INTO env_state VALUES (?,?,?,?,?,?,?)",
                ("dev", "r1", None, "green", 28001, "2026-01-01T00:00:00+00:00", 0))
    old.execute("INSERT OR REPLACE INTO env_state VALUES (?,?,?,?,?,?,?)",
                ("staging", None, "r1", None, None, "2026-01-01T00:00:00+00:00", 1))
    old.close()
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS) >= 2
    dev = store.env_state("dev")
    assert dev.current_release == "r1" and dev.placement == {"slot": "green", "port": 28001}
    staging = store.env_state("staging")
    assert staging.placement is None and staging.previous_release == "r1" and staging.downtime
    assert store.release_artifacts("r1") == {}
    store.set_release_artifacts("r1", {"images": {"backend": "sha256:x"}})
    assert store.release_artifacts("r1") == {"images": {"backend": "sha256:x"}}
    store.close()


def test_damaged_placement_reads_as_none(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.set_env_state("dev", "r1", None, {"slot": "blue", "port": 1}, False)
    store.db.execute("UPDATE env_state SET placement='{not json' WHERE env='dev'")
    assert store.env_state("dev").placement is None
    store.close()
