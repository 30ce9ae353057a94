"""``stageflow doctor`` against the real programs of this machine, and against a PATH that lacks some."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stageflow import doctor
from stageflow.config.models import Environment, ProjectConfig, Service
from stageflow.runner import Runner

STAGEFLOW = Path(sys.executable).parent / "stageflow"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "practika" / "stageflow.yml"


def _run(*args: str, cwd: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"PATH": path} if path is not None else {})}
    return subprocess.run([str(STAGEFLOW), "doctor", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def _app(tmp_path: Path, **changes: object) -> Path:
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cfg.update(changes)
    root = tmp_path / "app"
    root.mkdir(parents=True)
    (root / "stageflow.yml").write_text(yaml.safe_dump(cfg))
    return root


def test_outside_an_app_every_program_is_listed_with_the_version_it_reports(tmp_path: Path) -> None:
    out = _run("--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {r["tool"]: r for r in json.loads(out.stdout)}
    assert set(rows) == {t.name for t in doctor.TOOLS}
    assert rows["git"]["need"] == "required" and rows["git"]["status"] == "ok"
    git_version = subprocess.run(["git", "--version"], capture_output=True, text=True, check=True).stdout
    assert rows["git"]["version"] in git_version
    assert rows["python-venv"]["version"] == sys.version.split()[0]
    assert all(r["need"] == "optional" for name, r in rows.items() if name not in doctor.ALWAYS)
    human = _run(cwd=tmp_path)
    assert human.returncode == 0
    assert human.stdout.splitlines()[2].split() == ["PROGRAM", "STATUS", "VERSION", "NEED", "FOR"]


def test_an_app_on_postgres_without_the_client_tools_fails_with_the_install_line(tmp_path: Path) -> None:
    root = _app(tmp_path, database={"engine": "postgres", "password": "${POSTGRES_PASSWORD}"})
    only_git = tmp_path / "bin"
    only_git.mkdir()
    git = shutil.which("git")
    assert git
    (only_git / "git").symlink_to(git)
    out = _run(cwd=root, path=str(only_git))
    assert out.returncode == 1
    assert out.stderr.strip() == ("error: missing what this app needs: pg_dump, psql (install them with the "
                                  "lines above, then run 'stageflow doctor' again)")
    assert "  pg_dump: not found; install: apt-get install postgresql-client" in out.stdout
    table = {line.split()[0]: line.split()[1:4] for line in out.stdout.splitlines()[3:] if line[:1].isalpha()}
    assert table["pg_dump"] == ["missing", "-", "required"]
    assert table["docker"][2] == "unused"  # not needed by a local-runtime app: no install line for it
    assert "docker:" not in out.stdout


def test_nginx_required_when_the_app_says_on_and_the_binary_is_missing(tmp_path: Path) -> None:
    root = _app(tmp_path, nginx={"enabled": "on", "binary": str(tmp_path / "no-such-nginx")})
    out = _run("--json", cwd=root)
    assert out.returncode == 1
    rows = {r["tool"]: r for r in json.loads(out.stdout)}
    assert rows["nginx"] == {**rows["nginx"], "status": "missing", "need": "required",
                             "install": "apt-get install nginx"}
    auto = _app(tmp_path / "auto", nginx={"enabled": "auto", "binary": str(tmp_path / "no-such-nginx")})
    out = _run("--json", cwd=auto)
    assert out.returncode == 0  # auto: deploys still work, with downtime, so it is a recommendation
    assert {r["tool"]: r for r in json.loads(out.stdout)}["nginx"]["need"] == "recommended"


def test_a_broken_stageflow_yml_is_a_config_error(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    (root / "stageflow.yml").write_text("project: x\nservices: {}\nenvironments: {}\n")
    out = _run(cwd=root)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ")


def test_compose_environments_need_the_engine_and_compose() -> None:
    config = ProjectConfig(
        project="demo", services={"web": Service(command="x {port}", port=8000)},
        environments={"dev": Environment(url="http://127.0.0.1:8001"),
                      "production": Environment(url="https://example.com", runtime="compose")},
    )
    wanted = doctor.needs(config)
    assert wanted["docker"] == ("required", "compose runtime (production)")
    assert wanted["compose"][0] == "required"
    assert wanted["git"] == ("required", "local runtime (dev), compose runtime (production)")
    assert wanted["pg_dump"][0] == "unused"


@pytest.mark.skipif(shutil.which("docker") is None and not os.environ.get("CI"), reason="no docker CLI")
def test_docker_engine_is_probed_by_asking_the_daemon(tmp_path: Path) -> None:
    found = doctor.probe("docker", Runner())
    server = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                            text=True, timeout=20)
    if server.returncode == 0:
        assert found.verdict == "ok" and server.stdout.startswith(found.version)
    else:
        assert found.verdict == "broken" and "Engine does not answer" in found.detail
