"""State store and lease lock on a real SQLite file."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from stageflow.deploy.lock import EnvLock, read_lock, stale_reason
from stageflow.errors import LockHeldError
from stageflow.state.store import MIGRATIONS, StateDamaged, Store
from tests.support.state import record_one_deploy, restore_state_v1


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
    assert "topsecret" not in s.steps(dep)[0].detail
    assert "topsecret" not in (s.deployments("dev")[0].error or "")


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


def _plant(path: Path, sql: str) -> None:
    """Damage state.db from outside, as a disk fault or a hand edit would."""
    import sqlite3

    with sqlite3.connect(path) as con:
        con.execute(sql)


@pytest.mark.parametrize(("sql", "read", "needle"), [
    ("UPDATE deployments SET started_at='yesterday'", lambda s: s.deployments("dev"),
     "deployments row id=1: started_at is not an ISO-8601 time (found 'yesterday')"),
    ("UPDATE deployments SET pid='many'", lambda s: s.deployments(), "deployments row id=1: pid is not an integer"),
    ("UPDATE deployments SET downtime=7", lambda s: s.deployment(1), "deployments row id=1: downtime is not 0 or 1"),
    ("UPDATE steps SET seconds='fast'", lambda s: s.steps(1), "steps row id=1: seconds is not a number"),
    ("UPDATE events SET ts=17", lambda s: s.events(), "events row id=1: ts is not an ISO-8601 time (found '17')"),
    ("UPDATE releases SET artifacts='{not json'", lambda s: s.release("r1"),
     "releases row id='r1': artifacts is not a JSON object"),
    ("UPDATE releases SET artifacts='[1]'", lambda s: s.release_artifacts("r1"), "artifacts is not a JSON object"),
    ("UPDATE releases SET path=x'2f'", lambda s: s.releases(), "releases row id='r1': path is not text (found b'/')"),
    ("UPDATE backups SET size='big'", lambda s: s.backups("dev"), "backups row id=1: size is not an integer"),
    ("UPDATE deployments SET kind=x'00ff'", lambda s: s.rolled_back_from("dev"), "kind is not text (found b'"),
])
def test_a_damaged_row_is_state_damaged_naming_row_and_fix(
        tmp_path: Path, sql: str, read: Callable[[Store], object], needle: str) -> None:
    path = tmp_path / "state.db"
    s = Store(path)
    record_one_deploy(s, tmp_path)
    read(s)  # healthy rows decode
    _plant(path, sql)
    with pytest.raises(StateDamaged) as caught:
        read(s)
    text = str(caught.value)
    assert needle in text and "state.db is damaged" in text and "\n" not in text
    assert "move .stageflow/state.db aside" in text  # the fix


def test_records_are_typed_and_frozen(tmp_path: Path) -> None:
    s = Store(tmp_path / "state.db")
    s.add_release("r1", "a" * 40, True, "m", tmp_path, "h")
    dep = s.start_deployment("dev", "deploy", "me", 42, None)
    s.finish_deployment(dep, "succeeded", downtime=True)
    release, deployment = s.release("r1"), s.deployments()[0]
    assert release is not None and release.path == tmp_path and release.dirty is True and release.artifacts == {}
    assert deployment.id == dep and deployment.pid == 42 and deployment.downtime is True
    assert deployment.to_json()["downtime"] == 1  # history --json has always shown 0/1
    with pytest.raises(FrozenInstanceError):
        deployment.outcome = "failed"  # type: ignore[misc]


def test_a_state_db_from_a_newer_stageflow_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "state.db"
    Store(path).close()
    with sqlite3.connect(path) as con:
        con.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StateDamaged, match=r"written by a newer stageflow \(state schema \d+; this stageflow knows "
                                           r"up to \d+\) \(upgrade stageflow"):
        Store(path)
    with sqlite3.connect(path) as con:  # nothing was changed: the newer stageflow still finds its version
        assert con.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1


def test_a_monitor_schema_from_a_newer_stageflow_is_refused(tmp_path: Path) -> None:
    from stageflow.state.monitoring import SCHEMA, MonitorState

    s = Store(tmp_path / "state.db")
    MonitorState(s)
    s.db.execute("UPDATE monitor_meta SET value=? WHERE key='schema_version'", (str(len(SCHEMA) + 1),))
    with pytest.raises(StateDamaged, match=r"monitor schema .*upgrade stageflow"):
        MonitorState(s)


def test_damaged_monitor_rows_are_state_damaged(tmp_path: Path) -> None:
    from stageflow.state.monitoring import MonitorState, Transition

    path = tmp_path / "state.db"
    st = MonitorState(Store(path))
    st.add_transition(Transition(1.0, "dev/http/public", "dev", "http", "public", "firing", "critical"))
    st.enqueue("slack", "dev", "alert", "k1", {"text": "x"}, 1.0)
    st.record_attempt([1], "slack", "ok", 200, "", 2.0)
    assert [h.transition for h in st.history(0)] == ["firing"] and st.attempts()[0].outbox_ids == (1,)
    for sql, read, needle in [
        ("UPDATE alert_history SET value='high'", lambda: st.history(0), "alert_history row id=1: value is not"),
        ("UPDATE send_attempts SET outbox_ids='1,x'", st.attempts, "send_attempts row id=1: outbox_ids is not"),
        ("UPDATE outbox SET attempts=1.5", st.outbox, "outbox row id=1: attempts is not an integer"),
    ]:
        _plant(path, sql)
        with pytest.raises(StateDamaged, match=needle):
            read()


def test_a_damaged_monitor_leader_row_is_taken_over(tmp_path: Path) -> None:
    from stageflow.monitor.service import Leader
    from stageflow.state.monitoring import MonitorState

    store = Store(tmp_path / "state.db")
    st = MonitorState(store)
    st.set_leader("elsewhere", 1, None, 9e18)
    store.db.execute("UPDATE monitor_leader SET heartbeat='now'")
    with pytest.raises(StateDamaged, match="monitor_leader row id=1: heartbeat is not a number"):
        st.leader()

    class _Monitor:  # the one attribute Leader reads besides its state
        state, interval = st, 30.0

    Leader(_Monitor()).take()  # type: ignore[arg-type]
    leader = st.leader()
    assert leader is not None and leader.pid == __import__("os").getpid()


def test_a_state_db_written_by_the_previous_release_is_upgraded_and_reads_back(tmp_path: Path) -> None:
    from stageflow.state.monitoring import SCHEMA, MonitorState

    path = restore_state_v1(tmp_path / "state.db")
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS)
    prod = store.env_state("production")
    assert prod.current_release == "20261130T100000-aaaaaaa" and prod.previous_release == "20261130T110000-bbbbbbb"
    assert prod.placement == {"slot": "blue", "port": 28001} and not prod.downtime
    staging = store.env_state("staging")
    assert staging.placement is None and staging.current_release is None and staging.downtime
    first, second = sorted(store.releases(), key=lambda r: r.id)
    assert first.requirements_hash == "h1" and not first.dirty and first.artifacts == {}
    assert second.dirty and second.requirements_hash is None and second.path.name == second.id
    deps = store.deployments("production")
    assert [(d.kind, d.outcome) for d in deps] == [("deploy", "failed"), ("rollback", "succeeded"),
                                                  ("deploy", "succeeded"), ("deploy", "succeeded")]
    assert deps[0].error == "health check failed" and deps[0].pid == 4242 and deps[0].finished_at
    assert [(s.name, s.seconds) for s in store.steps(deps[0].id)] == [("preflight", 0.25), ("build", 12.5),
                                                                      ("health", 3.0)]
    assert store.rolled_back_from("production") == {"20261130T110000-bbbbbbb"}
    assert [e.command.split()[1] for e in store.events()] == ["deploy", "rollback", "deploy", "deploy"]
    (backup,) = store.backups("production")
    assert backup.size == 2048 and backup.deployment_id == 2 and backup.path.suffix == ".dump"
    lock = store.lock("staging")
    assert lock is not None and lock.damaged is None and lock.owner == "bob" and lock.lease_seconds == 120.0
    monitor = MonitorState(store)
    assert monitor.schema_version == len(SCHEMA)
    (alert,) = monitor.alerts()
    assert alert.state == "firing" and alert.value == 503.0
    assert [h.transition for h in monitor.history(0)] == ["firing"]
    assert [(o.status, o.attempts) for o in monitor.outbox()] == [("pending", 0)]
    assert [a.outbox_ids for a in monitor.attempts()] == [(1,)]
    assert monitor.log_cursor("/srv/app/logs/access.log") == (1234, 5678, ["OperationalError"], None)
    store.close()


def test_a_table_missing_a_column_is_state_damaged(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    s = Store(path)
    record_one_deploy(s, tmp_path)
    _plant(path, "ALTER TABLE events DROP COLUMN detail")
    with pytest.raises(StateDamaged, match=r"state\.db is damaged: table events has no column detail"):
        s.events()
