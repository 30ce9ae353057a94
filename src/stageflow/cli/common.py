"""Helpers shared by CLI modules: the root option, the console, error rendering."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from rich.console import Console

#: ``--root DIR`` shared by every command.
RootOpt = Annotated[
    Optional[Path],  # noqa: UP045 - Typer needs Optional on Python 3.11
    typer.Option("--root", help="App root holding stageflow.yml (default: search upwards from here)."),
]

_console: Console | None = None
_err_console: Console | None = None


def console() -> Console:
    """Rich console on stdout (created lazily: Rich costs import time)."""
    global _console
    if _console is None:
        from rich.console import Console

        # Scripts and CI capture output: give tables room instead of the 80-column fallback.
        _console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
    return _console


def err_console() -> Console:
    """Rich console on stderr."""
    global _err_console
    if _err_console is None:
        from rich.console import Console

        _err_console = Console(stderr=True, highlight=False, soft_wrap=True)
    return _err_console


def project_root(root: Path | None) -> Path:
    """Resolve ``--root`` or search upwards from the working directory for stageflow.yml."""
    from stageflow.config.loader import find_root

    return find_root(root)


def is_interactive() -> bool:
    """True when a person can answer a prompt."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def columns(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, the last one unpadded (``docker ps`` style)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip() + "\n"
        for row in rows
    )
