"""Validator markers for the config dataclasses, readable by pydantic without importing it here.

The config sections are plain dataclasses so that a command served from the validated-config cache
never imports pydantic (its import and schema build cost ~300 ms of CLI start-up). pydantic finds
these markers in ``Annotated`` metadata when it validates, through ``__get_pydantic_core_schema__``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Check:
    """Run ``fn`` on a field's value: after pydantic's own type check, or before it (``before=True``).

    ``fn`` raises ValueError with a message for the user, or returns the (possibly normalised) value.
    Checks marked ``recheck`` run again after ``${VAR}`` substitution (they let references through).
    """

    __slots__ = ("before", "fn", "recheck")

    def __init__(self, fn: Callable[[Any], Any], *, before: bool = False, recheck: bool = False) -> None:
        self.fn = fn
        self.before = before
        self.recheck = recheck

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        """pydantic hook: wrap the field's schema with ``fn``."""
        from pydantic_core import core_schema

        if self.before:
            return core_schema.no_info_before_validator_function(self.fn, handler(source))
        return core_schema.no_info_after_validator_function(self.fn, handler(source))


class Bounds:
    """Numeric limits (``ge``, ``le``, ``gt``) that pydantic enforces with its own messages."""

    __slots__ = ("limits",)

    def __init__(self, **limits: float) -> None:
        self.limits = limits

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        """pydantic hook: int and float schemas take these limits natively."""
        schema = handler(source)
        schema.update(self.limits)
        return schema
