"""Class 7: every validator anchors at the very end (``\\Z``/fullmatch): a trailing newline never passes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from stageflow.config.envfile import format_env
from tests.hardening.support import one_clear_line, run
from tests.support.compose import write_practika_project

SRC = Path(__file__).resolve().parents[2] / "src" / "stageflow"


def _config(root: Path, edit: dict[str, object]) -> None:
    cfg = yaml.safe_load((root / "stageflow.yml").read_text())
    for path, value in edit.items():
        node = cfg
        *parents, last = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    (root / "stageflow.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.mark.parametrize("args", [
    ("deploy", "dev\n", "--dry-run"),
    ("status", "dev\n"),
    ("config", "validate", "dev\n"),
    ("config", "generate", "dev", "--template", "production\n"),
    ("backup", "list", "dev\n"),
    ("rollback", "staging\n"),
])
def test_cli_names_with_a_trailing_newline_are_refused(tmp_path: Path, args: tuple[str, ...]) -> None:
    root = write_practika_project(tmp_path / "app")
    proc = run(root, *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not list(root.glob("*\n*")) and not list((root / ".stageflow").glob("**/*\n*"))


@pytest.mark.parametrize(("edit", "key"), [
    ({"project": "practika\n"}, "project"),
    ({"environments.production.aliases": ["prod\n"]}, "environments.production.aliases"),
    ({"environments.dev.url": "http://127.0.0.1:8001\n"}, "environments.dev.url"),
])
def test_config_values_with_a_trailing_newline_are_refused(tmp_path: Path, edit: dict[str, object], key: str) -> None:
    root = write_practika_project(tmp_path / "app")
    _config(root, edit)
    one_clear_line(run(root, "status"), 2, key)


@pytest.mark.parametrize(("proxy", "key"), [
    ({"basic_auth_user": "practika\n"}, "basic_auth_user"),
    ({"csp": "default-src 'self'\n"}, "csp"),
    ({"permissions_policy": "camera=()\n"}, "permissions_policy"),
    ({"client_max_body_size": "10m\n"}, "client_max_body_size"),
    ({"domain": "example.com\n"}, "domain"),
    ({"static_root": "/srv/static\n"}, "static_root"),
    ({"login_paths": ["/login/\n"]}, "login_paths"),
    ({"api_rate": "20r/s\n"}, "api_rate"),
    ({"login_rate": "10r/m\n"}, "login_rate"),
])
def test_nginx_values_with_a_trailing_newline_are_refused(tmp_path: Path, proxy: dict[str, object], key: str) -> None:
    root = write_practika_project(tmp_path / "app")
    _config(root, {"environments.staging.proxy": proxy})
    one_clear_line(run(root, "config", "nginx", "staging"), 2, f"environments.staging.proxy.{key}")
    assert not (root / "deploy").exists()


def test_env_keys_with_a_trailing_newline_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid environment variable name"):
        format_env({"KEY\n": "v"})


def test_no_validator_in_the_source_anchors_with_a_bare_dollar() -> None:
    # A guard for the class: `^…$` patterns (and re.match with `$`) let "value\n" through.
    offenders = []
    for path in SRC.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"""re\.(compile|match|fullmatch)\(\s*r?["'][^"']*[^\\]\$["']""", line):
                offenders.append(f"{path.relative_to(SRC)}:{n}: {line.strip()}")
    assert offenders == []
