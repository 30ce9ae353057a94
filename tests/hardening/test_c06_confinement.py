"""Class 6: env files and generated files stay inside the app; symlinked env files are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.hardening.support import Bait, one_clear_line, run
from tests.support.compose import write_practika_project


def _env_file_setting(root: Path, env: str, value: str) -> None:
    cfg = yaml.safe_load((root / "stageflow.yml").read_text())
    cfg["environments"][env]["env_file"] = value
    (root / "stageflow.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.mark.parametrize("value", ["../elsewhere/.env", "../../.env.stolen", "sub/../../outside.env",
                                   "/tmp/stageflow-hostile-{n}.env"])
def test_env_file_paths_leaving_the_app_are_refused(tmp_path: Path, value: str) -> None:
    value = value.replace("{n}", str(os.getpid()))
    root = write_practika_project(tmp_path / "w" / "app")
    _env_file_setting(root, "dev", value)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    for args in (("config", "setup"), ("config", "generate", "dev"), ("status", "dev"),
                 ("config", "validate", "dev", "--no-django-check"), ("config", "compose", "dev")):
        proc = run(root, *args)
        assert proc.returncode in (1, 2), (args, proc.stdout, proc.stderr)
        out = proc.stderr + proc.stdout
        assert "environments.dev.env_file" in out and "leaves the app" in out
        assert "Traceback" not in proc.stderr
    assert not Path(value).is_absolute() or not Path(value).exists()
    after = sorted(str(p) for p in tmp_path.rglob("*") if "/.stageflow" not in str(p) and "/logs" not in str(p))
    assert [p for p in after if p not in before] == []


def test_a_symlinked_env_file_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    root = write_practika_project(tmp_path / "app")
    bait = Bait.plant(tmp_path / "outside", "secrets.env")
    bait.path.write_text('SECRET_KEY="outside-secret-0123456789abcdef"\n')
    bait = Bait(bait.path, bait.path.read_bytes(), bait.mode)
    (root / ".env.staging").unlink()
    os.symlink(bait.path, root / ".env.staging")
    for args in (("config", "setup"), ("config", "generate", "staging"), ("status", "staging"),
                 ("config", "validate", "staging", "--no-django-check")):
        proc = run(root, *args)
        out = proc.stdout + proc.stderr
        assert proc.returncode in (1, 2), (args, out)
        assert ".env.staging is a symbolic link" in out and "Traceback" not in out
        assert "outside-secret" not in out
    assert (root / ".env.staging").is_symlink()
    bait.untouched()


def test_an_env_file_in_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    root = write_practika_project(tmp_path / "app")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "conf")
    _env_file_setting(root, "dev", "conf/.env.dev")
    for args in (("config", "generate", "dev"), ("status", "dev")):
        one_clear_line(run(root, *args), 2, "conf is a symbolic link")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(("section", "key", "value"), [
    ("database", "path", "../outside/{env}.sqlite3"),
    ("backups", "dir", "../../backups"),
    ("releases", "venv_dir", "../venvs/{env}"),
])
def test_relative_config_paths_climbing_out_are_refused(tmp_path: Path, section: str, key: str, value: str) -> None:
    from tests.support.app import git

    root = write_practika_project(tmp_path / "w" / "app")
    cfg = yaml.safe_load((root / "stageflow.yml").read_text())
    cfg.setdefault(section, {})[key] = value
    if section == "database":
        cfg["database"] = {"engine": "sqlite", "path": value}
    (root / "stageflow.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "x")
    before = sorted(p.name for p in (tmp_path / "w").iterdir())
    for args in (("deploy", "dev"), ("status", "dev"), ("backup", "create", "dev")):
        one_clear_line(run(root, *args), 2, f"{section}.{key}", "leaves the app directory")
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == before
    assert not (root / ".stageflow" / "releases").exists()


@pytest.mark.parametrize("link", ["bk", "bk/dev"])
def test_backups_never_go_through_a_symlinked_directory(tmp_path: Path, link: str) -> None:
    import sqlite3

    from tests.support.app import git

    root = write_practika_project(tmp_path / "app")
    cfg = yaml.safe_load((root / "stageflow.yml").read_text())
    cfg["database"] = {"engine": "sqlite", "path": "data/{env}.sqlite3"}
    cfg["backups"] = {"dir": "bk"}
    (root / "stageflow.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (root / "data").mkdir()
    with sqlite3.connect(root / "data" / "dev.sqlite3") as db:
        db.execute("CREATE TABLE t (x)")
    db.close()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, root / link)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "x")
    one_clear_line(run(root, "backup", "create", "dev"), 2, f"{link} is a symbolic link")
    assert list(outside.rglob("*")) == []


def test_a_release_record_pointing_elsewhere_never_moves_a_deploy_or_a_cleanup(tmp_path: Path) -> None:
    """state.db may be damaged or hostile: the directory a release runs from, or a cleanup deletes, is
    always <state dir>/releases/<id>, whatever path its record holds."""
    from stageflow.deploy.release import release_path, remove_release, rollback_target
    from stageflow.errors import OperationError
    from stageflow.state.store import StateDamaged, Store

    state_dir = tmp_path / "app" / ".stageflow"
    store = Store(state_dir / "state.db")
    bait = Bait.plant(tmp_path / "outside")
    own = state_dir / "releases" / "r1"
    own.mkdir(parents=True)
    store.add_release("r1", "a" * 40, False, "m", bait.path.parent, None)  # the record points outside
    dep = store.start_deployment("dev", "deploy", "me", 1, None)
    store.set_deployment_release(dep, "r1")
    store.finish_deployment(dep, "succeeded")
    assert release_path(store, "r1") == own and rollback_target(store, "dev", None) == "r1"
    remove_release(store, "r1")
    bait.untouched()
    assert not own.exists() and store.release("r1") is None
    # A release directory replaced by a link out of the app: never run from, never followed by a cleanup.
    (state_dir / "releases" / "r2").symlink_to(bait.path.parent, target_is_directory=True)
    store.add_release("r2", "b" * 40, False, "m", state_dir / "releases" / "r2", None)
    with pytest.raises(OperationError, match="release r2 does not exist any more"):
        release_path(store, "r2")
    remove_release(store, "r2")
    bait.untouched()
    # An id that climbs out of the releases directory is a damaged row, not a path.
    store.add_release("../../outside", "c" * 40, False, "m", bait.path.parent, None)
    with pytest.raises(StateDamaged, match=r"releases row id='../../outside': id is not a release id"):
        remove_release(store, "../../outside")
    bait.untouched()
