"""Alert rules, thresholds, notifier payloads, the outbox and its delivery (against a real receiver)."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import httpx
import pytest

from stageflow.alerts import stages
from stageflow.alerts.delivery import Delivery, backoff, classify
from stageflow.alerts.model import Message, Observation
from stageflow.alerts.notifiers import SendResult, build_notifiers, kinds, parse_retry_after
from stageflow.alerts.notifiers.slack import SlackNotifier
from stageflow.alerts.notifiers.webhook import WebhookNotifier
from stageflow.alerts.rules import Timing, step
from stageflow.config import loader
from stageflow.config.models import Alerts, Level, Monitoring, Silence, SlackAlerts, Thresholds, WebhookAlerts
from stageflow.errors import ConfigError
from stageflow.monitor.thresholds import Limits, limits, thresholds_for
from stageflow.state.monitoring import SCHEMA, AlertRow, MonitorState
from stageflow.state.store import Store
from tests.support.receiver import Receiver


def obs(sev: str, value: float = 1.0) -> Observation:
    return Observation("prod", "cpu", "host", sev, f"CPU {value}%", value, 80.0, "%")


def run(timing: Timing, series: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """Feed (time, severity) observations; return (time, transition) for every transition."""
    state: AlertRow | None = None
    out = []
    for t, sev in series:
        state, transitions = step(state, obs(sev), t, timing)
        out += [(t, tr) for tr in transitions]
    return out


# rules --------------------------------------------------------------------------------------------
def test_fires_only_after_the_for_duration_and_the_consecutive_count() -> None:
    timing = Timing(fire_after=30, resolve_after=20, consecutive=2)
    got = run(timing, [(0, "warning"), (10, "warning"), (20, "warning"), (30, "warning"), (40, "ok"), (50, "ok"),
                       (60, "ok")])
    # 2 consecutive after 10 s, but the condition must also hold 30 s: fires at 30, not before.
    assert got == [(0, "pending"), (30, "firing"), (60, "resolved")]


def test_a_flapping_check_never_fires() -> None:
    timing = Timing(fire_after=0, consecutive=2)
    series = [(float(i), "critical" if i % 2 else "ok") for i in range(40)]
    got = run(timing, series)
    assert {tr for _, tr in got} == {"pending", "cancelled"}


def test_flapping_while_firing_does_not_resolve_and_refire() -> None:
    timing = Timing(fire_after=0, consecutive=2)
    got = run(timing, [(0, "critical"), (1, "critical"), (2, "ok"), (3, "critical"), (4, "ok"), (5, "critical"),
                       (6, "ok"), (7, "ok")])
    assert [tr for _, tr in got] == ["pending", "firing", "resolved"]


def test_reminders_and_escalation_are_single_messages() -> None:
    timing = Timing(consecutive=1, reminder=100)
    state, tr = step(None, obs("warning"), 0, timing)
    assert tr == ["pending", "firing"]
    state, tr = step(state, obs("warning"), 50, timing)
    assert tr == []
    state, tr = step(state, obs("critical"), 60, timing)
    assert tr == ["escalated"]
    state, tr = step(state, obs("critical"), 120, timing)
    assert tr == []
    state, tr = step(state, obs("critical"), 161, timing)
    assert tr == ["reminder"]
    assert state is not None and state.severity == "critical" and state.pending_since == 0


# thresholds -------------------------------------------------------------------------------------------
def test_threshold_defaults_overrides_and_the_original_variables() -> None:
    mon = Monitoring(thresholds=Thresholds(cpu=Level(warning=60, critical=70)))
    lim = thresholds_for(mon, "dev", {})
    assert lim["cpu"] == Limits(60, 70) and lim["memory"] == Limits(85, 95) and lim["response_time_ms"] == Limits(
        2000, 4000)
    lim = thresholds_for(mon, "dev", {"CPU_USAGE": "50%", "RESPONSE_TIME": "1.5s", "ERROR_RATE": "2"})
    assert lim["cpu"] == Limits(50, 95) and lim["response_time_ms"] == Limits(1500, 3000)
    assert lim["error_rate"] == Limits(2, 4)
    assert limits("tls_days", Level(warning=14, critical=3)).severity(10) == "warning"
    assert limits("tls_days", Level(warning=14, critical=3)).severity(2) == "critical"


@pytest.mark.parametrize(("name", "value"), [("CPU_USAGE", "eighty"), ("MEMORY_USAGE", "120%"),
                                             ("RESPONSE_TIME", "2000%"), ("DISK_USAGE", "9 0")])
def test_a_bad_threshold_variable_names_itself(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{name}='{value}': must be") as exc:
        thresholds_for(Monitoring(), None, {name: value})
    assert exc.value.exit_code == 2


def test_per_environment_thresholds_in_stageflow_yml() -> None:
    config = loader._validate(Path("stageflow.yml"), {
        "project": "p", "services": {"web": {"port": 1}}, "environments": {"dev": {"url": "http://127.0.0.1:1"},
                                                                         "prod": {"url": "http://127.0.0.1:2"}},
        "monitoring": {"thresholds": {"cpu": 70}, "environments": {"prod": {"thresholds": {"cpu": 40}}}}})
    assert thresholds_for(config.monitoring, "prod", {})["cpu"].warning == 40
    assert thresholds_for(config.monitoring, "dev", {})["cpu"].warning == 70
    with pytest.raises(ConfigError, match=r"monitoring\.thresholds\.disk: must be a percentage"):
        loader._validate(Path("stageflow.yml"), {
            "project": "p", "services": {"web": {"port": 1}}, "environments": {"dev": {"url": "http://127.0.0.1:1"}},
            "monitoring": {"thresholds": {"disk": 120}}})


# notifiers ---------------------------------------------------------------------------------------------
def test_every_notifier_kind_is_registered_and_buildable() -> None:
    assert kinds() == ["slack", "webhook"]
    alerts = Alerts(slack=SlackAlerts(webhook="http://127.0.0.1:9/s"),
                    webhooks=[WebhookAlerts(url="http://127.0.0.1:9/w", name="ops")])
    built = build_notifiers(alerts, lambda m: pytest.fail(m))
    assert [n.name for n in built] == ["slack", "webhook:ops"]
    # Every section type of `alerts:` that holds a target has a kind in the registry.
    targets = {f.name for f in dataclasses.fields(Alerts) if f.name in ("slack", "webhooks")}
    assert len(targets) == len(kinds())


def test_an_unset_variable_disables_a_notifier_with_one_warning() -> None:
    warnings: list[str] = []
    built = build_notifiers(Alerts(slack=SlackAlerts(), webhooks=[WebhookAlerts(url="http://127.0.0.1:9/w")]),
                            warnings.append)
    assert [n.name for n in built] == ["webhook:0"]
    assert warnings == ["alerts.slack.webhook: ${SLACK_WEBHOOK} is not set: slack notifications are disabled"]
    with pytest.raises(ConfigError, match=r"alerts\.webhooks\[0\]\.url: must be an http\(s\) URL"):
        build_notifiers(Alerts(webhooks=[WebhookAlerts(url="ftp://x")]), warnings.append)


def firing() -> Message:
    return Message(kind="firing", env="production", severity="critical", check="postgres", target="app@db:5432",
                   fingerprint="production/postgres/app@db:5432", title="postgres app@db:5432: PostgreSQL is down",
                   summary="PostgreSQL is down: connection refused", hint="is the server running?",
                   since=1764547200.0, ts=1764547260.0)


def test_slack_payload_exact() -> None:
    n = SlackNotifier(url="http://127.0.0.1:9/s", route=SlackAlerts(webhook="x"), channel="#ops")
    assert n.build_payload(firing()) == {
        "text": "[FIRING] CRITICAL production: postgres app@db:5432: PostgreSQL is down",
        "attachments": [{
            "color": "#d40e0d",
            "title": "CRITICAL · production · postgres",
            "text": "PostgreSQL is down: connection refused\nHint: is the server running?",
            "fields": [
                {"title": "Environment", "value": "production", "short": True},
                {"title": "Check", "value": "postgres (app@db:5432)", "short": True},
                {"title": "Value", "value": "-", "short": True},
                {"title": "Since", "value": "2025-12-01 00:00 UTC", "short": True},
            ],
            "footer": "stageflow monitor",
            "ts": 1764547260,
        }],
        "channel": "#ops",
    }
    resolved = dataclasses.replace(firing(), kind="resolved", duration=185.0)
    body = n.build_payload(resolved)
    assert body["attachments"][0]["color"] == "#2eb886" and body["text"].startswith("[RESOLVED]")
    assert {"title": "Lasted", "value": "3m 5s", "short": True} in body["attachments"][0]["fields"]


def test_webhook_deploy_payload_is_a_superset_of_the_original() -> None:
    n = WebhookNotifier(url="http://127.0.0.1:9/w", route=WebhookAlerts(url="x"))
    m = Message(kind="deploy", env="production", severity="info", title="deployed r1", ts=5.0,
                deploy={"status": "deployed", "environment": "production", "release": "r1", "commit": "abc",
                        "actor": "ann", "duration": 12.5, "outcome": "succeeded"})
    assert n.build_payload(m) == {"type": "deploy", "environment": "production", "status": "deployed",
                                  "release": "r1", "commit": "abc", "actor": "ann", "duration": 12.5,
                                  "outcome": "succeeded", "ts": 5.0}


def test_retry_after_and_error_kinds() -> None:
    assert parse_retry_after("7") == 7.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert [classify(SendResult(s)) for s in (200, 204, 500, 503, 429, 404, 400, 410, None)] == [
        "ok", "ok", "retry", "retry", "retry", "error", "error", "error", "retry"]
    assert [backoff(a) for a in (0, 1, 2, 3, 20)] == [1, 2, 4, 8, 300]


# the outbox ------------------------------------------------------------------------------------------------
@pytest.fixture
def state(tmp_path: Path) -> MonitorState:
    return MonitorState(Store(tmp_path / "state.db"))


def test_monitor_schema_is_versioned_apart_from_the_deploy_schema(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    deploy_version = store.schema_version
    st = MonitorState(store)
    assert st.schema_version == len(SCHEMA) and store.schema_version == deploy_version
    assert MonitorState(Store(tmp_path / "state.db")).schema_version == len(SCHEMA)  # idempotent re-open


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def queue(st: MonitorState, key: str, now: float, notifier: str = "webhook:0") -> None:
    with st.tx():
        m = dataclasses.replace(firing(), fingerprint=key)
        assert st.enqueue(notifier, "production", "firing", key, m.to_dict(), now)


def drain(st: MonitorState, rec: Receiver, clock: Clock, digest: int = 5) -> object:
    async def go() -> object:
        async with httpx.AsyncClient(timeout=5) as client:
            notifier = WebhookNotifier(url=rec.url + "/hook", route=WebhookAlerts(url="x"), name="webhook:0")
            return await Delivery(st, [notifier], client, clock=clock, sleep=clock.sleep, digest=digest,
                                  min_gap=1.0).drain()

    return asyncio.run(go())


def test_500_then_200_delivers_each_message_once(state: MonitorState, receiver: Receiver) -> None:
    clock = Clock()
    for i in range(3):
        queue(state, f"a{i}", clock.now)
    receiver.answer(500, 500, 500, 500)
    drain(state, receiver, clock)  # a0 500, a1 500, a2 500
    assert [r.status for r in state.outbox()] == ["pending"] * 3
    clock.now += 1.5
    drain(state, receiver, clock)  # a0 500 again, a1, a2 ok
    clock.now += 2.5
    drain(state, receiver, clock)
    assert sorted(b["fingerprint"] for b in receiver.delivered()) == ["a0", "a1", "a2"]
    assert [r.status for r in state.outbox()] == ["delivered"] * 3
    results = [a.result for a in state.attempts()]
    assert results.count("retry") == 4 and results.count("ok") == 3


def test_429_waits_for_retry_after(state: MonitorState, receiver: Receiver) -> None:
    clock = Clock()
    queue(state, "a", clock.now)
    receiver.answer((429, {"Retry-After": "30"}))
    drain(state, receiver, clock)
    row = state.outbox()[0]
    assert row.status == "pending" and row.due_at >= clock.now + 29
    clock.now += 10
    drain(state, receiver, clock)
    assert len(receiver.received) == 1  # not before Retry-After
    clock.now += 21
    drain(state, receiver, clock)
    assert [b["fingerprint"] for b in receiver.delivered()] == ["a"]


def test_404_is_a_configuration_error_not_retried(state: MonitorState, receiver: Receiver) -> None:
    clock = Clock()
    queue(state, "a", clock.now)
    receiver.always(404)
    report = drain(state, receiver, clock)
    assert "alerts.webhooks[0].url: webhook:0 answered HTTP 404: the URL is wrong or was revoked" in str(report)
    clock.now += 1000
    drain(state, receiver, clock)
    assert len(receiver.received) == 1 and state.outbox()[0].status == "failed"


def test_a_burst_becomes_one_digest_and_sends_are_paced(state: MonitorState, receiver: Receiver) -> None:
    clock = Clock()
    for i in range(8):
        queue(state, f"b{i}", clock.now)
    drain(state, receiver, clock, digest=5)
    (body,) = receiver.delivered()
    assert body["type"] == "digest" and len(body["alerts"]) == 8
    for i in range(3):
        queue(state, f"c{i}", clock.now)
    start = clock.now
    drain(state, receiver, clock, digest=5)
    assert len(receiver.delivered()) == 4 and clock.now - start >= 2.0  # ~1 message/s per webhook


def test_a_dead_senders_claims_are_taken_over(state: MonitorState) -> None:
    queue(state, "a", 0.0)
    held = state.claim("otherhost|1|1", 0.0, 1000.0, ["webhook:0"])
    assert len(held) == 1 and state.claim("me", 1.0, 10.0, ["webhook:0"]) == []
    assert len(state.claim("me", 1.0, 10.0, ["webhook:0"], reclaimable=["otherhost|1|1"])) == 1


# stages -------------------------------------------------------------------------------------------------------
def test_silences_maintenance_windows_and_deploys(state: MonitorState) -> None:
    day = 1764547200.0  # 2025-12-01 00:00 UTC
    window = [Silence(env="production", check="*", daily="02:00-03:00", comment="backups")]
    assert stages.silenced_by(window, "production", "cpu", day + 2.5 * 3600) is not None
    assert stages.silenced_by(window, "production", "cpu", day + 3.5 * 3600) is None
    assert stages.silenced_by(window, "staging", "cpu", day + 2.5 * 3600) is None
    once = [Silence(check="disk", start="2025-12-01T10:00:00+00:00", end="2025-12-01T11:00:00+00:00")]
    assert stages.silenced_by(once, "dev", "disk", day + 10.5 * 3600) is not None
    assert stages.silenced_by(once, "dev", "disk", day + 11 * 3600) is None
    recorded: list[str] = []
    silencer = stages.Silencer([], lambda env: env == "production", day, lambda n, t, why: recorded.append(why))
    alert = AlertRow("production/cpu/host", "production", "cpu", "host", state="firing")
    out = silencer([stages.Notice(firing(), "k", alert)])
    assert out == [] and recorded == ["production is being deployed"] and alert.folded_under == "silence"


def test_the_outbox_never_takes_one_message_twice(state: MonitorState) -> None:
    with state.tx():
        assert state.enqueue("slack", "dev", "firing", "k1", {}, 0.0)
        assert not state.enqueue("slack", "dev", "firing", "k1", {}, 1.0)
        assert state.enqueue("webhook:0", "dev", "firing", "k1", {}, 1.0)
    assert len(state.outbox()) == 2
    with pytest.raises(sqlite3.IntegrityError):
        state.db.execute("INSERT INTO monitor_leader VALUES (2, 'h', 1, 1, 0, 0)")


def test_samples_are_downsampled_hourly_and_dropped_after_retention(state: MonitorState) -> None:
    now = 10 * 86400.0
    with state.tx():
        for minute in range(0, 120, 10):  # two hours of samples, 3 days ago
            state.add_samples("dev", now - 3 * 86400 + minute * 60, [("response_ms", "public", float(minute))])
        state.add_samples("dev", now - 40 * 86400, [("response_ms", "public", 1.0)])
        state.add_samples("dev", now - 60, [("response_ms", "public", 7.0)])
    assert state.downsample(now, raw_retention=2 * 86400, retention=30 * 86400) == 13
    got = state.samples("dev", "response_ms", now - 31 * 86400, now + 1)
    # Hourly means of the old samples (0..50 → 25, 60..110 → 85), then the recent raw one.
    assert [v for _, _, v in got] == [25.0, 85.0, 7.0]
    rows = list(state.db.execute("SELECT n, low, high FROM samples_hourly ORDER BY hour"))
    assert [tuple(r) for r in rows] == [(6, 0.0, 50.0), (6, 60.0, 110.0)]


def test_routing_by_environment_severity_and_deploy_event() -> None:
    from stageflow.alerts.deploys import event_name
    from stageflow.alerts.notifiers import routes
    from stageflow.config.models import Route

    prod_critical = Route(environments=["production"], min_severity="critical", events=["failed"])
    alert = dataclasses.replace(firing(), severity="warning")
    assert not routes(prod_critical, alert)
    assert routes(prod_critical, firing())
    assert not routes(prod_critical, dataclasses.replace(firing(), env="staging"))
    deploy = Message(kind="deploy", env="production", severity="info", title="x", deploy={"status": "deployed"})
    assert not routes(prod_critical, deploy)
    assert routes(prod_critical, dataclasses.replace(deploy, deploy={"status": "failed"}))
    assert routes(Route(environments=["staging"], deploy_environments=["production"]), deploy)
    assert [event_name(k, o) for k, o in [("deploy", "succeeded"), ("promote", "succeeded"),
                                          ("rollback", "succeeded"), ("promote", "failed")]] == [
        "deployed", "promoted", "rolled_back", "failed"]


def test_damaged_outbox_rows_are_set_aside(state: MonitorState, receiver: Receiver) -> None:
    clock = Clock()
    queue(state, "good", clock.now)
    with state.tx():
        state.db.execute("INSERT INTO outbox (created_at, due_at, notifier, env, kind, dedup_key, message) "
                         "VALUES (?, ?, 'webhook:0', 'dev', 'firing', 'bad1', '{not json')", (clock.now, clock.now))
        state.db.execute("INSERT INTO outbox (created_at, due_at, notifier, env, kind, dedup_key, message) "
                         "VALUES (?, ?, 'webhook:0', 'dev', 'firing', 'bad2', '{\"ts\": \"x\", \"kind\": 3}')",
                         (clock.now, clock.now))
    drain(state, receiver, clock)
    assert [b["fingerprint"] for b in receiver.delivered()] == ["good"]
    assert [(r.dedup_key, r.status) for r in state.outbox()] == [
        ("good", "delivered"), ("bad1", "failed"), ("bad2", "failed")]


def test_a_version_1_monitor_schema_is_migrated_in_place(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    with store.tx() as db:
        db.execute("CREATE TABLE monitor_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        for statement in filter(str.strip, SCHEMA[0].split(";")):
            db.execute(statement)
        db.execute("INSERT INTO monitor_meta VALUES ('schema_version', '1')")
        db.execute("INSERT INTO log_cursors VALUES ('/x.log', 7, 42, '[\"KeyError: N\"]')")
    st = MonitorState(store)
    assert st.schema_version == len(SCHEMA) == 2
    assert st.log_cursor("/x.log") == (7, 42, ["KeyError: N"], None)
    with st.tx():
        st.set_log_cursor("/x.log", 7, 50, ["KeyError: N"], 123.0)
    assert st.log_cursor("/x.log") == (7, 50, ["KeyError: N"], 123.0)
