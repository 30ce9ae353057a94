"""What a runtime tells the monitor: its services' processes (or containers) and its log files.

Each runtime supplies its own: the local runtime measures its process groups with psutil, a compose
runtime would read the engine's container stats. Shared monitor code sees only this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ServiceStats:
    """One service's resource use: CPU in percent of one core over the window, memory of the host."""

    service: str
    processes: int
    cpu_percent: float
    rss_bytes: int
    memory_percent: float


class ResourceSource(Protocol):
    """Resource use of one environment's services."""

    def service_stats(self, window: float) -> list[ServiceStats]:
        """Measure every running service over ``window`` seconds (blocking; the monitor runs it in a thread)."""


class MonitorSource(ResourceSource, Protocol):
    """Everything the monitor reads from a runtime: resources, the services' logs, the proxy's access log."""

    def log_files(self) -> dict[str, Path]:
        """Current log file of each service."""

    def access_log(self) -> Path | None:
        """The proxy's access log, when there is a proxy."""

    def ca_file(self) -> Path | None:
        """A certificate to trust for the env's own https URL (a local rehearsal's self-signed one)."""
