"""Class 10: app env templates render sandboxed; ``nginx.binary`` must be an executable file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from tests.hardening.support import Bait, one_clear_line, run
from tests.support.app import git
from tests.support.compose import write_practika_project

ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.system('touch pwned') }}",
    "{{ secret.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{% set x = [].append(1) %}{{ x }}",
    "{{ lipsum.__globals__['os'].popen('touch pwned').read() }}",
]


@pytest.mark.parametrize("body", ESCAPES)
def test_template_cannot_reach_python_internals(tmp_path: Path, body: str) -> None:
    root = write_practika_project(tmp_path / "app")
    (root / ".env.dev").unlink()
    tpl = root / "config" / "templates"
    tpl.mkdir(parents=True)
    (tpl / "dev.env.j2").write_text(
        '{% extends "builtin/dev.env.j2" %}\n{% block extra %}X=' + body + "\n{% endblock %}\n")
    proc = run(root, "config", "generate", "dev")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "config/templates/dev.env.j2" in proc.stderr
    assert not list(tmp_path.rglob("pwned"))
    assert not (root / ".env.dev").exists()


def test_a_harmless_app_template_still_renders(tmp_path: Path) -> None:
    root = write_practika_project(tmp_path / "app")
    (root / ".env.dev").unlink()
    tpl = root / "config" / "templates"
    tpl.mkdir(parents=True)
    (tpl / "dev.env.j2").write_text('{% extends "builtin/dev.env.j2" %}\n{% block extra %}'
                                    'GREETING={{ ("hi " ~ env) | upper | q }}\n{% endblock %}\n')
    assert run(root, "config", "generate", "dev").returncode == 0
    assert 'GREETING="HI DEV"' in (root / ".env.dev").read_text()


def _nginx_binary(tmp_path: Path, binary: str) -> Path:
    root = write_practika_project(tmp_path / "app")
    cfg = yaml.safe_load((root / "stageflow.yml").read_text())
    cfg["nginx"] = {"enabled": "on", "binary": binary}
    (root / "stageflow.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "x")
    return root


@pytest.mark.parametrize("kind", ["missing", "not-executable", "directory", "fifo", "relative-missing"])
def test_nginx_binary_must_be_an_executable_file(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "bin" / "nginx"
    target.parent.mkdir()
    binary = str(target)
    if kind == "not-executable":
        target.write_text("#!/bin/sh\ntouch pwned\n")
        target.chmod(0o644)
    elif kind == "directory":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "relative-missing":
        binary = "./tools/nginx"
    root = _nginx_binary(tmp_path, binary)
    for args in (("deploy", "dev", "--dry-run"), ("deploy", "dev")):
        one_clear_line(run(root, *args), 2, "nginx.binary")
    assert not list(tmp_path.rglob("pwned"))
    assert not (root / ".stageflow" / "releases").exists()


def test_an_executable_nginx_binary_is_accepted(tmp_path: Path) -> None:
    bait = Bait.plant(tmp_path / "bin", "nginx", mode=0o755)
    bait.path.write_text("#!/bin/sh\nexit 0\n")
    bait.path.chmod(stat.S_IRWXU)
    root = _nginx_binary(tmp_path, str(bait.path))
    proc = run(root, "deploy", "dev", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "point nginx upstream" in proc.stdout
