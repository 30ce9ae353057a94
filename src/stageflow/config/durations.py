"""Human durations: ``30s``, ``5m``, ``1h``, ``250ms`` or a bare number of seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from stageflow.config.checks import Check

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*\Z")


def parse_duration(value: Any) -> float:
    """Return seconds for ``value``; raise ValueError with the accepted forms otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m, 1h or 250ms")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    raise ValueError(f"expected a duration like 30s, 5m, 1h or 250ms, got {value!r}")


def format_duration(seconds: float) -> str:
    """Short human form of a number of seconds."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f}m"


Duration = Annotated[float, Check(parse_duration, before=True)]
