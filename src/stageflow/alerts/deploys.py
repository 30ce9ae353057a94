"""Deploy events (deployed, failed, rolled back, promoted) through the same notifiers, via the outbox.

Called once per finished deployment. It never raises and never fails a deploy: the event is queued
in the state store first (durable), then sent within a short budget; what cannot go out now is sent
by the next ``stageflow monitor`` run or the running ``continuous`` monitor.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stageflow.config.loader import EnvContext
    from stageflow.workspace import Workspace

SEND_BUDGET = 3.0


def event_name(kind: str, outcome: str) -> str:
    """deployed | promoted | rolled_back | failed."""
    if outcome != "succeeded":
        return "failed"
    return {"promote": "promoted", "rollback": "rolled_back"}.get(kind, "deployed")


def deploy_fields(ws: Workspace, ctx: EnvContext, dep_id: int) -> dict[str, Any]:
    """What the payload says about one deployment, read from its record."""
    dep = ws.store.deployment(dep_id)
    if dep is None:
        return {}
    release = ws.store.release(dep.release_id) if dep.release_id else None
    duration = None
    if dep.finished_at:
        duration = (datetime.fromisoformat(dep.finished_at) - datetime.fromisoformat(dep.started_at)).total_seconds()
    return {
        "status": event_name(dep.kind, dep.outcome), "environment": ctx.name, "release": dep.release_id,
        "commit": release.commit_sha if release else None, "actor": dep.actor, "duration": duration,
        "outcome": dep.outcome, "kind": dep.kind, "deployment": dep_id, "previous": dep.previous_release_id,
        "error": dep.error, "url": ctx.env.url,
    }


def notify_deploy(ws: Workspace, ctx: EnvContext, dep_id: int) -> None:
    """Queue and send the event of a finished deployment; trouble is a warning in the workflow log."""
    try:
        _notify(ws, ctx, dep_id)
    except Exception as exc:  # a notification problem must never turn into a failed deploy
        ws.log.write(f"[{ctx.name}] deploy notification not queued: {type(exc).__name__}: {exc}", level="WARN")


def _notify(ws: Workspace, ctx: EnvContext, dep_id: int) -> None:
    from stageflow.alerts.notifiers import build_notifiers

    warnings: list[str] = []
    notifiers = build_notifiers(ctx.config.alerts, warnings.append)
    for w in warnings:
        ws.log.write(w, level="WARN", echo=False)
    if not notifiers:
        return
    import asyncio

    from stageflow.alerts.model import Message
    from stageflow.alerts.stages import Notice, RouteAndRecord, Silencer, history_recorder, run
    from stageflow.monitor.engine import deliver
    from stageflow.state.monitoring import MonitorState

    fields = deploy_fields(ws, ctx, dep_id)
    if not fields:
        return
    now = time.time()
    status = fields["status"]
    what = {"deployed": "deployed", "promoted": "promoted", "rolled_back": "rolled back to",
            "failed": "deploy failed for"}[status]
    title = f"{what} {fields['release'] or 'a new release'}" + (f" by {fields['actor']}" if fields["actor"] else "")
    message = Message(kind="deploy", env=ctx.name, severity="critical" if status == "failed" else "info",
                      title=title, summary=fields.get("error") or "", ts=now, deploy=fields)
    state = MonitorState(ws.store)
    record = history_recorder(state, now)
    with state.tx():
        run([Silencer((), lambda _e: False, now, record), RouteAndRecord(state, notifiers, now, record)],
            [Notice(message, f"deploy|{dep_id}|{status}")])
    report = asyncio.run(deliver(state, notifiers, ctx.config, time.time, SEND_BUDGET,
                                 lambda m: ws.log.write(m, level="WARN")))
    if report.retried:
        ws.log.write(f"[{ctx.name}] deploy notification queued; it goes out with the next monitor run",
                     level="WARN", echo=False)
