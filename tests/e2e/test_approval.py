"""Production asks for confirmation on a real terminal (a pty); scripts proceed; --yes skips the question."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time

import pytest

from tests.support.app import STAGEFLOW, App

pytestmark = pytest.mark.e2e


def on_terminal(app: App, args: list[str], answer: str, timeout: float = 240) -> tuple[int, str]:
    """Run the CLI with a pty as its terminal, answer the first question, return (code, output)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(STAGEFLOW), *args], cwd=app.root, stdin=follower, stdout=follower,
                            stderr=follower, close_fds=True)
    os.close(follower)
    out = b""
    answered = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            if not answered and b"[y/N]" in out:
                os.write(leader, answer.encode() + b"\n")
                answered = True
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=30)
    os.close(leader)
    return code, out.decode(errors="replace")


def test_terminal_no_means_nothing_changes_yes_deploys(practika: App) -> None:
    code, out = on_terminal(practika, ["deploy", "production"], "n")
    assert code == 1, out
    assert "Deploy to production" in out and "not confirmed" in out
    assert practika.status()["production"]["release"] is None
    code, out = on_terminal(practika, ["deploy", "prod"], "y")
    assert code == 0, out
    assert practika.status()["production"]["healthy"] is True
    # from a script (no terminal) the same command proceeds without a question
    practika.touch_commit()
    scripted = practika.sf("deploy", "production")
    assert "[y/N]" not in scripted.stdout


def test_full_on_a_terminal_asks_every_question_before_the_first_deploy(practika: App) -> None:
    code, out = on_terminal(practika, ["full"], "n")
    assert code == 1, out
    assert "Deploy to production" in out and "not confirmed" in out and "nothing was changed" in out
    assert all(row["release"] is None for row in practika.status().values())  # dev and staging untouched
    audit = json.loads(practika.sf("history", "--audit", "--json").stdout)
    assert any(e["outcome"] == "refused" and "not confirmed" in e["detail"] for e in audit)
