"""Run the command blocks of a Markdown page as a newcomer would type them.

A page marks what it means to be run: ``<!-- run -->`` before a ```bash block (every line is
run, in order, in one shell per page, stopping at the first failure), and ``<!-- file: NAME -->``
before a block whose content the reader saves as NAME in the current directory. The only
liberties taken: the documented ports become free ones, HOME is a scratch directory, and the
stageflow checkout is a scratch copy of this work tree.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- (?P<mark>run|file: [^>]+?) -->\n```\w*\n(?P<body>.*?)```", re.S)
#: Every port the runnable pages use (Practika's three, the plain WSGI app's two).
DOC_PORTS = (8001, 8002, 8443, 8101, 8102)


def page_script(text: str, ports: dict[int, int]) -> str:
    """The page's runnable blocks as one bash script (files written with quoted heredocs)."""
    parts = ["set -euo pipefail", "set -x"]
    for m in BLOCK.finditer(text):
        body = _ports(m["body"], ports)
        if m["mark"] == "run":
            parts.append(body.rstrip("\n"))
        else:
            name = m["mark"].removeprefix("file: ").strip()
            parts.append(f"cat > '{name}' <<'__STAGEFLOW_DOC_EOF__'\n{body}__STAGEFLOW_DOC_EOF__")
    assert len(parts) > 2, "no runnable block on the page"
    return "\n".join(parts) + "\n"


def _ports(text: str, ports: dict[int, int]) -> str:
    return re.sub(r"(?<=127\.0\.0\.1:)(\d+)", lambda m: str(ports.get(int(m[1]), m[1])), text)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_doc_ports() -> dict[int, int]:
    """A free port for each documented one, such that +10000 and +20000 (the default blue/green slots) are free too.

    Drawn below the kernel's ephemeral range (32768 and up), where outgoing connections (and the other
    tests' ``free_port()``) take theirs, so nothing grabs one between the choice and nginx's bind.
    """
    chosen: dict[int, int] = {}
    rng = random.Random()
    taken: set[int] = set()
    for doc_port in DOC_PORTS:
        while True:
            p = rng.randrange(10000, 12768)
            trio = {p, p + 10000, p + 20000}
            if not trio & taken and all(_free(q) for q in trio):
                chosen[doc_port] = p
                taken |= trio
                break
    return chosen


def scratch_checkout(dest: Path, ports: dict[int, int]) -> Path:
    """A copy of this work tree as a fresh clone would have it (tracked and new files, nothing ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    example = dest / "examples" / "practika" / "stageflow.yml"
    example.write_text(_ports(example.read_text(), ports))
    return dest


_KEEP = ("LANG", "LC_ALL", "TZ", "TMPDIR", "CI", "USER", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")


@dataclass
class Shell:
    """A newcomer's shell: scratch HOME with a git identity, PATH without this checkout's venv."""

    home: Path
    tools: Path

    @classmethod
    def make(cls, base: Path) -> Shell:
        """HOME and a tools directory holding only pipx (what `pip install --user pipx` would give)."""
        home, tools = base / "home", base / "tools"
        home.mkdir()
        tools.mkdir()
        (home / ".gitconfig").write_text("[user]\n\tname = Newcomer\n\temail = newcomer@localhost\n"
                                         "[init]\n\tdefaultBranch = main\n")
        (tools / "pipx").symlink_to(Path(sys.executable).parent / "pipx")
        return cls(home, tools)

    @property
    def env(self) -> dict[str, str]:
        """The environment the page's commands run with."""
        # What a newcomer's shell on this machine has too: locale, and how pip and TLS reach the registry.
        keep = {k: v for k, v in os.environ.items()
                if k in _KEEP or k.startswith("PIP_") or k.lower() in ("http_proxy", "https_proxy", "no_proxy")}
        real_home = Path(os.environ.get("HOME", "/root"))
        return {
            **keep,
            "HOME": str(self.home),
            "PATH": f"{self.home}/.local/bin:{self.tools}:/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
            # The machine's package caches stay where they are: the same downloads, not a new one per test.
            "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(real_home / ".cache" / "pip")),
        }

    def run(self, script: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run ``script`` with bash in ``cwd``; stdout and stderr interleaved in ``stdout``."""
        return subprocess.run(["bash", "-c", script], cwd=cwd, env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def stageflow(self) -> Path:
        """The stageflow the page installed with pipx."""
        return self.home / ".local" / "bin" / "stageflow"
