"""Class 9: what stageflow creates under .stageflow/, logs/ and data/ is private (0600 files, 0700 dirs)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stageflow.fsutil import PRIVATE, PRIVATE_DIR, create_private, make_dirs, narrow_mode, open_append, write_file
from tests.support.app import App, make_app, teardown_app


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o002)  # a group-writable umask must not leak into anything stageflow makes
    yield
    os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def test_the_writer_creates_private_files_and_dirs_whatever_the_umask(tmp_path: Path, loose_umask: None) -> None:
    root = tmp_path / "app"
    root.mkdir()
    write_file(root / ".stageflow" / "run" / "dev" / "x.json", "{}", root=root, mode=PRIVATE)
    fd = open_append(root / "logs" / "workflow_1.log", root=root)
    os.close(fd)
    create_private(root / ".stageflow" / "state.db", root=root)
    make_dirs(root / "data", root=root)
    for d in (".stageflow", ".stageflow/run", ".stageflow/run/dev", "logs", "data"):
        assert mode(root / d) == PRIVATE_DIR, d
    for f in (".stageflow/run/dev/x.json", "logs/workflow_1.log", ".stageflow/state.db"):
        assert mode(root / f) == PRIVATE, f


def test_existing_loose_logs_are_narrowed_never_widened(tmp_path: Path) -> None:
    root = tmp_path / "app"
    (root / "logs").mkdir(parents=True)
    loose, tight = root / "logs" / "a.log", root / "logs" / "b.log"
    loose.write_text("x")
    loose.chmod(0o644)
    tight.write_text("y")
    tight.chmod(0o400)
    os.close(open_append(loose, root=root))
    narrow_mode(tight, 0o600, root=root)
    assert mode(loose) == 0o600 and mode(tight) == 0o400
    os.symlink("/etc/hostname", root / "logs" / "link.log")
    narrow_mode(root / "logs" / "link.log", 0o600, root=root)  # never through a link
    assert mode(Path("/etc/hostname")) == mode(Path("/etc/hostname").resolve())


@pytest.fixture
def traversable_app() -> Iterator[App]:
    """Practika where other users can reach it (pytest's own temp root is 0700): nginx's workers
    run as nobody when stageflow runs as root, and must reach their temp directories."""
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        pytest.fail("nginx is not installed") if os.environ.get("CI") else pytest.skip("nginx is not installed")
    base = Path(tempfile.mkdtemp(prefix="stageflow-perm-"))
    base.chmod(0o711)
    app = make_app(base)
    try:
        yield app
    finally:
        teardown_app(app)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.e2e
def test_a_deploy_leaves_nothing_readable_by_others(traversable_app: App, loose_umask: None) -> None:
    practika = traversable_app
    root = practika.root
    practika.sf("deploy", "dev")
    practika.sf("status")
    files = [root / ".stageflow" / "state.db", root / ".stageflow" / "cache" / "config.json",
             root / ".stageflow" / "nginx" / "dev" / "access.log", root / ".stageflow" / "nginx" / "dev" / "error.log",
             root / ".stageflow" / "nginx" / "dev" / "nginx.conf", root / "data" / "practica_dev.sqlite3",
             *(root / ".stageflow" / "run" / "dev").glob("*.json"),
             *(root / ".stageflow" / "run" / "dev" / "logs").glob("*.log"), *(root / "logs").glob("*.log")]
    for f in files:
        assert f.exists(), f
        assert mode(f) & 0o077 == 0, (f, oct(mode(f)))
    for d in (root / ".stageflow" / "releases", root / ".stageflow" / "run", root / "logs", root / "data",
              root / ".stageflow" / "venvs" if (root / ".stageflow" / "venvs").exists() else root / "data"):
        assert mode(d) & 0o077 == 0, (d, oct(mode(d)))
    state = mode(root / ".stageflow")
    assert state & 0o066 == 0, oct(state)  # at most traversable (nginx workers reach their temp dir)
    # Private directories must not break the proxy: a request body big enough to be buffered to
    # nginx's client_body temp directory still gets an answer from the app, not a 500 from nginx.
    # (A 502 is the app closing before it read the whole body, a race of its own: what this checks is
    # that nginx buffered the body to its temp directory, and its error log says so without a [crit].)
    r = httpx.post(practika.url("dev", "/health/"), content=b"x" * 900_000, timeout=10)
    errors = (root / ".stageflow" / "nginx" / "dev" / "error.log").read_text()
    assert "request body is buffered to a temporary file" in errors, errors[-2000:]
    assert "[crit]" not in errors and "Permission denied" not in errors, errors[-2000:]
    assert r.status_code != 500, r.status_code
