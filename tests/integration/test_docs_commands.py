"""The getting-started and runbook pages, run block by block as a newcomer types them.

Getting started installs stageflow with pipx, deploys a scratch copy of the example app and a plain
WSGI app written from the page; the runbook then runs its procedures against that example app.
Blocks are marked ``<!-- run -->`` / ``<!-- file: NAME -->`` on the pages (see tests/support/docs.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.app import App, teardown_app
from tests.support.docs import Shell, free_doc_ports, page_script, scratch_checkout

pytestmark = pytest.mark.e2e


@pytest.fixture
def newcomer(tmp_path: Path) -> Iterator[tuple[Shell, Path, dict[int, int]]]:
    """A scratch clone and a newcomer's shell; every app the pages started is stopped afterwards."""
    ports = free_doc_ports()
    clone = scratch_checkout(tmp_path / "stageflow", ports)
    shell = Shell.make(tmp_path)
    yield shell, clone, ports
    for name in ("practika", "hello"):
        if (shell.home / name / "stageflow.yml").exists():
            teardown_app(App(shell.home / name, {}))


def test_getting_started_then_the_runbook_run_as_written(newcomer: tuple[Shell, Path, dict[int, int]]) -> None:
    shell, clone, ports = newcomer
    started = shell.run(page_script((clone / "docs" / "getting-started.md").read_text(), ports), cwd=clone)
    assert started.returncode == 0, started.stdout[-5000:]
    out = started.stdout
    assert '"status": "ok"' in out  # the curl lines printed the health answers
    assert out.count("promoted ") == 2  # Practika and the WSGI app both went through every environment
    assert "rolled back dev to " in out
    runbook = shell.run(page_script((clone / "docs" / "operations" / "runbook.md").read_text(), ports), cwd=clone)
    assert runbook.returncode == 0, runbook.stdout[-5000:]
    out = runbook.stdout
    assert "rolled back staging to " in out
    assert "staging: unlocked" in out
    # the last block stopped everything: status says so for every environment
    assert out.rstrip().splitlines()[-1].split()[:3] == ["production", "-", "stopped"]
