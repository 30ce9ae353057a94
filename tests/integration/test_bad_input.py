"""Bad input: one clear line, exit 2 (usage/config) or 1 (operation), and nothing changed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from stageflow.config.envfile import read_env_file, write_env_file
from tests.support.app import EXAMPLE, STAGEFLOW, App, git, make_app


def run(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([str(STAGEFLOW), *args], cwd=root, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def one_clear_line(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    for n in needles:
        assert n in err, (n, err)


@pytest.fixture
def app(tmp_path: Path) -> App:
    return make_app(tmp_path)


def nothing_deployed(app: App) -> None:
    releases = app.root / ".stageflow" / "releases"
    assert not releases.exists() or not [p for p in releases.iterdir() if not p.name.startswith(".")]
    assert not (app.root / ".stageflow" / "run").exists()


def test_malformed_yaml_names_file_and_line(app: App) -> None:
    cfg = app.root / "stageflow.yml"
    cfg.write_text(cfg.read_text() + "\nenvironments: [oops\n")
    one_clear_line(run(app.root, "deploy", "dev"), 2, "stageflow.yml:", "fix the YAML")
    nothing_deployed(app)


def test_unknown_key_names_key_path(app: App) -> None:
    cfg = app.root / "stageflow.yml"
    cfg.write_text(cfg.read_text().replace("  staging:\n", "  staging:\n    colour: blue\n", 1))
    one_clear_line(run(app.root, "status"), 2, "environments.staging.colour", "unknown key")


def test_wrong_type_names_key_path(app: App) -> None:
    cfg = app.root / "stageflow.yml"
    cfg.write_text(cfg.read_text().replace("keep: 10", "keep: lots"))
    one_clear_line(run(app.root, "deploy", "dev"), 2, "backups.keep")


def test_bad_url_and_duration(app: App) -> None:
    cfg = app.root / "stageflow.yml"
    text = cfg.read_text()
    cfg.write_text(text.replace("watch: 1s", "watch: soon", 1))
    one_clear_line(run(app.root, "status"), 2, "watch", "duration")
    cfg.write_text(text.replace(f"url: http://127.0.0.1:{app.ports['dev']}", "url: ftp://x"))
    one_clear_line(run(app.root, "status"), 2, "environments.dev.url", "http(s) URL")


def test_bad_url_port_health_shorthand_and_command_without_port(app: App) -> None:
    cfg = app.root / "stageflow.yml"
    text = cfg.read_text()
    cfg.write_text(text.replace(f"url: http://127.0.0.1:{app.ports['dev']}", "url: http://127.0.0.1:99301"))
    one_clear_line(run(app.root, "status"), 2, "environments.dev.url", "between 1 and 65535")
    one_clear_line(run(app.root, "deploy", "dev"), 2, "environments.dev.url")
    cfg.write_text(text.replace("--bind {host}:{port}", ""))
    one_clear_line(run(app.root, "config", "validate", "dev"), 2, "services.backend", "must contain {port}")
    # `health: /path` is short for `health: {path: /path}`; a wrong shape says what is expected
    import yaml

    data = yaml.safe_load(text)
    data["services"]["backend"]["health"] = "/healthz/"
    cfg.write_text(yaml.safe_dump(data))
    assert run(app.root, "status").returncode == 0
    from stageflow.config.loader import load_project

    assert load_project(app.root).web_service[1].health.path == "/healthz/"  # type: ignore[union-attr]
    data["services"]["backend"]["health"] = 5
    cfg.write_text(yaml.safe_dump(data))
    one_clear_line(run(app.root, "status"), 2, "services.backend.health", "must be a path like /health/")
    nothing_deployed(app)


def test_unknown_environment_lists_known_ones(app: App) -> None:
    one_clear_line(run(app.root, "deploy", "qa"), 2, "unknown environment 'qa'", "production (prod)")
    one_clear_line(run(app.root, "rollback", "qa"), 2, "unknown environment")
    nothing_deployed(app)


@pytest.mark.parametrize("name", ["dev;touch pwned", "$(touch pwned)", "../etc", "dev`id`", "-rf"])
def test_env_names_with_shell_metacharacters(app: App, name: str) -> None:
    proc = run(app.root, "deploy", "--", name) if name.startswith("-") else run(app.root, "deploy", name)
    one_clear_line(proc, 2, "invalid environment name")
    assert not (app.root / "pwned").exists()
    nothing_deployed(app)


def test_prod_alias_resolves(app: App) -> None:
    proc = run(app.root, "deploy", "prod", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "Plan for production" in proc.stdout


def test_missing_git_repo(tmp_path: Path) -> None:
    root = tmp_path / "nogit"
    shutil.copytree(EXAMPLE, root)
    (root / ".env.dev").write_text('SECRET_KEY="abcdefghijklmnopqrstuvwxyz0123456789abcdefghijkl"\n')
    one_clear_line(run(root, "deploy", "dev"), 2, "not a git repository", "git init")
    assert not (root / ".stageflow").exists()


def test_no_project_file(tmp_path: Path) -> None:
    one_clear_line(run(tmp_path, "status"), 2, "no stageflow.yml")


def test_missing_required_secret(app: App) -> None:
    (app.root / ".env.staging").write_text('DEBUG="0"\n')
    one_clear_line(run(app.root, "deploy", "staging"), 2, "SECRET_KEY", ".env.staging")
    nothing_deployed(app)


def test_missing_interpolated_variable_and_shell_override(app: App) -> None:
    cfg = app.root / "stageflow.yml"
    token = '    variables: {API_TOKEN: "${API_TOKEN}"}\n'
    cfg.write_text(cfg.read_text().replace("  production:\n", "  production:\n" + token, 1))
    git(app.root, "commit", "-qam", "token")
    one_clear_line(run(app.root, "deploy", "production"), 2, "API_TOKEN", "not set", ".env.production")
    # other environments do not care about production's variables
    assert run(app.root, "deploy", "dev", "--dry-run").returncode == 0
    ok = run(app.root, "deploy", "production", "--dry-run", env={"API_TOKEN": "from-the-shell-123"})
    assert ok.returncode == 0, ok.stderr


def test_placeholder_secret_fails_preflight_before_any_change(app: App) -> None:
    values = read_env_file(app.root / ".env.dev")
    values["SECRET_KEY"] = "changeme"
    write_env_file(app.root / ".env.dev", values)
    proc = run(app.root, "deploy", "dev")
    one_clear_line(proc, 1, "pre-flight failed", "config", "placeholder")
    assert "changeme" not in proc.stdout + proc.stderr
    nothing_deployed(app)


def test_dirty_tree_fails_production_warns_dev(app: App) -> None:
    (app.root / "manage.py").write_text((app.root / "manage.py").read_text() + "\n# local edit\n")
    one_clear_line(run(app.root, "full"), 1, "uncommitted changes", "production requires a clean tree")
    nothing_deployed(app)
    proc = run(app.root, "deploy", "production")
    one_clear_line(proc, 1, "pre-flight failed: git")
    plan = run(app.root, "deploy", "dev", "--dry-run")
    assert plan.returncode == 0


def test_unknown_skip_check(app: App) -> None:
    one_clear_line(run(app.root, "deploy", "dev", "--skip-check", "vibes"), 2, "unknown check 'vibes'")


def test_approval_required_needs_yes_from_scripts(app: App) -> None:
    cfg = app.root / "stageflow.yml"
    cfg.write_text(cfg.read_text().replace("  production:\n", "  production:\n    approval: required\n", 1))
    git(app.root, "commit", "-qam", "approval")
    one_clear_line(run(app.root, "full"), 2, "requires approval", "--yes")
    nothing_deployed(app)


def test_rollback_without_previous_release(app: App) -> None:
    one_clear_line(run(app.root, "rollback", "staging"), 1, "no earlier release")


def test_version_and_unknown_command(tmp_path: Path) -> None:
    from stageflow import __version__

    ok = run(tmp_path, "--version")
    assert ok.returncode == 0 and ok.stdout.strip() == f"stageflow {__version__}"
    bad = run(tmp_path, "deploi", "dev")
    assert bad.returncode == 2 and "No such command" in bad.stderr and "Traceback" not in bad.stderr


def test_status_reports_one_broken_environment_without_hiding_the_others(app: App) -> None:
    import json

    (app.root / ".env.production").write_text('DEBUG="0"\n')
    proc = run(app.root, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["env"]: r for r in json.loads(proc.stdout)}
    assert rows["production"]["reason"].startswith("config error:") and "SECRET_KEY" in rows["production"]["reason"]
    assert rows["dev"]["reason"] == "not deployed"
    one_clear_line(run(app.root, "status", "production"), 2, "SECRET_KEY")


def test_setup_ignores_stageflow_files_and_preflight_refuses_them_tracked(app: App) -> None:
    from stageflow.configmgr.gitignore import is_ignored

    text = (app.root / ".gitignore").read_text()
    for rel in (".stageflow/state.db", ".stageflow/tls/production/key.pem", ".stageflow/venvs/x/bin/python",
                "logs/workflow_1.log", ".env.production"):
        assert is_ignored(text, rel), rel
    (app.root / "data").mkdir(exist_ok=True)
    (app.root / "data" / "practica_dev.sqlite3").write_text("")
    untracked = git(app.root, "status", "--porcelain", "--untracked-files=all")
    assert ".stageflow" not in untracked and "logs/" not in untracked and "sqlite3" not in untracked, untracked
    # forced in anyway (git add -f, or an older .gitignore): the deploy refuses before changing anything
    (app.root / "logs").mkdir(exist_ok=True)
    (app.root / "logs" / "workflow_old.log").write_text("x\n")
    git(app.root, "add", "-f", "logs/workflow_old.log", "data/practica_dev.sqlite3")
    git(app.root, "commit", "-qm", "oops")
    one_clear_line(run(app.root, "deploy", "dev"), 1, "stageflow's own files are tracked",
                   "logs/workflow_old.log", "git rm -r --cached data logs")
    one_clear_line(run(app.root, "full"), 1, "stageflow's own files are tracked")
    nothing_deployed(app)
