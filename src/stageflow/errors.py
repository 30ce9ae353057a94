"""Error types shared by every layer.

The CLI maps them to exit codes: :class:`UsageError` and :class:`ConfigError` exit 2,
:class:`OperationError` exits 1. Messages are one line naming the problem and the fix.
"""

from __future__ import annotations


class StageflowError(Exception):
    """Base class for errors that the CLI reports as one clear line."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class UsageError(StageflowError):
    """The command line itself is wrong (unknown environment, bad option value)."""

    exit_code = 2


class ConfigError(StageflowError):
    """The project configuration or an env file is missing or invalid."""

    exit_code = 2


class OperationError(StageflowError):
    """An operation was attempted and failed (deploy, backup, health check, ...)."""

    exit_code = 1


class LockHeldError(OperationError):
    """Another live process holds the environment lock."""
