"""Class 5: hostile input sizes end in exit 2 and one line, within seconds and a bounded amount of memory."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.hardening.support import one_clear_line
from tests.support.app import STAGEFLOW
from tests.support.compose import write_practika_project

BASE = "project: bomb\nservices: {web: {command: 'run {port}', port: 8000}}\nenvironments: {dev: {url: 'http://127.0.0.1:8001'}}\n"
MEASURE = ("import resource, subprocess, sys\n"
           "p = subprocess.run(sys.argv[1:], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)\n"
           "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr)\n"
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
           "sys.exit(p.returncode)\n")


def measured(root: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float, int]:
    """Run the CLI; return its result (stderr without the measure line), seconds and peak RSS in KB."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(STAGEFLOW), *args], cwd=root, capture_output=True,
                          text=True, timeout=90, stdin=subprocess.DEVNULL)
    took = time.monotonic() - t0
    *err, rss = proc.stderr.rstrip("\n").split("\n")
    proc.stderr = "\n".join(err) + "\n"
    return proc, took, int(rss)


def project(tmp_path: Path, text: str | bytes) -> Path:
    root = tmp_path / "app"
    root.mkdir()
    (root / "stageflow.yml").write_bytes(text.encode() if isinstance(text, str) else text)
    (root / ".stageflow").mkdir()  # a cache could be written: it must not be
    return root


BOMBS = {
    "one MB string 5000 times": BASE + "x: &s " + "a" * 1_000_000 + "\ny: [" + ", ".join(["*s"] * 5000) + "]\n",
    "200 aliases of a big string": BASE + "x: &s " + "a" * 400_000 + "\n"
    + "".join(f"k{i}: *s\n" for i in range(200)),
    "billion laughs": BASE + "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)),
    "recursive alias": BASE + "x: &r [*r]\n",
    "deep nesting": BASE + "x: " + "[" * 5000 + "]" * 5000 + "\n",
    "two MB of unknown keys": BASE + "".join(f"unknown_{i:07d}: {'v' * 40}\n" for i in range(40_000)),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_project_file_bombs_are_refused_quickly_and_small(tmp_path: Path, name: str) -> None:
    root = project(tmp_path, BOMBS[name])
    proc, took, rss_kb = measured(root, "config", "validate", "dev", "--no-django-check")
    one_clear_line(proc, 2, "stageflow.yml")
    assert took < 10, took  # generous for a shared machine; ~0.5 s alone
    assert rss_kb < 150_000, rss_kb
    cache = root / ".stageflow" / "cache" / "config.json"
    assert not cache.exists() or cache.stat().st_size < 1_000_000


def test_a_project_file_that_is_a_fifo_or_a_device_link_is_refused(tmp_path: Path) -> None:
    write_practika_project(tmp_path / "app")
    root = tmp_path / "app"
    (root / "stageflow.yml").unlink()
    os.symlink("/dev/zero", root / "stageflow.yml")
    proc, took, _ = measured(root, "status", "--root", str(root))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and took < 10
    (root / "stageflow.yml").unlink()
    os.mkfifo(root / "stageflow.yml")
    proc, took, _ = measured(root, "status", "--root", str(root))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and took < 10


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "too-big", "dev-urandom"])
def test_env_files_that_never_end_or_block_are_refused(tmp_path: Path, kind: str) -> None:
    root = write_practika_project(tmp_path / "app")
    env = root / ".env.dev"
    env.unlink()
    if kind == "fifo":
        os.mkfifo(env)
    elif kind == "dev-zero":
        os.symlink("/dev/zero", env)
    elif kind == "dev-urandom":
        os.symlink("/dev/urandom", env)
    else:
        env.write_text("A=" + "x" * (2 << 20) + "\n")
    opened = threading.Event()
    if kind == "fifo":
        # Were the FIFO opened for reading, this writer would unblock it and then hang it forever.
        def writer() -> None:
            try:
                fd = os.open(env, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                return
            opened.set()
            os.close(fd)
        threading.Thread(target=writer, daemon=True).start()
    for args in (("status", "dev"), ("config", "validate", "dev", "--no-django-check")):
        proc, took, rss_kb = measured(root, *args)
        assert proc.returncode in (1, 2), (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr + proc.stdout
        assert ".env.dev" in proc.stderr + proc.stdout
        assert took < 10 and rss_kb < 150_000, (took, rss_kb)
