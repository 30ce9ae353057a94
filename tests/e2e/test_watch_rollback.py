"""Failure after cutover: a release that passes the health gate and then turns unhealthy during the
watch period is rolled back automatically, and the previous release serves again.

The app is a tiny real HTTP server (no requirements file, so no virtualenv) whose release can carry a
`flip` file: such a release answers 200 at first and 503 from 1.5 s after it started.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.app import STAGEFLOW, App, teardown_app
from tests.support.tiny import make_tiny

pytestmark = pytest.mark.e2e

@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[App]:
    app = make_tiny(tmp_path, watch="4s", drain="2s")
    yield app
    teardown_app(app)


def test_unhealthy_during_watch_rolls_back_to_previous(tiny: App) -> None:
    tiny.sf("deploy", "staging", "--skip-check", "config")
    good = tiny.status()["staging"]["release"]
    (tiny.root / "flip").write_text("1")
    tiny.commit("turns unhealthy after start")
    failed = tiny.sf("deploy", "staging", "--skip-check", "config", check=False)
    assert failed.returncode == 1
    assert "watch period" in failed.stderr and "HTTP 503" in failed.stderr
    r = httpx.get(f"http://127.0.0.1:{tiny.ports['staging']}/health/", timeout=5)
    assert r.status_code == 200 and r.json()["version"] == good
    dep = tiny.last_deployment("staging")
    names = [s["name"] for s in dep["steps"]]
    assert names.index("cutover") < names.index("watch") < names.index("rollback")
    rollback = next(s for s in dep["steps"] if s["name"] == "rollback")
    assert "traffic back on" in rollback["detail"] and good in rollback["detail"]
    assert tiny.status()["staging"]["release"] == good
    # the skipped check is in the audit trail
    audit = json.loads(tiny.sf("history", "--audit", "--json").stdout)
    assert any(e["outcome"] == "skip-check" and "config" in e["detail"] for e in audit)
    assert subprocess.run([str(STAGEFLOW), "lock", "status"], cwd=tiny.root, capture_output=True,
                          text=True, check=True).stdout.strip() == "staging: unlocked"
