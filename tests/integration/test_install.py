"""Install as a Python user would, then the README's quick start, line by line, as a newcomer types it.

`pipx install .` from a fresh copy of this work tree builds the wheel and installs it into its own
virtualenv; the quick start then deploys a scratch copy of the example app to three environments
with that `stageflow` (not this checkout's), on free ports.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.app import App, teardown_app
from tests.support.docs import REPO, Shell, free_doc_ports, page_script, scratch_checkout

pytestmark = pytest.mark.e2e


@pytest.fixture
def newcomer(tmp_path: Path) -> Iterator[tuple[Shell, Path, dict[int, int]]]:
    """A scratch clone, a newcomer's shell, the port map; everything started is stopped afterwards."""
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        pytest.fail("nginx is not installed (scripts/bootstrap.sh --dev installs it)")
    ports = free_doc_ports()
    clone = scratch_checkout(tmp_path / "stageflow", ports)
    shell = Shell.make(tmp_path)
    yield shell, clone, ports
    app_root = shell.home / "myapp"
    if app_root.exists():
        teardown_app(App(app_root, {}))


def test_pipx_install_then_the_readme_quick_start_ends_with_three_healthy_environments(
    newcomer: tuple[Shell, Path, dict[int, int]],
) -> None:
    shell, clone, ports = newcomer
    script = page_script((clone / "README.md").read_text(), ports)
    assert "pipx install ." in script and "stageflow full" in script
    done = shell.run(script, cwd=clone)
    assert done.returncode == 0, done.stdout[-4000:]
    # The stageflow that ran is the one pipx installed, with its templates, outside this checkout.
    installed = shell.stageflow()
    assert installed.is_symlink() and REPO not in installed.resolve().parents
    version = subprocess.run([str(installed), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("stageflow ")
    assert "PROGRAM  " in done.stdout  # doctor's table
    app = shell.home / "myapp"
    rows = json.loads(subprocess.run([str(installed), "status", "--json"], cwd=app, env=shell.env,
                                     capture_output=True, text=True, check=True).stdout)
    assert {r["env"]: r["healthy"] for r in rows} == {"dev": True, "staging": True, "production": True}
    assert len({r["release"] for r in rows}) == 1
    urls = {r["env"]: r["url"] for r in rows}
    assert urls["dev"] == f"http://127.0.0.1:{ports[8001]}"
    assert oct((app / ".env.production").stat().st_mode & 0o777) == "0o600"


def test_the_wheel_carries_its_templates_and_works_from_a_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("stageflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"stageflow/{p.relative_to(REPO / 'src' / 'stageflow')}"
               for p in (REPO / "src" / "stageflow" / "templates").rglob("*") if p.is_file()}
    assert shipped and shipped <= names, sorted(shipped - names)
    assert "stageflow/py.typed" in names
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "stageflow = stageflow.cli.main:run" in zipfile.ZipFile(wheel).read(entry).decode()
    # pip install into any virtualenv: the console script works and finds its package data.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(wheel)],
                   check=True, capture_output=True, timeout=600)
    app = tmp_path / "app"
    shutil.copytree(REPO / "examples" / "practika", app, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
    setup = subprocess.run([str(venv / "bin" / "stageflow"), "config", "setup"], cwd=app, capture_output=True,
                           text=True, timeout=120)
    assert setup.returncode == 0, setup.stderr
    assert "template built-in production" in setup.stdout
    assert "SECURE_HSTS_SECONDS=" in (app / ".env.production").read_text()
