"""Class 3: values rendered into nginx or Compose are checked for their context, refused by key name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from stageflow.config.envfile import read_env_file, write_env_file
from tests.hardening.support import one_clear_line, run
from tests.support.app import App
from tests.support.compose import write_practika_project

NGINX_BREAKOUTS = [
    "cert.pem;\n    location / { return 200 pwned; }",
    "cert.pem\nreturn 200 pwned;",
    "cert.pem; return 200 pwned",
    "cert.pem}",
    "cert {pem",
    "my cert.pem",
    "cert.pem#",
    "$document_root/cert.pem",
    "cert.pem\x1b[2J",
]


def _set_env(root: Path, env: str, **values: str) -> None:
    path = root / f".env.{env}"
    write_env_file(path, {**read_env_file(path), **values})


@pytest.mark.parametrize("value", NGINX_BREAKOUTS)
def test_validate_names_the_tls_variable(tmp_path: Path, value: str) -> None:
    root = write_practika_project(tmp_path / "app")
    _set_env(root, "dev", TLS_CERT_FILE=value, TLS_KEY_FILE="key.pem")
    proc = run(root, "config", "validate", "dev", "--no-django-check")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "TLS_CERT_FILE: holds" in proc.stdout and "nginx configuration" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert "\x1b" not in proc.stdout  # shown escaped, never sent to the terminal


@pytest.mark.parametrize(("key", "value"), [
    ("csp", "default-src 'self'\nadd_header X-Pwned 1"),
    ("csp", "default-src 'self'; \"; return 200"),
    ("permissions_policy", "camera=()\r\nX: y"),
    ("basic_auth_user", "practika\n"),
    ("domain", "example.com; return 200"),
    ("static_url", "/static/ { return 200; }"),
    ("admin_allow", "10.0.0.0/8; allow all"),
    ("api_rate", "20r/s burst=1000000"),
    ("login_rate", "10r/m;\n    allow all"),
])
def test_config_nginx_refuses_proxy_values_that_break_out(tmp_path: Path, key: str, value: str) -> None:
    root = write_practika_project(tmp_path / "app")
    cfg = yaml.safe_load((root / "stageflow.yml").read_text())
    cfg["environments"]["staging"]["proxy"] = {key: [value] if key == "admin_allow" else value}
    (root / "stageflow.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    one_clear_line(run(root, "config", "nginx", "staging"), 2, f"environments.staging.proxy.{key}")
    assert not (root / "deploy").exists()


@pytest.mark.parametrize("image", ["postgres:16\nprivileged: true", "postgres:16 --privileged", "", "a//b"])
def test_config_compose_refuses_image_overrides_that_are_not_references(tmp_path: Path, image: str) -> None:
    root = write_practika_project(tmp_path / "app")
    cfg = yaml.safe_load((root / "stageflow.yml").read_text())
    cfg["environments"]["staging"]["images"] = {"db": image}
    (root / "stageflow.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    one_clear_line(run(root, "config", "compose", "staging"), 2, "environments.staging.images.db")
    assert not (root / "docker-compose.staging.yml").exists()


@pytest.mark.e2e
def test_deploy_refuses_a_tls_path_that_would_take_over_nginx(practika: App) -> None:
    cert = "cert.pem;\n        location / { return 200 pwned; }\n        #"
    _set_env(practika.root, "production", TLS_CERT_FILE=cert, TLS_KEY_FILE="key.pem")
    proc = run(practika.root, "deploy", "production", "--yes", timeout=120)
    assert proc.returncode in (1, 2), proc.stderr
    assert "TLS_CERT_FILE" in proc.stderr and "Traceback" not in proc.stderr
    nginx_dir = practika.root / ".stageflow" / "nginx" / "production"
    for conf in nginx_dir.glob("*.conf") if nginx_dir.is_dir() else ():
        assert "pwned" not in conf.read_text(), conf
    releases = practika.root / ".stageflow" / "releases"
    assert not releases.exists() or not [p for p in os.listdir(releases) if not p.startswith(".")]
    assert practika.instance_processes() == []


@pytest.mark.e2e
def test_deploy_refuses_proxy_values_before_anything_starts(practika: App) -> None:
    """A local deploy serves the `config nginx` site, so its values are checked the same way, up front."""
    cfg = yaml.safe_load((practika.root / "stageflow.yml").read_text())
    cfg["environments"]["dev"]["proxy"] = {"csp": "default-src 'self'\n    return 200 pwned;"}
    (practika.root / "stageflow.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    practika.commit("hostile csp")
    proc = run(practika.root, "deploy", "dev", timeout=120)
    assert proc.returncode in (1, 2), proc.stderr
    assert "environments.dev.proxy.csp" in proc.stderr and "Traceback" not in proc.stderr
    nginx_dir = practika.root / ".stageflow" / "nginx" / "dev"
    assert not nginx_dir.is_dir() or not any("pwned" in p.read_text() for p in nginx_dir.glob("*.conf"))
    assert practika.instance_processes() == []
