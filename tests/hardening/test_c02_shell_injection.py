"""Class 2: a variable's value reaches a command as data (environment / argv words), never as shell text."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from stageflow.config.envfile import read_env_file, write_env_file
from stageflow.config.loader import load_env_context
from stageflow.errors import ConfigError
from stageflow.runner import Runner
from stageflow.runtimes.local import LocalRuntime
from tests.hardening.support import run
from tests.support.app import App
from tests.support.compose import write_practika_project

HOSTILE = [
    "; touch pwned",
    "$(touch pwned)",
    "`touch pwned`",
    "&& touch pwned",
    "| touch pwned",
    "\ntouch pwned",
    "'; touch pwned; '",
    '"; touch pwned; "',
]
RECORDER = "python3 -c 'import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(repr(sys.argv[2:]))'"


def _project(tmp_path: Path, release: str) -> Path:
    root = write_practika_project(tmp_path / "app")
    cfg = yaml.safe_load((root / "stageflow.yml").read_text())
    cfg["services"]["backend"]["release"] = release
    (root / "stageflow.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root


def _run_release(root: Path, environ: dict[str, str]) -> Path:
    ctx = load_env_context(root, "dev", environ=environ)
    workdir = root / "work"
    workdir.mkdir(exist_ok=True)
    LocalRuntime(ctx, Runner()).run_release_command(workdir, "r1", None, timeout=30)
    return workdir


@pytest.mark.parametrize("value", HOSTILE)
def test_env_file_values_are_argv_words_of_the_release_command(tmp_path: Path, value: str) -> None:
    out = tmp_path / "argv.txt"
    root = _project(tmp_path, f"{RECORDER} {out} ${{MIGRATE_ARGS:-}}")
    env = root / ".env.dev"
    write_env_file(env, {**read_env_file(env), "MIGRATE_ARGS": value})
    workdir = _run_release(root, {"PATH": "/usr/bin:/bin"})
    assert not list(tmp_path.rglob("pwned")), "the value ran as shell text"
    assert ast.literal_eval(out.read_text()) == value.split()  # word-split data, nothing executed
    assert not (workdir / "pwned").exists()


def test_a_value_from_the_calling_shell_alone_is_data_too(tmp_path: Path) -> None:
    out = tmp_path / "argv.txt"
    root = _project(tmp_path, f'{RECORDER} {out} "${{MIGRATE_ARGS}}"')
    _run_release(root, {"PATH": "/usr/bin:/bin", "MIGRATE_ARGS": "--x; touch pwned $(touch pwned2)"})
    assert not list(tmp_path.rglob("pwned*"))
    assert ast.literal_eval(out.read_text()) == ["--x; touch pwned $(touch pwned2)"]  # quoted: one word


def test_dollar_dollar_and_defaults_keep_their_meaning(tmp_path: Path) -> None:
    out = tmp_path / "argv.txt"
    root = _project(tmp_path, f"{RECORDER} {out} ${{UNSET_ONE:-fallback}} $$DEMO_VAR")
    env = root / ".env.dev"
    write_env_file(env, {**read_env_file(env), "DEMO_VAR": "from-the-env-file"})
    _run_release(root, {"PATH": "/usr/bin:/bin"})
    assert ast.literal_eval(out.read_text()) == ["fallback", "from-the-env-file"]


def test_a_missing_variable_is_still_a_config_error(tmp_path: Path) -> None:
    root = _project(tmp_path, "python manage.py migrate ${NOT_SET_ANYWHERE}")
    with pytest.raises(ConfigError, match=r"services\.backend\.release: variable \$\{NOT_SET_ANYWHERE\} is not set"):
        load_env_context(root, "dev", environ={})


def test_dry_run_shows_the_reference_not_the_value(tmp_path: Path) -> None:
    from tests.support.app import git

    root = _project(tmp_path, "python manage.py migrate --noinput ${MIGRATE_ARGS:-}")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "x")
    proc = run(root, "deploy", "dev", "--dry-run", env={"MIGRATE_ARGS": "; touch pwned"})
    assert proc.returncode == 0, proc.stderr
    assert "${MIGRATE_ARGS:-}" in proc.stdout and "touch pwned" not in proc.stdout
    assert not list(tmp_path.rglob("pwned"))


@pytest.mark.e2e
def test_deploy_passes_hostile_values_to_release_and_worker_as_data(practika: App, tmp_path: Path) -> None:
    release_out, worker_out = tmp_path / "release-argv.txt", tmp_path / "worker-argv.txt"
    cfg_path = practika.root / "stageflow.yml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["services"]["backend"]["release"] = (
        f"{RECORDER} {release_out} ${{MIGRATE_ARGS:-}} && python manage.py migrate --noinput")
    cfg["services"]["worker"] = {"command": (
        "python3 -c 'import sys, time, pathlib; pathlib.Path(sys.argv[1]).write_text(repr(sys.argv[2:])); "
        f"time.sleep(600)' {worker_out} ${{WORKER_ARGS}}")}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = practika.root / ".env.dev"
    write_env_file(env, {**read_env_file(env), "MIGRATE_ARGS": "; touch pwned", "WORKER_ARGS": "$(touch pwned)"})
    practika.commit("commands that use variables")
    practika.sf("deploy", "dev", env={"WORKER_ARGS": "`touch pwned` && touch pwned"})  # the shell wins
    assert practika.get("dev")[0] == 200
    assert ast.literal_eval(release_out.read_text()) == [";", "touch", "pwned"]
    from tests.support.app import wait_for

    assert wait_for(worker_out.exists, timeout=20)
    assert ast.literal_eval(worker_out.read_text()) == ["`touch", "pwned`", "&&", "touch", "pwned"]
    assert not list(practika.root.rglob("pwned")) and not list(tmp_path.rglob("pwned"))
