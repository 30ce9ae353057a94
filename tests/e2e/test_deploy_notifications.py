"""Deploy events reach a recording receiver (standing in for Slack and a JSON webhook) with their fields."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.app import App, teardown_app
from tests.support.receiver import Receiver
from tests.support.tiny import make_tiny

pytestmark = pytest.mark.e2e


@pytest.fixture
def tiny(tmp_path: Path, receiver: Receiver) -> Iterator[App]:
    app = make_tiny(tmp_path, watch="3s", drain="1s")
    with (app.root / "stageflow.yml").open("a") as fh:
        fh.write(f'alerts:\n  slack: {{webhook: "${{SLACK_WEBHOOK}}"}}\n'
                 f'  webhooks: [{{url: "{receiver.url}/hook", name: ops}}]\n  min_gap: 100ms\n')
    app.commit("notify")
    yield app
    teardown_app(app)


def test_deployed_failed_and_rolled_back_reach_the_receiver(tiny: App, receiver: Receiver) -> None:
    # Slack's variable unset: the deploy works, the JSON webhook still gets the event.
    tiny.sf("deploy", "staging", env={"SLACK_WEBHOOK": ""})
    (first,) = receiver.wait_for(1, path="/hook")
    r1 = tiny.status()["staging"]["release"]
    assert {k: first[k] for k in ("status", "environment")} == {"status": "deployed", "environment": "staging"}
    assert first["release"] == r1 and first["outcome"] == "succeeded" and first["kind"] == "deploy"
    assert len(first["commit"]) == 40 and first["actor"]
    assert first["duration"] > 0 and first["type"] == "deploy"
    logs = "".join(p.read_text() for p in (tiny.root / "logs").glob("workflow_*.log"))
    assert "alerts.slack.webhook: ${SLACK_WEBHOOK} is not set: slack notifications are disabled" in logs

    slack = {"SLACK_WEBHOOK": receiver.url + "/slack"}
    (tiny.root / "flip").write_text("1")
    tiny.commit("turns unhealthy after start")
    failed = tiny.sf("deploy", "staging", check=False, env=slack)
    assert failed.returncode == 1
    hook = receiver.wait_for(2, path="/hook")
    assert hook[1]["status"] == "failed" and hook[1]["outcome"] == "failed"
    assert "watch" in hook[1]["error"] and "HTTP 503" in hook[1]["error"]
    (s_failed,) = receiver.wait_for(1, path="/slack")
    assert s_failed["text"].startswith("staging: deploy failed for ") and s_failed["attachments"][0][
        "color"] == "#d40e0d"

    (tiny.root / "flip").unlink()
    tiny.commit("healthy again")
    tiny.sf("deploy", "staging", env=slack)
    tiny.sf("rollback", "staging", env=slack)
    hook = receiver.wait_for(4, path="/hook")
    assert [h["status"] for h in hook] == ["deployed", "failed", "deployed", "rolled_back"]
    assert hook[3]["release"] == r1 and hook[3]["kind"] == "rollback" and hook[3]["previous"] == hook[2]["release"]
    slack_got = receiver.wait_for(3, path="/slack")
    assert [s["attachments"][0]["title"] for s in slack_got] == [
        "failed · staging", "deployed · staging", "rolled back · staging"]
    # Every event was delivered exactly once and is on record in the outbox.
    con = sqlite3.connect(tiny.root / ".stageflow" / "state.db")
    rows = list(con.execute("SELECT notifier, status, message FROM outbox ORDER BY id"))
    con.close()
    assert {(n, s) for n, s, _ in rows} == {("webhook:ops", "delivered"), ("slack", "delivered")}
    assert len(rows) == 7 and all(json.loads(m)["kind"] == "deploy" for _, _, m in rows)
