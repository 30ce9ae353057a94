"""Class 1: no write follows a symlink (target, temp file or directory) and no mode is widened."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from stageflow.errors import ConfigError
from stageflow.fsutil import UnsafePathError, make_dirs, open_append, read_file, write_file
from tests.hardening.support import Bait, one_clear_line, run
from tests.support.app import App, git
from tests.support.compose import write_practika_project


@pytest.fixture
def bait(tmp_path: Path) -> Bait:
    return Bait.plant(tmp_path / "outside")


# --------------------------------------------------------------------------- the writer itself


def test_symlinked_target_is_refused_and_its_target_untouched(tmp_path: Path, bait: Bait) -> None:
    root = tmp_path / "app"
    (root / "conf").mkdir(parents=True)
    for link in (root / "conf" / "site.conf", root / "conf" / "dangling.conf"):
        os.symlink(bait.path if link.name == "site.conf" else tmp_path / "nowhere", link)
        with pytest.raises(UnsafePathError, match="symbolic link"):
            write_file(link, "pwned", root=root)
        assert link.is_symlink()
    assert not (tmp_path / "nowhere").exists()
    bait.untouched()


def test_planted_temp_names_are_never_written_through(tmp_path: Path, bait: Bait) -> None:
    # The old writers used fixed temp names (.NAME.tmp): a repo could commit one as a link.
    root = tmp_path / "app"
    (root / "conf").mkdir(parents=True)
    for name in (".site.conf.tmp", ".site.conf.tmp.1", "site.conf.tmp"):
        os.symlink(bait.path, root / "conf" / name)
    write_file(root / "conf" / "site.conf", "ok\n", root=root)
    assert (root / "conf" / "site.conf").read_text() == "ok\n"
    bait.untouched()
    leftovers = [p.name for p in (root / "conf").iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]
    assert leftovers == []


def test_symlinked_directory_under_the_root_is_refused(tmp_path: Path, bait: Bait) -> None:
    root = tmp_path / "app"
    root.mkdir()
    os.symlink(bait.path.parent, root / "deploy")
    for target in (root / "deploy" / "precious.txt", root / "deploy" / "new" / "file.txt"):
        with pytest.raises(UnsafePathError, match="deploy is a symbolic link"):
            write_file(target, "pwned", root=root)
    with pytest.raises(UnsafePathError):
        make_dirs(root / "deploy" / "x", root=root)
    with pytest.raises(UnsafePathError):
        open_append(root / "deploy" / "log.txt", root=root)
    bait.untouched()
    assert sorted(p.name for p in bait.path.parent.iterdir()) == ["precious.txt"]


def test_paths_climbing_out_of_the_root_are_refused(tmp_path: Path, bait: Bait) -> None:
    root = tmp_path / "app"
    root.mkdir()
    for target in (root / ".." / "outside" / "precious.txt", bait.path):
        with pytest.raises(UnsafePathError, match="leaves the app"):
            write_file(target, "pwned", root=root)
    bait.untouched()


def test_mode_is_never_widened_and_set_before_the_first_byte(tmp_path: Path) -> None:
    root = tmp_path / "app"
    root.mkdir()
    f = root / "tight.conf"
    f.write_text("old")
    f.chmod(0o600)
    write_file(f, "new", root=root, mode=0o644)
    assert stat.S_IMODE(f.stat().st_mode) == 0o600 and f.read_text() == "new"
    old_umask = os.umask(0)  # a permissive umask must not widen what stageflow creates
    try:
        write_file(root / ".stageflow" / "run" / "x.json", "{}", root=root, mode=0o600)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((root / ".stageflow" / "run" / "x.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / ".stageflow").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / ".stageflow" / "run").stat().st_mode) == 0o700


def test_special_files_are_refused_for_reading_and_writing(tmp_path: Path) -> None:
    root = tmp_path / "app"
    root.mkdir()
    fifo = root / "fifo"
    os.mkfifo(fifo)
    os.symlink("/dev/zero", root / "zero")
    for path in (fifo, root / "zero"):
        with pytest.raises(UnsafePathError):
            write_file(path, "x", root=root)
        with pytest.raises(UnsafePathError):
            read_file(path, root=root, limit=1024)
    with pytest.raises(UnsafePathError, match="not a regular file"):
        read_file(root / "zero", root=root, limit=1024, follow=True)
    (root / "big").write_bytes(b"x" * 5000)
    with pytest.raises(ConfigError, match="larger than"):
        read_file(root / "big", root=root, limit=4096)


# --------------------------------------------------------------------------- through the CLI


def test_config_nginx_refuses_a_committed_htpasswd_link(tmp_path: Path, bait: Bait) -> None:
    root = write_practika_project(tmp_path / "app")
    site = root / "deploy" / "nginx" / "staging"
    site.mkdir(parents=True)
    # The reproduced attack: a committed temp-name link, then the file itself as a link.
    os.symlink(bait.path, site / ".htpasswd.tmp")
    assert run(root, "config", "nginx", "staging").returncode == 0
    bait.untouched()
    assert stat.S_IMODE((site / "htpasswd").stat().st_mode) & 0o077 in (0, 0o040, 0o044)
    (site / "htpasswd").unlink()
    os.symlink(bait.path, site / "htpasswd")
    one_clear_line(run(root, "config", "nginx", "staging"), 2, "htpasswd is a symbolic link")
    bait.untouched()


def test_config_nginx_refuses_a_symlinked_output_directory(tmp_path: Path, bait: Bait) -> None:
    root = write_practika_project(tmp_path / "app")
    (root / "deploy" / "nginx").mkdir(parents=True)
    os.symlink(bait.path.parent, root / "deploy" / "nginx" / "staging")
    one_clear_line(run(root, "config", "nginx", "staging"), 2, "symbolic link")
    bait.untouched()
    assert sorted(p.name for p in bait.path.parent.iterdir()) == ["precious.txt"]


def test_config_compose_refuses_a_committed_compose_link(tmp_path: Path, bait: Bait) -> None:
    root = write_practika_project(tmp_path / "app")
    os.symlink(bait.path, root / "docker-compose.prod.yml")
    one_clear_line(run(root, "config", "compose", "production"), 2, "docker-compose.prod.yml is a symbolic link")
    bait.untouched()


def test_config_setup_refuses_a_symlinked_gitignore(tmp_path: Path, bait: Bait) -> None:
    root = write_practika_project(tmp_path / "app")
    os.symlink(bait.path, root / ".gitignore")
    proc = run(root, "config", "setup")
    one_clear_line(proc, 2, ".gitignore is a symbolic link")
    bait.untouched()


@pytest.mark.e2e
def test_deploy_keeps_absolute_links_and_never_writes_through_planted_ones(practika: App, tmp_path: Path) -> None:
    bait = Bait.plant(tmp_path / "outside", "upstream.conf")
    root = practika.root
    # An absolute symlink in the repo used to break every deploy (tarfile's AbsoluteLinkError).
    os.symlink("/usr/share", root / "shared-data")
    practika.commit("an absolute link")
    # A hostile state directory: stageflow's old fixed temp names planted as links.
    nginx_dir = root / ".stageflow" / "nginx" / "dev"
    nginx_dir.mkdir(parents=True)
    for name in (".upstream-dev.conf.tmp", ".nginx.conf.tmp"):
        os.symlink(bait.path, nginx_dir / name)
    practika.sf("deploy", "dev")
    bait.untouched()
    assert practika.get("dev")[0] == 200
    release = practika.status()["dev"]["release"]
    assert os.readlink(root / ".stageflow" / "releases" / release / "shared-data") == "/usr/share"
    # A link to a file stageflow rewrites at cutover: refused with one line, the live release untouched.
    (nginx_dir / "upstream-dev.conf").unlink()
    os.symlink(bait.path, nginx_dir / "upstream-dev.conf")
    practika.touch_commit()
    proc = run(root, "deploy", "dev", timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "upstream-dev.conf is a symbolic link" in proc.stderr and "Traceback" not in proc.stderr
    bait.untouched()
    assert practika.get("dev")[0] == 200
    assert practika.status()["dev"]["release"] == release
    assert sorted(p.name for p in (root / ".stageflow" / "releases").iterdir() if not p.name.startswith(".")) == [
        release]  # the refused release was not left behind
    git(root, "status")  # the work tree is intact


def test_a_missing_root_is_created_as_the_callers_directory(tmp_path: Path) -> None:
    from stageflow.config.envfile import read_env_file, write_env_file

    target = tmp_path / "new" / "dir" / ".env.dev"
    write_env_file(target, {"A": "1"})  # root defaults to the file's own directory
    assert read_env_file(target) == {"A": "1"}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
