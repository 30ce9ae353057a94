"""Prometheus metrics of ``monitor continuous --metrics-port N`` (prometheus-client, on 127.0.0.1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stageflow.alerts.model import rank

if TYPE_CHECKING:
    from stageflow.monitor.engine import Cycle
    from stageflow.state.monitoring import MonitorState


class Metrics:
    """Gauges updated after every cycle, served by prometheus-client's own HTTP server."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        self.registry = CollectorRegistry()
        labels = ["env", "check", "target"]
        self.value = Gauge("stageflow_check_value", "Last measured value of a check", labels, registry=self.registry)
        self.severity = Gauge("stageflow_check_severity", "0 ok, 1 info, 2 warning, 3 critical", labels,
                              registry=self.registry)
        self.firing = Gauge("stageflow_alerts_open", "Open alerts", ["env", "severity", "state"],
                            registry=self.registry)
        self.pending = Gauge("stageflow_outbox_pending", "Messages waiting in the outbox", registry=self.registry)
        self.cycles = Counter("stageflow_monitor_cycles", "Check cycles run", registry=self.registry)
        self.server, self.thread = start_http_server(port, addr=host, registry=self.registry)

    def update(self, cycle: Cycle, state: MonitorState) -> None:
        """Publish one cycle's observations and the alert states."""
        self.cycles.inc()
        for o in cycle.observations:
            if o.value is not None:
                self.value.labels(o.env, o.check, o.target).set(o.value)
            self.severity.labels(o.env, o.check, o.target).set(rank(o.severity))
        self.firing.clear()
        for a in state.alerts():
            self.firing.labels(a.env, a.severity, a.state).inc()
        self.pending.set(state.count_outbox("pending"))

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
