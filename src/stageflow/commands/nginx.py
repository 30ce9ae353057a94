"""nginx argv builders for a private instance (own prefix, config and pid file)."""

from __future__ import annotations

from pathlib import Path


def test_config(binary: str, prefix: Path, conf: Path) -> list[str]:
    """``nginx -t`` of a private instance."""
    return [binary, "-t", "-q", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]


def start(binary: str, prefix: Path, conf: Path) -> list[str]:
    """Start a private instance (daemonizes)."""
    return [binary, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]


def signal(binary: str, prefix: Path, conf: Path, sig: str) -> list[str]:
    """Send ``reload``/``quit``/``stop`` to a private instance."""
    return [binary, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf), "-s", sig]
