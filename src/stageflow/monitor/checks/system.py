"""Host resources (CPU, memory, disk) and per-service processes, the latter through the runtime."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from stageflow.alerts.model import Observation
from stageflow.monitor.resources import ResourceSource
from stageflow.monitor.thresholds import Limits

#: Host-wide checks belong to no environment: they are reported under this name.
HOST = "host"


def _host_sample(disk_path: Path, window: float) -> tuple[float, float, float]:
    import psutil

    cpu = psutil.cpu_percent(interval=window)
    mem = psutil.virtual_memory().percent
    disk = psutil.disk_usage(str(disk_path)).percent
    return cpu, mem, disk


@dataclass
class HostCheck:
    """CPU over a short window, memory, and the disk holding the app."""

    cpu: Limits
    memory: Limits
    disk: Limits
    disk_path: Path
    window: float = 0.5
    env: str = HOST
    target: str = "host"
    name: str = "cpu"

    async def run(self) -> list[Observation]:
        """Sample in a thread: psutil's CPU window blocks."""
        cpu, mem, disk = await asyncio.to_thread(_host_sample, self.disk_path, self.window)
        return [
            _judge(self.env, "cpu", "host", cpu, self.cpu, "CPU", "find the busy process: top -o %CPU"),
            _judge(self.env, "memory", "host", mem, self.memory, "memory", "find the big process: top -o %MEM"),
            _judge(self.env, "disk", str(self.disk_path), disk, self.disk, "disk",
                   "free space: stageflow cleanup; old logs and backups"),
        ]


def _judge(env: str, rule: str, target: str, value: float, lim: Limits, what: str, hint: str) -> Observation:
    sev = lim.severity(value)
    return Observation(env, rule, target, sev, f"{what} {value:.1f}% of {target}", value, lim.shown, "%",
                       hint=hint if sev != "ok" else "", metrics=[(rule, value)])


@dataclass
class ServiceCheck:
    """CPU (percent of one core) and memory (percent of the host) of each service, from the runtime."""

    env: str
    source: ResourceSource
    cpu: Limits
    memory: Limits
    window: float = 0.5
    target: str = "services"
    name: str = "service_cpu"

    async def run(self) -> list[Observation]:
        """One observation per service and resource."""
        stats = await asyncio.to_thread(self.source.service_stats, self.window)
        out = []
        for s in stats:
            out.append(_judge(self.env, "service_cpu", s.service, s.cpu_percent, self.cpu, f"{s.service} CPU",
                              f"{s.service} is busy: its log, a loop, or too few workers"))
            out[-1].summary = f"{s.service} CPU {s.cpu_percent:.0f}% of a core ({s.processes} process(es))"
            out.append(_judge(self.env, "service_memory", s.service, s.memory_percent, self.memory,
                              f"{s.service} memory", f"{s.service} grows: a leak, or too many workers"))
            out[-1].summary = f"{s.service} memory {s.rss_bytes / 2**20:.0f} MB ({s.memory_percent:.1f}% of the host)"
            out[-1].metrics.append(("rss_mb", s.rss_bytes / 2**20))
        return out
