"""A state store holding what one deploy writes, for tests that read records back (or damage them)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from stageflow.state.store import Store

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def record_one_deploy(store: Store, release_dir: Path) -> int:
    """Write one succeeded deploy of ``dev`` as the pipeline does: release, deployment, a step, an audit
    event, a backup and what serves. Returns the deployment id."""
    store.add_release("r1", "a" * 40, False, "first", release_dir, None)
    dep = store.start_deployment("dev", "deploy", "alice", 4242, None)
    store.set_deployment_release(dep, "r1")
    store.finish_step(store.start_step(dep, "build"), "ok", "built", 1.25)
    store.add_backup("dev", release_dir / "dev.sql", "c0ffee", 1, "plain", "postgres", dep)
    store.finish_deployment(dep, "succeeded")
    store.add_event("alice", "host1", "stageflow deploy dev", "dev", "succeeded", "r1")
    store.set_env_state("dev", "r1", None, None, False)
    return dep


def restore_state_v1(path: Path) -> Path:
    """A state.db written by the release before runtime placements (see tests/fixtures/make_state_v1.py)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as con:
        con.executescript((FIXTURES / "state_v1.sql").read_text())
    return path
