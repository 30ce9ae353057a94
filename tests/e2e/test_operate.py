"""Operating a deployed env on the local runtime: `exec`, `logs`, `restart` (the compose runtime's are
in test_compose_runtime.py)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.app import STAGEFLOW, App
from tests.support.load import Load

pytestmark = pytest.mark.e2e

CANARY = "canary-master-key-for-exec-7f3a"


def test_exec_logs_and_rolling_restart(practika: App) -> None:
    practika.sf("deploy", "dev")
    before = practika.status()["dev"]

    # exec: in the serving release with the env's variables, and nothing of stageflow's own.
    env = {**os.environ, "STAGEFLOW_MASTER_KEY": CANARY}
    out = subprocess.run([str(STAGEFLOW), "exec", "dev", "--", "python", "manage.py", "check"], cwd=practika.root,
                         capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert "System check identified no issues" in out.stdout + out.stderr
    seen = subprocess.run([str(STAGEFLOW), "exec", "dev", "--", "env"], cwd=practika.root, capture_output=True,
                          text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert seen.returncode == 0
    lines = seen.stdout.splitlines()
    assert f"STAGEFLOW_RELEASE={before['release']}" in lines and "STAGEFLOW_ENV=dev" in lines
    assert CANARY not in seen.stdout
    failing = practika.sf("exec", "dev", "--", "python", "-c", "raise SystemExit(3)", check=False)
    assert failing.returncode == 3  # the command's own exit code

    logs = practika.sf("logs", "dev", "backend", "-n", "50")
    assert f"--- {before['release']} starting as" in logs.stdout
    assert practika.sf("logs", "dev", "--since", "10m", check=False).returncode == 1  # one clear line
    # What the app printed reaches the console masked and with its control characters shown.
    secret = next(line.split("=", 1)[1].strip().strip("'\"") for line in (practika.root / ".env.dev").read_text()
                  .splitlines() if line.startswith("SECRET_KEY="))
    log = max((practika.root / ".stageflow" / "run" / "dev" / "logs").glob("backend-*.log"),
              key=lambda p: p.stat().st_mtime)
    with log.open("a") as fh:
        fh.write(f"settings dump: SECRET_KEY={secret} \x1b]2;owned\x07\n")
    shown = practika.sf("logs", "dev", "backend", "-n", "3")
    assert "settings dump: SECRET_KEY=" in shown.stdout and "\\x1b]2;owned\\x07" in shown.stdout
    assert secret not in shown.stdout and "\x1b" not in shown.stdout
    assert practika.sf("logs", "dev", "nope", check=False).returncode == 2

    # restart: new processes beside the old, gate, cutover, drain; no request fails.
    with Load(practika.ports["dev"], max_seconds=120) as load:
        practika.sf("restart", "dev")
    assert load.failures == [] and load.ok > 5, (load.ok, load.failures[:5])
    after = practika.status()["dev"]
    assert after["release"] == before["release"] and after["healthy"]
    dep = practika.last_deployment("dev")
    names = [s["name"] for s in dep["steps"]]
    assert dep["kind"] == "restart" and "migrate" not in names and {"start", "health", "cutover"} <= set(names)
