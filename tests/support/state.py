"""A state store holding what one deploy writes, for tests that read records back (or damage them)."""

from __future__ import annotations

from pathlib import Path

from stageflow.state.store import Store


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
