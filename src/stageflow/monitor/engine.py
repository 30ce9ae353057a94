"""The monitor: build each environment's checks, run them all concurrently, evaluate, queue, deliver.

One cycle = every check of every watched environment at once, each bounded by its own timeout;
then, in one transaction, every alert steps through the rule state machine, the notices it
produces pass the notification stages into the outbox, and samples and log cursors are saved.
Delivery is separate (:meth:`Monitor.deliver`): it never holds a cycle up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stageflow.alerts import stages
from stageflow.alerts.model import Message, Observation
from stageflow.alerts.notifiers import Notifier, build_notifiers
from stageflow.alerts.rules import SENT, Timing, incident_duration, step
from stageflow.config.loader import EnvContext, load_env_context, load_project, resolve_env_name
from stageflow.monitor.checks import Check
from stageflow.monitor.checks.logs import Cursor
from stageflow.monitor.resources import MonitorSource
from stageflow.monitor.thresholds import VARIABLES, Limits, check_variables, thresholds_for
from stageflow.state.monitoring import AlertRow, MonitorState, Transition

if TYPE_CHECKING:
    import httpx

    from stageflow.alerts.delivery import Report
    from stageflow.config.models import ProjectConfig
    from stageflow.runner import Runner
    from stageflow.state.store import Store


#: Connections per HTTP client (see :meth:`Monitor.cycle`).
LANE = 2


@dataclass
class EnvWatch:
    """One watched environment: its resolved config, limits and runtime source."""

    ctx: EnvContext
    limits: dict[str, Limits]
    source: MonitorSource | None
    timing: Timing


@dataclass
class Cycle:
    """What one cycle saw and queued."""

    ts: float
    observations: list[Observation]
    notices: list[stages.Notice] = field(default_factory=list)

    @property
    def critical(self) -> bool:
        """Anything critical right now."""
        return any(o.severity == "critical" for o in self.observations)


def dedup_key(a: AlertRow, transition: str) -> str:
    """Identity of one message of one incident (the incident is its ``pending_since``)."""
    base = f"{a.fingerprint}|{transition}|{a.pending_since}"
    if transition == "reminder":
        return f"{base}|{a.last_notified}"
    if transition == "escalated":
        return f"{base}|{a.severity}"
    return base


def alert_message(a: AlertRow, transition: str, obs: Observation | None, now: float) -> Message:
    """The message for one transition of ``a``."""
    resolved = transition == "resolved"
    return Message(
        kind=transition, env=a.env, severity=a.severity, check=a.check_name, target=a.target,
        fingerprint=a.fingerprint, title=f"{a.check_name} {a.target}: {a.summary}",
        summary=a.summary if not resolved or obs is None else f"{a.summary} — now: {obs.summary}",
        value=a.value, threshold=a.threshold, unit=a.unit, hint=a.hint, since=a.pending_since,
        duration=incident_duration(a, now) if resolved else None, ts=now,
        details=list(obs.details) if obs is not None and not resolved else [],
    )


class Monitor:
    """Watches some environments of one project (and the host they run on)."""

    def __init__(self, root: Path, store: Store, runner: Runner, envs: list[str] | None = None, *,
                 environ: Mapping[str, str] | None = None, clock: Callable[[], float] = time.time,
                 warn: Callable[[str], None] = lambda _m: None, host: bool = True, window: float = 0.5,
                 interval: float | None = None) -> None:
        import os

        from stageflow.deploy.lock import read_lock, stale_reason
        from stageflow.monitor.sources import source_for

        environ = os.environ if environ is None else environ
        check_variables(environ)
        self.root, self.store, self.clock, self.warn = root, store, clock, warn
        self.config: ProjectConfig = load_project(root)
        names = [resolve_env_name(self.config, e) for e in envs] if envs else list(self.config.environments)
        mon = self.config.monitoring
        self.interval = interval if interval is not None else mon.interval
        self.window, self.host = window, host
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._tls_contexts: dict[Path | None, ssl.SSLContext] = {}
        self.state = MonitorState(store)
        self.watches: list[EnvWatch] = []
        found: dict[str, Notifier] = {}
        disabled: dict[str, str] = {}
        for name in names:
            ctx = load_env_context(root, name, environ)
            # The original's threshold variables, from the env file or (winning) the shell.
            variables = {**ctx.file_vars, **{k: environ[k] for k in VARIABLES if k in environ}}
            check_variables(variables)
            override = mon.environments.get(name)
            timing = Timing(
                fire_after=override.fire_after if override and override.fire_after is not None else mon.fire_after,
                resolve_after=(override.resolve_after if override and override.resolve_after is not None
                               else mon.resolve_after),
                consecutive=mon.consecutive, reminder=mon.reminder)
            self.watches.append(EnvWatch(ctx, thresholds_for(mon, name, variables), source_for(ctx, runner, store),
                                         timing))
            def note(message: str) -> None:
                disabled.setdefault(message.split(":")[0], message)

            for n in build_notifiers(ctx.config.alerts, note):
                found.setdefault(n.name, n)
        for key, msg in disabled.items():
            if not any(n.key == key for n in found.values()):
                warn(msg)
        self.notifiers = list(found.values())
        self.host_limits = thresholds_for(mon, None, environ)
        self.host_timing = Timing(mon.fire_after, mon.resolve_after, mon.consecutive, mon.reminder)

        def deploying(env: str) -> bool:
            info = read_lock(store, env)
            return info is not None and stale_reason(info) is None

        self.deploying = deploying

    # checks -------------------------------------------------------------------------------------
    def build_checks(self, clients: Callable[[Path | None], httpx.AsyncClient]) -> list[Check]:
        """Every check of every watched environment (and the host's)."""
        from stageflow.monitor.checks.http import HttpCheck
        from stageflow.monitor.checks.logs import AccessLogCheck, LogCheck
        from stageflow.monitor.checks.postgres import PostgresCheck
        from stageflow.monitor.checks.redis import RedisCheck
        from stageflow.monitor.checks.system import HostCheck, ServiceCheck

        mon = self.config.monitoring
        out: list[Check] = []
        cursors = self._cursors()
        if self.host:
            hl = self.host_limits
            out.append(HostCheck(hl["cpu"], hl["memory"], hl["disk"], self.root, self.window))
        for w in self.watches:
            ctx, lim = w.ctx, w.limits
            ca = w.source.ca_file() if w.source else None
            web_name, web = ctx.config.web_service
            health = web.health
            path, expect = (health.path, health.expect) if health else ("/", 200)
            timeout = min(mon.timeout, health.timeout) if health else mon.timeout

            def http(target: str, url: str, want: int, cond: dict[str, Any], t: float,
                     ctx: EnvContext = ctx, ca: Path | None = ca, lim: dict[str, Limits] = lim) -> HttpCheck:
                return HttpCheck(ctx.name, target, url, clients(ca), lim["response_time_ms"], lim["tls_days"], want,
                                 cond, t)

            out.append(http("public", ctx.env.url + path, expect, mon.health_json, timeout))
            placement = self.store.env_state(ctx.name).placement or {}  # the local runtime's: {slot, port}
            port = placement.get("port") if isinstance(placement.get("port"), int) else None
            if port and ctx.env.runtime == "local" and self.config.nginx.enabled != "off":
                host = self._listen_host(ctx)
                if port != ctx.env.url_port:
                    out.append(http(web_name, f"http://{host}:{port}{path}", expect, mon.health_json, timeout))
            override = mon.environments.get(ctx.name)
            for ep in [*mon.endpoints, *(override.endpoints if override else [])]:
                out.append(http(ep.name or ep.url, ep.url, ep.expect, ep.json, ep.timeout or mon.timeout))
            db = ctx.database
            if db.engine == "postgres":
                out.append(PostgresCheck(ctx.name, db.host, int(db.port), db.user, db.password, db.name,
                                         lim["db_connections"], lim["long_transaction_s"], mon.timeout))
            redis_url = ctx.app_vars.get("REDIS_URL")
            if ctx.config.cache and ctx.config.cache.engine == "redis" and redis_url:
                out.append(RedisCheck(ctx.name, redis_url, lim["redis_memory"], mon.timeout))
            if w.source is not None:
                out.append(ServiceCheck(ctx.name, w.source, lim["cpu"], lim["memory"], self.window))
                files = w.source.log_files()
                if files:
                    out.append(LogCheck(ctx.name, files, lim["log_errors"], cursors))
                access = w.source.access_log()
                if access is not None and access.exists():
                    out.append(AccessLogCheck(ctx.name, access, lim["error_rate"], lim["response_time_ms"],
                                              mon.min_requests, self.interval, cursors, now=self.clock()))
        return out

    @staticmethod
    def _listen_host(ctx: EnvContext) -> str:
        import ipaddress
        from urllib.parse import urlsplit

        host = urlsplit(ctx.env.url).hostname or "127.0.0.1"
        try:
            ipaddress.ip_address(host)
            return host
        except ValueError:
            return "127.0.0.1"

    def _cursors(self) -> dict[str, Cursor]:
        out = {}
        for path in self.state.log_cursor_paths():
            found = self.state.log_cursor(path)
            if found:
                out[path] = Cursor(path, *found)
        return out

    async def _run_one(self, check: Check, timeout: float, gate: asyncio.Semaphore | None) -> list[Observation]:
        try:
            if gate is None:
                return await asyncio.wait_for(check.run(), timeout)
            # The timeout starts once the request may go: waiting for a turn is not the target's fault.
            async with gate:
                return await asyncio.wait_for(check.run(), timeout)
        except TimeoutError:
            return [Observation(check.env, check.name, check.target, "critical",
                                f"the check did not finish within {timeout:g}s")]
        except Exception as exc:  # a check that breaks is a finding, never the end of the monitor
            return [Observation(check.env, check.name, check.target, "critical",
                                f"the check failed: {type(exc).__name__}: {exc}"[:240])]

    async def cycle(self) -> Cycle:
        """Run every check once, concurrently, then evaluate and queue (one transaction)."""
        import httpx

        mon = self.config.monitoring
        timeout = mon.timeout
        lanes: dict[Path | None, list[httpx.AsyncClient]] = {}
        contexts = self._tls_contexts
        turn = itertools.count()
        # HTTP requests in flight are bounded, and spread over small clients of LANE connections
        # each: httpx's pool checks every connection it holds for each request it assigns, so one
        # big pool costs more CPU per request than the request itself.
        gate = asyncio.Semaphore(mon.concurrency)
        n_lanes = max(1, -(-mon.concurrency // LANE))

        def client(ca: Path | None) -> httpx.AsyncClient:
            pool = lanes.setdefault(ca, [])
            if len(pool) < n_lanes:
                if ca not in contexts:
                    # One TLS context per trust root for the monitor's life: loading CAs costs ~30 ms each time.
                    contexts[ca] = ssl.create_default_context(cafile=str(ca) if ca else None)
                    if ca:
                        # The certificate served is the trust anchor itself (a self-signed rehearsal one).
                        contexts[ca].verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
                pool.append(httpx.AsyncClient(
                    verify=contexts[ca], follow_redirects=False, headers={"User-Agent": "stageflow-monitor"},
                    limits=httpx.Limits(max_connections=LANE, max_keepalive_connections=LANE)))
                return pool[-1]
            return pool[next(turn) % n_lanes]

        try:
            checks = self.build_checks(client)
            results = await asyncio.gather(*(self._run_one(c, timeout + self.window + 1,
                                                           gate if c.name == "http" else None) for c in checks))
        finally:
            for pool in lanes.values():
                for c in pool:
                    await c.aclose()
        observations = [o for r in results for o in r]
        now = self.clock()
        cycle = Cycle(now, observations)
        cycle.notices = self.commit(observations, now, [c for c in checks if hasattr(c, "updated")])
        return cycle

    # evaluation ---------------------------------------------------------------------------------
    def _timing(self, env: str) -> Timing:
        for w in self.watches:
            if w.ctx.name == env:
                return w.timing
        return self.host_timing

    def commit(self, observations: list[Observation], now: float,
               readers: Sequence[Any] = ()) -> list[stages.Notice]:
        """Step every alert, pass the notices through the stages into the outbox, save samples.

        ``readers`` are the log checks of the cycle: their cursors are saved in the same transaction,
        so lines counted once are never counted again, even after a crash.
        """
        st = self.state
        with st.tx():
            record = stages.history_recorder(st, now)
            changed: dict[str, AlertRow] = {}
            notices: list[stages.Notice] = []
            seen_obs: dict[str, Observation] = {}
            for obs in observations:
                if not obs.judged:
                    continue
                fp = obs.fingerprint
                seen_obs[fp] = obs
                prev = changed.get(fp) or st.alert(fp)
                new, transitions = step(prev, obs, now, self._timing(obs.env))
                if new is None:
                    continue
                changed[fp] = new
                for t in transitions:
                    dur = incident_duration(new, now) if t == "resolved" else None
                    st.add_transition(Transition(now, fp, new.env, new.check_name, new.target, t, new.severity,
                                                 new.value, new.summary, dur))
                    if t in SENT:
                        if t == "resolved" and new.folded_under:
                            record(stages.Notice(alert_message(new, t, obs, now), ""), "quiet",
                                   f"resolved while folded under {new.folded_under}")
                            new.folded_under = None
                            continue
                        notices.append(stages.Notice(alert_message(new, t, obs, now), dedup_key(new, t), new,
                                                     obs.depends_on))
            open_now = {a.fingerprint: a for a in st.alerts()}
            open_now.update({fp: a for fp, a in changed.items()})

            def failing(env: str, check: str) -> str | None:
                for a in open_now.values():
                    if a.env == env and a.check_name == check and a.state in ("pending", "firing"):
                        return a.fingerprint
                return None

            silencer = stages.Silencer(self.config.alerts.silences, self.deploying, now, record)
            # Folded or silenced alerts that still fire speak up once the reason is gone.
            for fp, a in open_now.items():
                if a.state != "firing" or not a.folded_under or any(n.alert is a for n in notices):
                    continue
                if a.folded_under == "silence":
                    still = self.deploying(a.env) or bool(
                        stages.silenced_by(silencer.silences, a.env, a.check_name, now))
                else:
                    parent = open_now.get(a.folded_under)
                    still = parent is not None and parent.state in ("pending", "firing")
                if not still:
                    a.folded_under = None
                    changed[fp] = a
                    last = seen_obs.get(fp)
                    notices.append(stages.Notice(alert_message(a, "firing", last, now),
                                                 dedup_key(a, "firing") + "|late", a, last.depends_on if last else ()))
            pipeline: list[stages.Stage] = [
                stages.Fold(failing, record),
                stages.Dedup(st, record),
                silencer,
                stages.RouteAndRecord(st, self.notifiers, now, record),
            ]
            queued = stages.run(pipeline, notices)
            for n in notices:
                if n.alert is not None:
                    changed[n.alert.fingerprint] = n.alert
            for a in changed.values():
                st.save_alert(a)
            for obs in observations:
                values = []
                for metric, value in obs.metrics:
                    name, _, target = metric.partition("|")
                    values.append((name, target or obs.target, value))
                if values:
                    st.add_samples(obs.env, now, values)
            for reader in readers:
                for cur in reader.updated:
                    st.set_log_cursor(cur.path, cur.inode, cur.offset, cur.kinds, now)
                reader.updated.clear()
        return queued

    # delivery -----------------------------------------------------------------------------------
    async def deliver(self, budget: float | None = None, client: httpx.AsyncClient | None = None) -> Report:
        """Send what is due (see :mod:`stageflow.alerts.delivery`)."""
        return await deliver(self.state, self.notifiers, self.config, self.clock, budget, self.warn, client,
                             self.sleep)


async def deliver(state: MonitorState, notifiers: list[Notifier], config: ProjectConfig,
                  clock: Callable[[], float], budget: float | None, warn: Callable[[str], None],
                  client: httpx.AsyncClient | None = None,
                  sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> Report:
    """Drain the outbox once through ``notifiers``."""
    import httpx

    from stageflow.alerts.delivery import Delivery

    alerts = config.alerts
    own = client is None
    http = client or httpx.AsyncClient(timeout=alerts.timeout)
    try:
        d = Delivery(state, notifiers, http, clock=clock, sleep=sleep, digest=alerts.digest, min_gap=alerts.min_gap,
                     lease=alerts.timeout * 2 + 5, report_error=warn)
        return await d.drain(budget)
    finally:
        if own:
            with contextlib.suppress(Exception):
                await http.aclose()

