"""The deploy pipeline driven through an in-memory runtime: plan, step order, undo, recovery.

No processes and no network: :class:`FakeRuntime` implements the Runtime protocol on dicts, so each
branch of the pipeline (failure before cutover, failure after cutover, crash recovery) runs in
milliseconds. The same pipeline drives the local and compose runtimes in tests/e2e.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from stageflow.config.loader import load_env_context
from stageflow.config.models import Environment
from stageflow.deploy.health import Probe, Prober
from stageflow.deploy.pipeline import DeployOptions, StepFailed, deploy_env, placement_of
from stageflow.deploy.preflight import Check
from stageflow.errors import OperationError
from stageflow.monitor.resources import ServiceStats
from stageflow.runtimes import RUNTIMES
from stageflow.runtimes.base import Placement, Runtime, RuntimeStatus
from stageflow.runtimes.compose import ComposeRuntime
from stageflow.runtimes.local import LocalRuntime
from stageflow.workspace import Workspace

SKIP = ("config", "database", "disk")  # file-system and server checks, covered by their own tests


class FakeRuntime:
    """Blue/green slots in dicts; ``fail`` names the step that breaks (``migrate``, ``start``, ``watch``…)."""

    name: ClassVar[str] = "fake"

    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.running: dict[str, str] = {}  # slot → release
        self.proxy: str | None = None      # slot the proxy routes to
        self.events: list[str] = []

    zero_downtime = True

    def next_placement(self, current: Placement | None) -> Placement:
        return Placement("b" if current and current.slot == "a" else "a")

    def serving(self) -> tuple[Placement, str] | None:
        if self.proxy in self.running:
            assert self.proxy is not None
            return Placement(self.proxy), self.running[self.proxy]
        return None

    def routed(self, upstream: str | None) -> tuple[Placement, str] | None:
        return self.serving()

    def alive(self, placement: Placement) -> bool:
        return placement.slot in self.running

    def describe(self, action: str, placement: Placement | None) -> str:
        return "the proxy" if action == "proxy" else f"<{action} {placement.slot if placement else '-'}>"

    def preflight(self, new: Placement, active: Placement | None) -> Check:
        return Check("runtime", "pass", "fake")

    def sweep_orphans(self, keep: Placement | None) -> list[str]:
        stray = [s for s in self.running if keep is None or s != keep.slot]
        for slot in stray:
            del self.running[slot]
        self.events += [f"sweep {s}" for s in stray]
        return stray

    def settle_release_command(self, wait: float) -> str | None:
        return None

    def repair_routing(self, placement: Placement) -> str | None:
        if self.proxy != placement.slot:
            self.proxy = placement.slot
            return f"proxy on {placement.slot} again"
        return None

    def _maybe_fail(self, step: str) -> None:
        self.events.append(step)
        if self.fail == step:
            raise OperationError(f"{step} broke")

    def prepare(self, release: str, release_dir: Path) -> str:
        self._maybe_fail(f"prepare {release}")
        return "prepared"

    def release_command(self, release: str, release_dir: Path, timeout: float) -> str | None:
        self._maybe_fail("migrate")
        return "migrate"

    def start(self, release: str, release_dir: Path, placement: Placement) -> str:
        self.running[placement.slot] = release
        self._maybe_fail(f"start {placement.slot}")
        return f"{release} on {placement.slot}"

    def settle(self, placement: Placement) -> Placement:
        return Placement(placement.slot, {"fake": True})

    def probe_url(self, placement: Placement) -> str:
        return f"fake://{placement.slot}"

    def exited(self, placement: Placement) -> str | None:
        return "the web process exited" if self.fail == "health" else None

    def cut_over(self, placement: Placement) -> str:
        self._maybe_fail(f"cutover {placement.slot}")
        self.proxy = placement.slot
        return f"proxy → {placement.slot}"

    def public_probe(self) -> tuple[str, Prober]:
        def probe(url: str, expect: int, timeout: float) -> Probe:
            slot = self.proxy if url == "fake://proxy" else url.removeprefix("fake://")
            if slot not in self.running:
                return Probe(False, "refused", 0.0)
            broken = self.fail == "health" or (self.fail == "watch" and url == "fake://proxy"
                                                and self.running[slot] == "r2")
            return Probe(not broken, "HTTP 503" if broken else "HTTP 200", 0.0)
        return "fake://proxy", probe

    def stop(self, placement: Placement, drain: float) -> int:
        self.events.append(f"stop {placement.slot}")
        return 1 if self.running.pop(placement.slot, None) else 0

    def status(self, placement: Placement | None) -> RuntimeStatus:
        return RuntimeStatus(len(self.running), releases=tuple(sorted(set(self.running.values()))))

    def service_stats(self, window: float = 0.5) -> list[ServiceStats]:
        return [ServiceStats(slot, 1, 0.0, 0, 0.0) for slot in self.running]

    def exec_command(self, placement: Placement, release: str, release_dir: Path, service: str,
                     argv: Sequence[str]) -> tuple[list[str], dict[str, str] | None, Path | None]:
        return list(argv), {}, release_dir

    def logs_command(self, placement: Placement, service: str | None, follow: bool, since: str | None,
                     lines: int) -> list[str]:
        return ["true"]

    def down(self) -> int:
        n = len(self.running)
        self.running.clear()
        self.proxy = None
        return n

    def host_lock(self) -> None:
        return None

    def prune(self, keep: Collection[str]) -> list[str]:
        return []


def _typed(rt: FakeRuntime) -> Runtime:
    return rt  # mypy checks here that the fake implements the whole protocol


def _implemented(local: LocalRuntime, compose: ComposeRuntime) -> tuple[Runtime, Runtime]:
    return local, compose  # ...and that both real runtimes do


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "app"
    root.mkdir()
    (root / "stageflow.yml").write_text(yaml.safe_dump({
        "project": "tiny",
        "services": {"web": {"command": "serve {port}", "port": 8000, "release": "migrate",
                             "health": {"path": "/health/", "deadline": "2s", "interval": "0.01s"}}},
        "database": {"engine": "none"},
        "environments": {"dev": {"url": "http://127.0.0.1:8001", "watch": 0, "drain": 0,
                                 "require_clean_git": False}},
    }))
    (root / ".env.dev").write_text("SECRET_KEY=unit-test-secret-value-0123456789\n")
    w = Workspace(root)
    for rid in ("r1", "r2", "r3"):
        d = root / ".stageflow" / "releases" / rid
        d.mkdir(parents=True)
        w.store.add_release(rid, "0" * 40, False, rid, d, None)
    return w


def _deploy(ws: Workspace, rt: FakeRuntime, release: str, kind: str = "deploy") -> Any:
    ctx = load_env_context(ws.root, "dev", {})
    return deploy_env(ws, ctx, DeployOptions(skip_checks=SKIP, kind=kind), release=release, rt=_typed(rt))


def _steps(ws: Workspace) -> list[tuple[str, str]]:
    dep = ws.store.deployments("dev", limit=1)[0]
    return [(s.name, s.outcome) for s in ws.store.steps(dep.id)]


def test_every_accepted_runtime_value_is_registered() -> None:
    from typing import get_args, get_type_hints

    accepted = set(get_args(get_type_hints(Environment)["runtime"]))
    assert accepted == set(RUNTIMES)
    for name, cls in RUNTIMES.items():
        assert cls.name == name


def test_dry_run_prints_the_plan_apply_runs(ws: Workspace) -> None:
    rt = FakeRuntime()
    ctx = load_env_context(ws.root, "dev", {})
    report = deploy_env(ws, ctx, DeployOptions(dry_run=True, skip_checks=SKIP), release="r1", rt=_typed(rt))
    planned = [s.name for s in report.plan]
    assert rt.events == [] and ws.store.deployments("dev") == []
    _deploy(ws, rt, "r1")
    assert [name for name, _ in _steps(ws)] == planned
    assert planned == ["preflight", "backup", "release", "migrate", "start", "health", "cutover", "watch",
                       "stop-old", "record"]
    assert str(report.plan[4]).startswith("start ") and "<start a>" in str(report.plan[4])


def test_deploys_alternate_slots_and_record_placement(ws: Workspace) -> None:
    rt = FakeRuntime()
    _deploy(ws, rt, "r1")
    _deploy(ws, rt, "r2")
    st = ws.store.env_state("dev")
    assert (st.current_release, st.previous_release) == ("r2", "r1")
    assert placement_of(st.placement) == Placement("b", {"fake": True})
    assert rt.running == {"b": "r2"} and rt.proxy == "b"
    assert rt.events.index("cutover b") < rt.events.index("stop a")  # traffic moves before the old stops


def test_failure_before_cutover_keeps_the_old_release_serving(ws: Workspace) -> None:
    rt = FakeRuntime()
    _deploy(ws, rt, "r1")
    rt.fail = "health"
    with pytest.raises(StepFailed, match="health gate failed for r2"):
        _deploy(ws, rt, "r2")
    assert rt.running == {"a": "r1"} and rt.proxy == "a"
    steps = _steps(ws)
    assert ("health", "failed") in steps and steps[-1] == ("rollback", "ok")
    assert "cutover" not in [n for n, _ in steps]
    st = ws.store.env_state("dev")
    assert st.current_release == "r1"
    assert ws.store.deployments("dev", limit=1)[0].outcome == "failed"


def test_failing_migration_starts_nothing(ws: Workspace) -> None:
    rt = FakeRuntime()
    _deploy(ws, rt, "r1")
    rt.fail = "migrate"
    with pytest.raises(OperationError, match="migrate broke"):
        _deploy(ws, rt, "r2")
    assert not any(e.startswith("start b") for e in rt.events)
    assert rt.running == {"a": "r1"}


def test_failure_after_cutover_routes_back_and_stops_the_new(ws: Workspace) -> None:
    rt = FakeRuntime()
    _deploy(ws, rt, "r1")
    rt.fail = "watch"
    with pytest.raises(StepFailed, match="watch period"):
        _deploy(ws, rt, "r2")
    names = [n for n, _ in _steps(ws)]
    assert names.index("cutover") < names.index("watch") < names.index("rollback")
    assert rt.proxy == "a" and rt.running == {"a": "r1"}
    assert ws.store.env_state("dev").current_release == "r1"


def test_rollback_skips_backup_and_migration(ws: Workspace) -> None:
    rt = FakeRuntime()
    _deploy(ws, rt, "r1")
    _deploy(ws, rt, "r2")
    _deploy(ws, rt, "r1", kind="rollback")
    names = [n for n, _ in _steps(ws)]
    assert "backup" not in names and "migrate" not in names
    assert ws.store.env_state("dev").current_release == "r1" and rt.running == {"a": "r1"}


def test_crash_after_cutover_adopts_what_serves_then_sweeps(ws: Workspace) -> None:
    rt = FakeRuntime()
    _deploy(ws, rt, "r1")
    # A deploy killed after its cutover: r2 serves on b, r1 still runs on a, the record says r1, and
    # r2's deployment had passed its watch.
    dep = ws.store.start_deployment("dev", "deploy", "test", 999999, "r1")
    ws.store.set_deployment_release(dep, "r2")
    sid = ws.store.start_step(dep, "watch")
    ws.store.finish_step(sid, "ok", "passed", 0.1)
    rt.running["b"] = "r2"
    rt.proxy = "b"
    ws.store.abandon_running("dev", "killed")
    _deploy(ws, rt, "r3")
    steps = _steps(ws)
    assert steps[0] == ("adopt", "warn")
    st = ws.store.env_state("dev")
    assert (st.current_release, st.previous_release) == ("r3", "r2")
    assert rt.running == {"a": "r3"} and rt.proxy == "a"  # r1 (orphan) swept, r2 drained after the cutover
    assert "sweep a" in rt.events


def test_crash_before_the_watch_ended_goes_back_to_the_record(ws: Workspace) -> None:
    rt = FakeRuntime()
    _deploy(ws, rt, "r1")
    rt.running["b"] = "r2"  # an unconfirmed release got the traffic, then its deploy died
    rt.proxy = "b"
    _deploy(ws, rt, "r3")
    steps = _steps(ws)
    assert steps[0] == ("repair", "warn") and steps[1] == ("sweep", "warn")
    assert ws.store.env_state("dev").current_release == "r3"
    assert rt.events.index("cutover a") < rt.events.index("sweep b")  # routed back before anything stopped


def test_production_grade_is_a_setting_not_a_name(tmp_path: Path) -> None:
    from stageflow.deploy.operations import needs_approval
    from stageflow.generate.nginx import site_options

    root = tmp_path / "app"
    root.mkdir()
    (root / "stageflow.yml").write_text(yaml.safe_dump({
        "project": "tiny",
        "services": {"web": {"command": "serve {port}", "port": 8000, "health": {"path": "/"}}},
        "environments": {"live": {"url": "http://127.0.0.1:8001", "production": True},
                         "production": {"url": "http://127.0.0.1:8002", "production": False},
                         "qa": {"url": "http://127.0.0.1:8003"}},
    }))
    for env in ("live", "production", "qa"):
        (root / f".env.{env}").write_text("SECRET_KEY=unit-test-secret-value-0123456789\n")
    live, prod, qa = (load_env_context(root, e, {}) for e in ("live", "production", "qa"))
    assert needs_approval(live) and live.require_clean_git
    assert site_options(live.config, "live", root=root).admin_allow == ("127.0.0.1/32", "::1/128")
    assert not needs_approval(prod) and not prod.require_clean_git
    assert site_options(prod.config, "production", root=root).admin_allow == ()
    assert not needs_approval(qa) and not qa.require_clean_git
