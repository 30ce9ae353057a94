"""Thresholds in force for one environment: defaults, ``stageflow.yml``, then the original's variables.

A plain number in the config is the warning level; the critical level then follows the rule's
default (95 % for resources, twice the warning for times and rates). The shell (or the env file) may
override the main five as the original scripts wrote them: ``CPU_USAGE=80%``, ``MEMORY_USAGE=85%``,
``DISK_USAGE=90%``, ``RESPONSE_TIME=2000ms``, ``ERROR_RATE=5%``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass

from stageflow.config.models import Level, Monitoring, Threshold
from stageflow.errors import ConfigError

#: Rules where a lower value is worse (days of certificate left).
LOWER_IS_WORSE = frozenset({"tls_days"})

_CRITICAL_FLOOR = {"cpu": 95.0, "memory": 95.0, "disk": 95.0, "db_connections": 95.0, "redis_memory": 98.0}
_CRITICAL_FACTOR = {"response_time_ms": 2.0, "error_rate": 2.0, "log_errors": 3.0, "long_transaction_s": 4.0}

#: The original's variables: name → (rule, unit accepted after the number).
VARIABLES = {
    "CPU_USAGE": ("cpu", "%"),
    "MEMORY_USAGE": ("memory", "%"),
    "DISK_USAGE": ("disk", "%"),
    "RESPONSE_TIME": ("response_time_ms", "ms"),
    "ERROR_RATE": ("error_rate", "%"),
}
_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(%|ms|s)?\s*\Z")


@dataclass(frozen=True)
class Limits:
    """Warning and critical levels of one rule (either may be None: that level never triggers)."""

    warning: float | None
    critical: float | None
    lower_is_worse: bool = False

    def severity(self, value: float) -> str:
        """ok, warning or critical for ``value``."""
        def over(level: float | None) -> bool:
            if level is None:
                return False
            return value <= level if self.lower_is_worse else value >= level

        if over(self.critical):
            return "critical"
        if over(self.warning):
            return "warning"
        return "ok"

    @property
    def shown(self) -> float | None:
        """The level quoted in messages: the warning one, else the critical one."""
        return self.warning if self.warning is not None else self.critical


def limits(rule: str, value: Threshold) -> Limits:
    """The two levels of ``rule`` from its configured value."""
    low = rule in LOWER_IS_WORSE
    if isinstance(value, Level):
        return Limits(value.warning, value.critical, low)
    if rule in _CRITICAL_FLOOR:
        return Limits(value, max(value, _CRITICAL_FLOOR[rule]), low)
    if rule in _CRITICAL_FACTOR:
        return Limits(value, value * _CRITICAL_FACTOR[rule], low)
    return Limits(value, None, low)


def _parse_variable(name: str, raw: str, unit: str) -> float:
    m = _NUMBER.fullmatch(raw)
    if m is None or (m.group(2) and m.group(2) != unit and not (unit == "ms" and m.group(2) == "s")):
        example = {"%": "80%", "ms": "2000ms"}[unit]
        raise ConfigError(f"{name}={raw!r}: must be a number like {example}", hint=f"fix or unset {name}")
    number = float(m.group(1))
    if m.group(2) == "s" and unit == "ms":
        number *= 1000
    if unit == "%" and number > 100:
        raise ConfigError(f"{name}={raw!r}: must be a percentage between 0 and 100", hint=f"fix or unset {name}")
    return number


def thresholds_for(monitoring: Monitoring, env: str | None, variables: Mapping[str, str]) -> dict[str, Limits]:
    """Every rule's limits for ``env`` (None: host-wide checks), variables applied; ConfigError names a bad one."""
    values: dict[str, Threshold] = {f.name: getattr(monitoring.thresholds, f.name)
                                    for f in dataclasses.fields(monitoring.thresholds)}
    override = monitoring.environments.get(env) if env else None
    if override is not None:
        for f in dataclasses.fields(override.thresholds):
            v = getattr(override.thresholds, f.name)
            if v is not None:
                values[f.name] = v
    for name, (rule, unit) in VARIABLES.items():
        raw = variables.get(name)
        if raw:
            values[rule] = _parse_variable(name, raw, unit)
    return {rule: limits(rule, v) for rule, v in values.items()}


def check_variables(variables: Mapping[str, str]) -> None:
    """Fail fast (exit 2) on a malformed threshold variable, before any check runs."""
    for name, (_rule, unit) in VARIABLES.items():
        if variables.get(name):
            _parse_variable(name, variables[name], unit)
