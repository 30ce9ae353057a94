"""Behaviour once keyed on the names ``production``/``staging`` comes from per-environment settings.

A project whose environments are ``dev``, ``preprod`` and ``live`` (``live: production: true``,
``preprod: staging: true``) gets what ``staging`` and ``production`` get by name: validation
strictness, the production env template, the compose file name, the nginx defaults and the CI's
deploy stages. The original names keep their behaviour without any setting.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stageflow.config.loader import load_project
from stageflow.configmgr.generate import generate_env, setup_envs
from stageflow.configmgr.templates import resolve_template
from stageflow.configmgr.validation import validate_environment
from stageflow.errors import ConfigError, UsageError
from stageflow.generate.compose import compose_filename
from stageflow.generate.nginx import site_options
from stageflow.generate.workflow import WorkflowOptions, render_workflow

SERVICES = {"backend": {"port": 8000, "command": "gunicorn practika.wsgi --bind {host}:{port}"}}
RENAMED = {
    "dev": {"url": "http://127.0.0.1:8001"},
    "preprod": {"url": "http://127.0.0.1:8002", "staging": True},
    "live": {"url": "https://live.example.com", "production": True},
}
NAMED = {
    "dev": {"url": "http://127.0.0.1:8001"},
    "staging": {"url": "http://127.0.0.1:8002"},
    "production": {"url": "https://live.example.com"},
}


def project(root: Path, envs: dict[str, dict[str, object]], **extra: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    doc = {"project": "practika", "services": SERVICES, "environments": envs, **extra}
    (root / "stageflow.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


@pytest.fixture(params=["renamed", "named"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str, str]:
    """(app root, staging env, production env): the same project under both sets of names."""
    if request.param == "renamed":
        return project(tmp_path / "app", RENAMED, promotion=["dev", "preprod", "live"]), "preprod", "live"
    return project(tmp_path / "app", NAMED), "staging", "production"


def test_roles_come_from_the_settings(pair: tuple[Path, str, str]) -> None:
    root, staging, production = pair
    config = load_project(root)
    assert (config.staging_env, config.production_env) == (staging, production)
    assert [e for e in config.environments if config.is_production(e)] == [production]
    assert [e for e in config.environments if config.is_staging(e)] == [staging]


def test_validation_is_production_grade(pair: tuple[Path, str, str]) -> None:
    root, _, production = pair
    setup_envs(root, environ={})
    report = validate_environment(root, production, environ={}, run_django_check=False)
    assert report.ok, report.items
    assert "production" in report.checks
    # A weak generated secret is an error in a production-grade env, a warning elsewhere.
    env_file = root / f".env.{production}"
    env_file.write_text(env_file.read_text().replace("DEBUG=\"0\"", "DEBUG=1"))
    report = validate_environment(root, production, environ={}, run_django_check=False)
    assert [i.key for i in report.errors] == ["DEBUG"]
    cfg = yaml.safe_load((root / "stageflow.yml").read_text())
    cfg["environments"][production]["url"] = "http://live.example.com"
    (root / "stageflow.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    report = validate_environment(root, production, environ={}, run_django_check=False)
    assert f"environments.{production}.url" in [i.key for i in report.errors]


def test_weak_secret_strictness_follows_the_setting(pair: tuple[Path, str, str]) -> None:
    root, staging, production = pair
    setup_envs(root, environ={})
    for env, level in ((production, "errors"), (staging, "warnings")):
        path = root / f".env.{env}"
        lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("SECRET_KEY=")]
        path.write_text("\n".join([*lines, "SECRET_KEY=short"]) + "\n")
        report = validate_environment(root, env, environ={}, run_django_check=False)
        assert "SECRET_KEY" in [i.key for i in getattr(report, level)], (env, report.items)


def test_env_template_follows_the_setting(pair: tuple[Path, str, str]) -> None:
    root, staging, production = pair
    config = load_project(root)
    assert resolve_template(root, config, production).label == "built-in production"
    assert resolve_template(root, config, staging).label == "built-in staging"
    assert resolve_template(root, config, "dev").label == "built-in dev"
    generate_env(root, production, environ={})
    text = (root / f".env.{production}").read_text()
    assert "# stageflow-template: production" in text and 'SECURE_HSTS_SECONDS="31536000"' in text


def test_a_configured_template_wins_and_a_missing_one_names_its_key(tmp_path: Path) -> None:
    envs = {**RENAMED, "dev": {"url": "http://127.0.0.1:8001", "template": "production"}}
    root = project(tmp_path / "app", envs)
    config = load_project(root)
    assert resolve_template(root, config, "dev").label == "built-in production"
    assert resolve_template(root, config, "dev", "staging").label == "built-in staging"  # --template wins
    root = project(tmp_path / "other", {"dev": {"url": "http://127.0.0.1:8001", "template": "nosuch"}})
    with pytest.raises(UsageError, match=r"environments\.dev\.template: template 'nosuch' not found"):
        resolve_template(root, load_project(root), "dev")


def test_compose_file_name_follows_the_setting(pair: tuple[Path, str, str]) -> None:
    root, staging, production = pair
    config = load_project(root)
    assert compose_filename(config, production) == "docker-compose.prod.yml"
    assert compose_filename(config, staging) == f"docker-compose.{staging}.yml"
    assert compose_filename(config, "dev") == "docker-compose.dev.yml"


def test_compose_file_is_a_setting_checked_for_clashes(tmp_path: Path) -> None:
    envs = {**RENAMED, "dr": {"url": "https://dr.example.com", "production": True}}
    config = load_project(project(tmp_path / "a", envs, promotion=["dev", "preprod", "live"]))
    # The second production-grade environment keeps its own name; only the first is "prod".
    assert compose_filename(config, "dr") == "docker-compose.dr.yml"
    envs["dr"] = {"url": "https://dr.example.com", "compose_file": "stack-dr.yaml"}
    assert compose_filename(load_project(project(tmp_path / "b", envs)), "dr") == "stack-dr.yaml"
    envs["dr"] = {"url": "https://dr.example.com", "compose_file": "docker-compose.prod.yml"}
    with pytest.raises(ConfigError, match=r"environments\.dr\.compose_file: docker-compose\.prod\.yml is also live"):
        load_project(project(tmp_path / "c", envs))
    envs["dr"] = {"url": "https://dr.example.com", "compose_file": "../up.yml"}
    with pytest.raises(ConfigError, match=r"environments\.dr\.compose_file: must be a file name"):
        load_project(project(tmp_path / "d", envs))
    envs["dr"] = {"url": "https://dr.example.com", "production": True, "staging": True}
    with pytest.raises(ConfigError, match=r"environments\.dr: staging and production cannot both be true"):
        load_project(project(tmp_path / "e", envs))


def test_nginx_defaults_follow_the_settings(pair: tuple[Path, str, str]) -> None:
    root, staging, production = pair
    config = load_project(root)
    prod = site_options(config, production, root=root)
    assert prod.admin_allow == ("127.0.0.1/32", "::1/128") and not prod.basic_auth and prod.tls
    stage = site_options(config, staging, root=root)
    assert stage.basic_auth and stage.admin_allow == ()
    dev = site_options(config, "dev", root=root)
    assert not dev.basic_auth and dev.admin_allow == ()


def test_ci_deploys_the_staging_and_production_environments(pair: tuple[Path, str, str]) -> None:
    root, staging, production = pair
    config = load_project(root)
    doc = yaml.safe_load(render_workflow(WorkflowOptions(
        staging_env=config.staging_env, production_env=config.production_env,
        staging_url=config.environments[staging].url, production_url=config.environments[production].url)))
    jobs = doc["jobs"]
    for stage, env in (("deploy-staging", staging), ("deploy-production", production)):
        assert jobs[stage]["environment"]["name"] == env
        assert jobs[stage]["steps"][-1]["env"]["TARGET_ENV"] == env
        assert jobs[stage]["name"].endswith(f"Deploy {env}")
    assert jobs["deploy-production"]["environment"]["url"] == "https://live.example.com"
    assert jobs["deploy-production"]["concurrency"]["group"] == "deploy-production"


def test_ci_without_a_production_environment_refuses_its_stage() -> None:
    with pytest.raises(UsageError, match="deploy-production needs a production environment"):
        render_workflow(WorkflowOptions(production_env=None))
    doc = yaml.safe_load(render_workflow(WorkflowOptions(
        production_env=None, stages=("quality", "deploy-staging"))))
    assert list(doc["jobs"]) == ["quality", "deploy-staging", "notify"]


def test_the_scripts_role_words_reach_the_env_playing_the_role(pair: tuple[Path, str, str]) -> None:
    from stageflow.config.loader import resolve_env_name

    root, staging, production = pair
    config = load_project(root)
    assert resolve_env_name(config, "staging") == staging
    assert resolve_env_name(config, "prod") == resolve_env_name(config, "production") == production
    assert resolve_env_name(config, "dev") == "dev"
    with pytest.raises(UsageError, match="unknown environment 'qa'"):
        resolve_env_name(config, "qa")


def test_an_env_named_like_a_role_word_wins_over_the_role(tmp_path: Path) -> None:
    from stageflow.config.loader import resolve_env_name

    envs = {**RENAMED, "staging": {"url": "http://127.0.0.1:8003"}}
    config = load_project(project(tmp_path / "app", envs, promotion=["dev", "preprod", "live"]))
    assert resolve_env_name(config, "staging") == "staging"


def test_the_dev_profile_never_goes_to_a_production_or_staging_grade_env(tmp_path: Path) -> None:
    from stageflow.generate.compose import is_dev

    envs = {"local": {"url": "http://127.0.0.1:8001", "production": True},
            "dev": {"url": "http://127.0.0.1:8002", "staging": True},
            "development": {"url": "http://127.0.0.1:8003"},
            "qa": {"url": "http://127.0.0.1:8004", "hot_reload": True}}
    config = load_project(project(tmp_path / "app", envs))
    assert {e: is_dev(config, e) for e in envs} == {"local": False, "dev": False, "development": True, "qa": True}
