"""One command's working context: project root, state store, workflow log, runner, audit identity."""

from __future__ import annotations

import getpass
import os
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from stageflow.masking import masker
from stageflow.runner import Runner
from stageflow.state.store import Store


class WorkflowLog:
    """``logs/workflow_<timestamp>.log``: every line ISO-8601 timestamped and masked.

    The file is opened lazily so read-only commands that log nothing leave no empty file.
    """

    def __init__(self, logs_dir: Path, echo: Callable[[str], None] | None = None, *, readonly: bool = False) -> None:
        self.dir = logs_dir
        self.echo = echo
        #: a read-only command (status, --dry-run) echoes but writes no file
        self.readonly = readonly
        self.path = logs_dir / f"workflow_{datetime.now(UTC).strftime('%Y%m%d_%H%M%S_%f')}.log"
        self._fh: TextIO | None = None
        self._lock = threading.Lock()

    def write(self, message: str, *, level: str = "INFO", echo: bool = True) -> None:
        """Append one masked, timestamped line (several for multi-line messages); echo to the console."""
        text = masker.mask(message)
        if self.readonly:
            if self.echo and echo:
                self.echo(text)
            return
        with self._lock:
            if self._fh is None:
                from stageflow.fsutil import open_append

                # 0600 in a 0700 logs/: a workflow log names hosts, users and commands.
                self._fh = os.fdopen(open_append(self.path, root=self.dir.parent), "a", encoding="utf-8")
            ts = datetime.now(UTC).isoformat(timespec="milliseconds")
            for line in text.splitlines() or [""]:
                self._fh.write(f"{ts} {level:<5} {line}\n")
            self._fh.flush()
        if self.echo and echo:
            self.echo(text)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._fh:
                self._fh.close()
                self._fh = None


def actor(root: Path | None = None) -> str:
    """Who runs this command: git user.name, else the login name."""
    import subprocess

    name = os.environ.get("GIT_AUTHOR_NAME") or os.environ.get("SUDO_USER")
    if name:
        return name
    try:
        out = subprocess.run(
            ["git", "config", "user.name"], cwd=root, capture_output=True, text=True, timeout=5, check=False
        )
        if out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


@dataclass
class Workspace:
    """Shared by every use case of one CLI invocation."""

    root: Path
    command: str = field(default_factory=lambda: " ".join(["stageflow", *sys.argv[1:]]))
    echo: Callable[[str], None] | None = None
    #: read-only commands (status, history, --dry-run) create no state database and no log file
    readonly: bool = False
    _store: Store | None = None
    _log: WorkflowLog | None = None
    _actor: str | None = None

    @property
    def state_dir(self) -> Path:
        """``.stageflow`` under the project root."""
        return self.root / ".stageflow"

    @property
    def store(self) -> Store:
        """The state store (opened on first use)."""
        if self._store is None:
            path = self.state_dir / "state.db"
            self._store = Store.empty(path) if self.readonly and not path.exists() else Store(path)
        return self._store

    @property
    def log(self) -> WorkflowLog:
        """This command's workflow log."""
        if self._log is None:
            self._log = WorkflowLog(self.root / "logs", self.echo, readonly=self.readonly)
        return self._log

    @property
    def runner(self) -> Runner:
        """A runner that logs every command into the workflow log."""
        return Runner(log=lambda line: self.log.write(line, level="CMD", echo=False))

    @property
    def actor(self) -> str:
        """Audit identity (looked up once)."""
        if self._actor is None:
            self._actor = actor(self.root)
        return self._actor

    @property
    def host(self) -> str:
        """This machine's name."""
        return socket.gethostname()

    def audit(self, env: str | None, outcome: str, detail: str = "") -> None:
        """Record an audit event for this command."""
        self.store.add_event(self.actor, self.host, self.command, env, outcome, detail)

    def close(self) -> None:
        """Release files and connections."""
        if self._log:
            self._log.close()
        if self._store:
            self._store.close()
