"""Pure pieces: release ids, porcelain parsing, preflight verdicts, masking, argv builders, upstream."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from stageflow.commands import git, nginx
from stageflow.deploy import preflight as pf
from stageflow.deploy.release import GitFacts, parse_porcelain, release_id
from stageflow.generate.upstream import render_upstream, upstream_name
from stageflow.masking import MASK, Masker, is_secret_name


def test_release_id_sorts_by_time_and_marks_dirty() -> None:
    t = datetime(2026, 11, 26, 17, 5, 9, tzinfo=UTC)
    assert release_id("0123456789abcdef", False, t) == "20261126T170509Z-0123456"
    assert release_id("0123456789abcdef", True, t) == "20261126T170509Z-0123456-dirty"


def test_porcelain() -> None:
    assert parse_porcelain(" M manage.py\nA  new.py\n") == ["manage.py", "new.py"]


def test_git_check_fails_only_where_clean_is_required() -> None:
    dirty = GitFacts("a" * 40, ["x.py"], "msg")
    assert pf.check_git(dirty, True).status == "fail"
    assert pf.check_git(dirty, False).status == "warn"
    assert pf.check_git(GitFacts("a" * 40, [], "msg"), True).status == "pass"


def test_local_runtime_port_check() -> None:
    from stageflow.runtimes.local import _check_ports

    assert _check_ports(None, 9000, lambda p: False, None).status == "warn"
    assert _check_ports("/usr/sbin/nginx", 9000, lambda p: True, None).status == "fail"
    assert _check_ports("/usr/sbin/nginx", 9000, lambda p: True, 9000).status == "pass"


def test_disk_check(tmp_path: Path) -> None:
    assert pf.check_disk(tmp_path / "a" / "b", 1, 0).status == "pass"
    assert pf.check_disk(tmp_path, 10**9, 0).status == "fail"


def test_masking() -> None:
    m = Masker()
    m.add("s3cr3t-value")
    m.add("abc")  # too short to mask safely
    m.add_env({"DB_PASSWORD": "hunter2hunter2", "DEBUG": "false-but-long"})
    text = m.mask("x s3cr3t-value hunter2hunter2 false-but-long postgres://u:pw12@h/db abc")
    assert "s3cr3t-value" not in text and "hunter2hunter2" not in text and "pw12" not in text
    assert text.count(MASK) == 3 and "false-but-long" in text and "abc" in text
    assert is_secret_name("SECRET_KEY") and is_secret_name("SLACK_WEBHOOK") and not is_secret_name("DEBUG")


def test_argv_builders() -> None:
    assert git.archive("abc", Path("/t/r.tar")) == ["git", "archive", "--format=tar", "--output=/t/r.tar", "abc"]
    assert git.status_porcelain() == ["git", "status", "--porcelain", "--untracked-files=no"]
    p = Path("/p")
    assert nginx.signal("nginx", p, p / "n.conf", "reload") == [
        "nginx", "-p", "/p", "-e", "/p/error.log", "-c", "/p/n.conf", "-s", "reload"]
    assert nginx.test_config("nginx", p, p / "n.conf")[:3] == ["nginx", "-t", "-q"]


def test_upstream() -> None:
    text = render_upstream("shop", "prod-eu", ["127.0.0.1:18001"])
    assert f"upstream {upstream_name('shop', 'prod-eu')} {{" in text
    assert "upstream shop_prod_eu {" in text and "server 127.0.0.1:18001 max_fails=0;" in text
