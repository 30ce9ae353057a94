"""Helpers for the hostile-input tests: run the real CLI, check the one-line verdict, plant bait."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.app import STAGEFLOW


def run(root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60,
        ) -> subprocess.CompletedProcess[str]:
    """The real CLI in ``root`` (no stdin), its output captured."""
    full = {**os.environ, **(env or {})}
    full.pop("STAGEFLOW_MASTER_KEY", None)
    return subprocess.run([str(STAGEFLOW), *args], cwd=root, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=full)


def one_clear_line(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """Exit ``code``, one ``error:`` line on stderr holding every needle, no traceback; the line."""
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert "unexpected" not in proc.stderr, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: "), err
    for n in needles:
        assert n in err, (n, err)
    return err


@dataclass
class Bait:
    """A file outside the app that hostile content points at; it must stay byte- and mode-identical."""

    path: Path
    content: bytes
    mode: int

    @classmethod
    def plant(cls, directory: Path, name: str = "precious.txt", mode: int = 0o600) -> Bait:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        content = f"do not touch {name} {time.time_ns()}\n".encode()
        path.write_bytes(content)
        path.chmod(mode)
        return cls(path, content, mode)

    def untouched(self) -> None:
        assert self.path.is_file() and not self.path.is_symlink()
        assert self.path.read_bytes() == self.content, "the file outside the app was overwritten"
        assert self.path.stat().st_mode & 0o777 == self.mode, "the file outside the app changed mode"
