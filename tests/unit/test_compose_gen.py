"""The Compose generator: structure of the document for each environment (no Docker needed)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from pydantic import TypeAdapter
from typer.testing import CliRunner

from stageflow.config.loader import load_project
from stageflow.config.models import ProjectConfig
from stageflow.errors import ConfigError, StageflowError, UsageError
from stageflow.generate.compose import build_compose, compose_filename, render_compose, write_compose
from tests.support.compose import PRACTIKA, write_practika_project

HARDENED_ENVS = ("staging", "production")


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, ProjectConfig]:
    root = write_practika_project(tmp_path / "app")
    return root, load_project(root)


def doc_for(project: tuple[Path, ProjectConfig], env: str, **kw: Any) -> dict[str, Any]:
    root, config = project
    return build_compose(config, env, root=root, **kw)


def test_file_names_follow_the_seed() -> None:
    config = TypeAdapter(ProjectConfig).validate_python(PRACTIKA)
    assert compose_filename(config, "production") == "docker-compose.prod.yml"
    assert compose_filename(config, "staging") == "docker-compose.staging.yml"
    assert compose_filename(config, "dev") == "docker-compose.dev.yml"


@pytest.mark.parametrize("env", ["dev", *HARDENED_ENVS])
def test_every_service_is_hardened_and_health_checked(project: tuple[Path, ProjectConfig], env: str) -> None:
    doc = doc_for(project, env)
    services = doc["services"]
    expected = {"backend", "worker", "db", "redis"} | ({"nginx"} if env != "dev" else set())
    assert set(services) == expected
    for name, svc in services.items():
        assert svc["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        assert svc["security_opt"] == ["no-new-privileges:true"], name
        assert svc["cap_drop"] == ["ALL"], name
        assert svc["read_only"] is True, name
        assert svc["tmpfs"], name
        assert svc["logging"] == {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}
        limits = svc["deploy"]["resources"]["limits"]
        assert limits["cpus"] and limits["memory"], name
        assert svc["restart"] == ("no" if env == "dev" else "unless-stopped")
        for dep in svc.get("depends_on", {}).values():
            assert dep == {"condition": "service_healthy"}, name
    assert services["backend"]["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert services["worker"]["depends_on"] == services["backend"]["depends_on"]


@pytest.mark.parametrize("env", HARDENED_ENVS)
def test_database_and_redis_are_internal_only(project: tuple[Path, ProjectConfig], env: str) -> None:
    doc = doc_for(project, env)
    assert doc["networks"]["internal"] == {"internal": True}
    for name in ("db", "redis"):
        svc = doc["services"][name]
        assert svc["networks"] == ["internal"]
        assert "ports" not in svc and "expose" not in svc
    assert doc["services"]["nginx"]["networks"] == ["edge"]
    published = [n for n, s in doc["services"].items() if "ports" in s]
    assert published == ["nginx"]


def test_capabilities_are_the_minimum_each_entrypoint_needs(project: tuple[Path, ProjectConfig]) -> None:
    services = doc_for(project, "production")["services"]
    assert services["db"]["cap_add"] == ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"]
    assert services["redis"]["cap_add"] == ["CHOWN", "SETGID", "SETUID"]
    assert "NET_BIND_SERVICE" in services["nginx"]["cap_add"]
    for app in ("backend", "worker"):
        assert "cap_add" not in services[app]
        assert services[app]["user"] == "10001:10001"


def test_env_file_volumes_images_and_build(project: tuple[Path, ProjectConfig]) -> None:
    doc = doc_for(project, "production")
    services = doc["services"]
    runtime_vars = {"path": ".stageflow/compose/production.env", "required": False}
    for name in ("backend", "worker"):
        # The env file, then what the compose runtime computes (DATABASE_URL with the stack's hosts).
        assert services[name]["env_file"] == [".env.production", runtime_vars]
    assert services["db"]["env_file"] == [".env.production"]
    assert services["db"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    assert services["nginx"]["image"] == "nginx:1.27"
    assert services["db"]["environment"] == {"POSTGRES_DB": "practica_production", "POSTGRES_USER": "practica"}
    assert "pgdata:/var/lib/postgresql/data" in services["db"]["volumes"]
    assert "redisdata:/data" in services["redis"]["volumes"]
    assert set(doc["volumes"]) >= {"pgdata", "redisdata", "static", "media"}
    assert services["backend"]["build"] == {"context": ".", "args": {"BASE_IMAGE": "python:3.12-slim"}}
    assert services["backend"]["deploy"]["replicas"] == 2
    assert services["backend"]["command"] == "gunicorn practika.wsgi --bind 0.0.0.0:8000"
    assert services["nginx"]["ports"] == ["80:80", "443:443"]
    # production's engine is remote (ssh://): the site lives in volumes the runtime fills, no bind mount
    assert services["nginx"]["volumes"][:2] == ["nginx-site:/etc/nginx/conf.d:ro",
                                                 "nginx-include:/etc/nginx/stageflow/production:ro"]
    assert {"nginx-site", "nginx-include"} <= set(doc["volumes"])
    staging = doc_for(project, "staging")["services"]["nginx"]["volumes"]
    assert "./deploy/nginx/staging:/etc/nginx/stageflow/staging:ro" in staging  # the local engine mounts it
    assert services["nginx"]["depends_on"] == {"backend": {"condition": "service_healthy"}}
    test = services["db"]["healthcheck"]["test"]
    assert test[:4] == ["CMD", "pg_isready", "-h", "127.0.0.1"]
    assert "redis-cli ping" in services["redis"]["healthcheck"]["test"][1]
    web_check = services["backend"]["healthcheck"]
    assert web_check["test"][:5] == ["CMD", "python", "-I", "-S", "-c"]
    assert "('127.0.0.1', 8000)" in web_check["test"][5] and "GET /health/ HTTP/1.0" in web_check["test"][5]
    assert web_check["interval"] == "2s"  # Docker's first check, which a cutover waits for


def test_staging_proxy_is_published_on_loopback_only(project: tuple[Path, ProjectConfig]) -> None:
    # staging's URL is http://127.0.0.1:8002: plain HTTP on that port, bound to loopback.
    assert doc_for(project, "staging")["services"]["nginx"]["ports"] == ["127.0.0.1:8002:8002"]


def test_dev_profile_mounts_source_and_reloads(project: tuple[Path, ProjectConfig]) -> None:
    services = doc_for(project, "dev")["services"]
    backend = services["backend"]
    assert backend["volumes"][0] == ".:/app"
    assert backend["working_dir"] == "/app"
    assert backend["command"].endswith("--reload")
    assert backend["ports"] == ["127.0.0.1:8001:8000"]
    assert backend["deploy"]["replicas"] == 1
    assert "nginx" not in services


def write_project(root: Path, data: dict[str, Any]) -> Path:
    """A Practika-shaped project (env files included) whose ``stageflow.yml`` is ``data``."""
    write_practika_project(root)
    (root / "stageflow.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root


def test_image_overrides_per_environment(tmp_path: Path) -> None:
    data: dict[str, Any] = copy.deepcopy(PRACTIKA)
    data["environments"]["staging"]["images"] = {
        "db": "local/postgres:test",
        "redis": "local/redis:test",
        "nginx": "local/nginx:test",
        "base": "local/python:test",
    }
    root = write_project(tmp_path, data)
    config = load_project(root)
    services = build_compose(config, "staging", root=root)["services"]
    assert services["db"]["image"] == "local/postgres:test"
    assert services["redis"]["image"] == "local/redis:test"
    assert services["nginx"]["image"] == "local/nginx:test"
    assert services["backend"]["build"]["args"]["BASE_IMAGE"] == "local/python:test"
    # Other environments keep the official images.
    assert build_compose(config, "production", root=root)["services"]["db"]["image"] == "postgres:16"


def test_hot_reload_overrides_the_environment_name(tmp_path: Path) -> None:
    data: dict[str, Any] = copy.deepcopy(PRACTIKA)
    data["environments"]["staging"]["hot_reload"] = True
    data["environments"]["dev"]["hot_reload"] = False
    root = write_project(tmp_path, data)
    config = load_project(root)
    staging = build_compose(config, "staging", root=root)["services"]
    assert staging["backend"]["volumes"][0] == ".:/app" and "nginx" not in staging
    dev = build_compose(config, "dev", root=root)["services"]
    assert not dev["backend"]["volumes"][0].startswith(".:") and "nginx" in dev


def test_web_healthcheck_compares_the_status_with_expect(tmp_path: Path) -> None:
    import http.server
    import subprocess
    import sys
    import threading

    from stageflow.config.models import HealthCheck, Service
    from stageflow.generate.compose import _web_healthcheck

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health/" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]

    def check(path: str, expect: int, at: int = port) -> int:
        svc = Service(command="app {port}", port=at, health=HealthCheck(path=path, expect=expect, timeout=2))
        return subprocess.run([sys.executable, *_web_healthcheck(svc)["test"][2:]], timeout=10).returncode

    try:
        assert check("/health/", 200) == 0
        assert check("/broken/", 200) == 1
        assert check("/broken/", 503) == 0  # a non-200 `expect` works too
        server.shutdown()
        server.server_close()
        assert check("/health/", 200) == 1  # refused
    finally:
        server.server_close()


def test_custom_service_healthcheck(tmp_path: Path) -> None:
    data: dict[str, Any] = copy.deepcopy(PRACTIKA)
    data["services"]["worker"]["healthcheck"] = "test -f /tmp/worker-alive"
    root = write_project(tmp_path, data)
    worker = build_compose(load_project(root), "production", root=root)["services"]["worker"]
    assert worker["healthcheck"]["test"] == ["CMD-SHELL", "test -f /tmp/worker-alive"]


def test_dollar_signs_are_escaped_for_compose(tmp_path: Path) -> None:
    data: dict[str, Any] = copy.deepcopy(PRACTIKA)
    data["services"]["worker"]["command"] = "sh -c 'echo $HOME'"
    root = tmp_path / "app"
    write_practika_project(root)
    (root / "stageflow.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    doc = build_compose(load_project(root), "staging", root=root)
    assert doc["services"]["worker"]["command"] == "sh -c 'echo $$HOME'"


def test_paths_are_relative_to_the_output_directory(project: tuple[Path, ProjectConfig]) -> None:
    root, config = project
    doc = build_compose(config, "staging", root=root, out_dir=root / "deploy" / "compose")
    assert doc["services"]["backend"]["build"]["context"] == "../.."
    assert doc["services"]["backend"]["env_file"][0] == "../../.env.staging"
    assert doc["services"]["nginx"]["volumes"][0].startswith("../nginx/staging:")


def test_sqlite_projects_get_a_data_volume_and_no_db(tmp_path: Path) -> None:
    data: dict[str, Any] = copy.deepcopy(PRACTIKA)
    data["database"] = {"engine": "sqlite"}
    data["cache"] = {"engine": "none"}
    root = tmp_path / "app"
    write_practika_project(root)
    (root / "stageflow.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    doc = build_compose(load_project(root), "staging", root=root)
    assert "db" not in doc["services"] and "redis" not in doc["services"]
    assert "sqlite:/app/data" in doc["services"]["backend"]["volumes"]
    assert "depends_on" not in doc["services"]["backend"]


def test_rendered_yaml_round_trips(project: tuple[Path, ProjectConfig]) -> None:
    doc = doc_for(project, "production")
    text = render_compose(doc, "production")
    assert text.startswith("# Generated by `stageflow config compose production`")
    assert yaml.safe_load(text) == doc
    # The health-check script is a readable literal block.
    assert "- |\n" in text


def test_write_compose_writes_the_seed_name(project: tuple[Path, ProjectConfig]) -> None:
    root, config = project
    path = write_compose(config, "production", root=root)
    assert path == root / "docker-compose.prod.yml"
    assert yaml.safe_load(path.read_text())["name"] == "practika-production"


def test_unknown_environment_is_a_config_error(project: tuple[Path, ProjectConfig]) -> None:
    root, config = project
    with pytest.raises(ConfigError):
        build_compose(config, "qa", root=root)


# ---------------------------------------------------------------- CLI


def cli() -> typer.Typer:
    from stageflow.cli.config_gen import register

    app = typer.Typer()
    register(app)
    return app


def test_cli_compose_resolves_aliases_and_writes_into_root(project: tuple[Path, ProjectConfig]) -> None:
    root, _ = project
    result = CliRunner().invoke(cli(), ["compose", "prod", "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert (root / "docker-compose.prod.yml").is_file()
    assert "docker-compose.prod.yml" in result.output


def test_cli_compose_output_option(project: tuple[Path, ProjectConfig], tmp_path: Path) -> None:
    root, _ = project
    out = tmp_path / "out"
    result = CliRunner().invoke(cli(), ["compose", "staging", "--root", str(root), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "docker-compose.staging.yml").is_file()


def test_cli_compose_unknown_env_is_a_usage_error(project: tuple[Path, ProjectConfig]) -> None:
    root, _ = project
    result = CliRunner().invoke(cli(), ["compose", "qa", "--root", str(root)])
    assert isinstance(result.exception, UsageError)
    assert isinstance(result.exception, StageflowError) and result.exception.exit_code == 2
    assert "known: dev, staging, production (prod)" in str(result.exception)


def test_cli_module_imports_stay_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, stageflow.cli.config_gen\n"
        "heavy = [m for m in ('jinja2', 'yaml', 'pydantic', 'rich') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


@pytest.mark.parametrize("env", ["dev", "staging", "production"])
def test_host_placeholder_becomes_every_interface(tmp_path: Path, env: str) -> None:
    # The example's command binds {host}:{port}; a literal {host} would keep gunicorn from starting.
    data: dict[str, Any] = copy.deepcopy(PRACTIKA)
    data["services"]["backend"]["command"] = "gunicorn practika.wsgi --bind {host}:{port} --workers 2"
    root = tmp_path / "app"
    write_practika_project(root)
    (root / "stageflow.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    command = build_compose(load_project(root), env, root=root)["services"]["backend"]["command"]
    assert command.startswith("gunicorn practika.wsgi --bind 0.0.0.0:8000 --workers 2")
