"""``security:``, ``loadtest:`` and ``gates:`` in stageflow.yml (and pyproject.toml): defaults and key-path errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from stageflow.config.loader import load_project
from stageflow.errors import ConfigError
from stageflow.security.scan import pyproject_security

BASE: dict[str, Any] = {
    "project": "shop",
    "services": {"web": {"command": "x {port}", "port": 8000}},
    "environments": {"staging": {"url": "http://127.0.0.1:18002"}},
}


def write(root: Path, **sections: Any) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "stageflow.yml").write_text(yaml.safe_dump({**BASE, **sections}))
    return root


def test_defaults(tmp_path: Path) -> None:
    cfg = load_project(write(tmp_path / "a"))
    assert (cfg.security.fail_on, cfg.security.accept, cfg.security.vulnerability_service) == ("high", [], "pypi")
    assert (cfg.loadtest.rate, cfg.loadtest.duration, cfg.loadtest.paths) == (10.0, 30.0, ["/health/"])
    assert (cfg.gates.coverage, cfg.gates.p95, cfg.gates.error_rate, cfg.gates.memory_growth_mb) == (80, 2, 1, 100)


def test_values_are_read(tmp_path: Path) -> None:
    cfg = load_project(write(
        tmp_path / "a",
        security={"fail_on": "critical", "accept": [{"id": "bandit:*", "reason": "legacy", "expires": "2030-01-01"}]},
        loadtest={"rate": 2.5, "duration": "2m", "paths": ["/", "/api/"]},
        gates={"p95": "500ms", "coverage": 90},
    ))
    assert cfg.security.accept[0].expires == "2030-01-01" and cfg.security.fail_on == "critical"
    assert (cfg.loadtest.rate, cfg.loadtest.duration) == (2.5, 120.0) and cfg.gates.p95 == 0.5


@pytest.mark.parametrize(("sections", "message"), [
    ({"security": {"fail_on": "severe"}}, "security.fail_on:"),
    ({"security": {"accept": [{"id": "x", "reason": "because", "expires": "next year"}]}},
     "security.accept[0].expires: must be a date like 2026-12-31"),
    ({"security": {"accept": [{"id": "x", "expires": "2030-01-01"}]}},
     "security.accept[0].reason: required key is missing"),
    ({"loadtest": {"paths": ["health"]}}, "loadtest.paths: 'health' must be a path starting with '/'"),
    ({"loadtest": {"rate": 10000}}, "loadtest.rate:"),
    ({"gates": {"coverage": 120}}, "gates.coverage:"),
    ({"gates": {"speed": 1}}, "gates.speed: unknown key"),
])
def test_errors_name_the_key(tmp_path: Path, sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_project(write(tmp_path / "a", **sections))
    assert message in str(err.value)


def test_pyproject_settings_for_a_repository_that_is_not_an_app(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.stageflow.security]\nexclude = ["tests"]\n\n'
        '[[tool.stageflow.security.accept]]\nid = "bandit:B701:*"\nreason = "not HTML"\nexpires = "2030-01-01"\n'
    )
    sec = pyproject_security(tmp_path)
    assert sec is not None and sec.exclude == ["tests"] and sec.accept[0].id == "bandit:B701:*"
    (tmp_path / "pyproject.toml").write_text(
        '[tool.stageflow.security]\naccept = [{id = "x", reason = "ok!", expires = "soon"}]\n')
    with pytest.raises(ConfigError, match=r"tool\.stageflow\.security\.accept\[0\]\.expires: must be a date"):
        pyproject_security(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[tool.stageflow.security\n")
    with pytest.raises(ConfigError, match=r"pyproject\.toml"):
        pyproject_security(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert pyproject_security(tmp_path) is None
