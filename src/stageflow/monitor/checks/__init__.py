"""Checks: each one async, bounded by its own timeout, returning observations (one per rule and target)."""

from __future__ import annotations

from typing import Protocol

from stageflow.alerts.model import Observation


class Check(Protocol):
    """One check of one environment."""

    @property
    def name(self) -> str:
        """The rule that stands for the whole check when it cannot run (timeout, crash)."""

    @property
    def env(self) -> str:
        """The environment (or ``host``)."""

    @property
    def target(self) -> str:
        """What it checks (a service, a URL, a database)."""

    async def run(self) -> list[Observation]:
        """Measure and judge; network failures are observations, not exceptions."""
