"""The validated-config cache: same result as validating, keyed by content, never stale, never leaky."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stageflow.config import cache, loader
from stageflow.config.loader import load_env_context, load_project
from stageflow.config.models import ProjectConfig
from stageflow.errors import ConfigError
from tests.unit.test_config import BASE

#: Every section and most keys set away from their defaults.
FULL = """
project: shop
services:
  web:
    build: web
    image: shop/web
    command: "gunicorn app --bind {host}:{port}"
    port: 8000
    release: python manage.py migrate
    health: {path: /ready/, expect: 204, timeout: 250ms, interval: 2s, deadline: 2m}
    replicas: 3
    healthcheck: "curl -f localhost:8000/ready/"
  worker: {command: "python worker.py"}
database: {engine: postgres, name: "shop_{env}", user: shop, password: "${POSTGRES_PASSWORD}", port: "${PGPORT:-5433}"}
cache: {engine: redis, url: "redis://127.0.0.1:6379/1", image: "redis:7.2"}
nginx: {enabled: "on", binary: /usr/sbin/nginx}
environments:
  dev:
    url: "${DEV_URL:-http://127.0.0.1:8001/}"
    app_ports: [18001, 28001]
    require_clean_git: false
    watch: 1s
    variables: {PRICE: "$$5", OTHER: "${ONLY_IN_DEV:-x}"}
  production:
    url: https://shop.example.com
    aliases: [prod, live]
    approval: required
    required: [SECRET_KEY]
    env_file: config/prod.env
    database: {engine: sqlite, path: "data/{env}.db"}
    replicas: 2
    deadline: 10m
    skip_checks: [disk]
    proxy: {domain: shop.example.com, allow: [10.0.0.0/8], admin_allow: [127.0.0.1], basic_auth: true}
    images: {web: "shop/web:1.2"}
    hot_reload: false
    variables: {NEEDS: "${ONLY_IN_PROD}"}
promotion: [dev, production]
backups: {keep: 3, format: custom, dir: backups, min_free_mb: 5}
releases: {keep: 4, requirements: req.txt, venv_dir: "venvs/{env}"}
monitoring: {interval: 30s, thresholds: {cpu: 70, memory: 75.5, disk: 80, response_time_ms: 900, error_rate: 2}}
alerts: {slack: {webhook: "${SLACK_WEBHOOK}", channel: "#ops"}, webhooks: [{url: "http://127.0.0.1:9/hook"}]}
"""


def project(tmp_path: Path, text: str, *, state: bool = True) -> Path:
    (tmp_path / "stageflow.yml").write_text(text)
    if state:
        (tmp_path / ".stageflow").mkdir()
    loader._memo.clear()
    loader._unsaved.clear()
    return tmp_path


def cold(root: Path) -> ProjectConfig:
    """Load as a new process would: nothing memoised in this one."""
    loader._memo.clear()
    return load_project(root)


@pytest.mark.parametrize("text", [BASE, FULL], ids=["base", "full"])
def test_cached_config_equals_the_validated_one(tmp_path: Path, text: str) -> None:
    root = project(tmp_path, text)
    validated = cold(root)
    assert (root / ".stageflow/cache/config.json").is_file()
    from_cache = cold(root)
    assert from_cache == validated
    assert dataclasses.asdict(from_cache) == dataclasses.asdict(validated)
    if text is FULL:
        # Types survive the JSON round trip, not only values.
        assert type(from_cache.environments["dev"].app_ports) is tuple
        assert from_cache.services["web"].health.timeout == 0.25


def test_cache_file_is_private_and_holds_no_resolved_variable(tmp_path: Path) -> None:
    root = project(tmp_path, FULL)
    (root / ".env.dev").write_text('POSTGRES_PASSWORD="s3cret-canary"\nSLACK_WEBHOOK=h\n')
    ctx = load_env_context(root, "dev", environ={})
    assert ctx.database.password == "s3cret-canary"
    path = root / ".stageflow/cache/config.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert "s3cret-canary" not in path.read_text() and "${POSTGRES_PASSWORD}" in path.read_text()


def test_an_edit_is_a_miss_and_errors_still_name_the_key(tmp_path: Path) -> None:
    root = project(tmp_path, BASE)
    cold(root)
    (root / "stageflow.yml").write_text(BASE.replace("8001", "8009"))
    assert cold(root).environments["dev"].url == "http://127.0.0.1:8009"
    (root / "stageflow.yml").write_text(BASE.replace("dev: {url", "dev: {colour: red, url"))
    with pytest.raises(ConfigError, match=r"environments\.dev\.colour: unknown key"):
        cold(root)


def test_a_damaged_or_foreign_cache_is_a_miss(tmp_path: Path) -> None:
    root = project(tmp_path, BASE)
    good = cold(root)
    path = root / ".stageflow/cache/config.json"
    doc = json.loads(path.read_text())
    for junk in ("{not json", json.dumps({**doc, "config": {"project": 1}}), json.dumps({**doc, "source": "x"}),
                 "[]"):
        path.write_text(junk)
        assert cold(root) == good
    assert json.loads(path.read_text())["config"]["project"] == "shop"  # rewritten by the last miss


def test_no_state_directory_is_created_for_the_cache(tmp_path: Path) -> None:
    root = project(tmp_path, BASE, state=False)
    cold(root)
    assert not (root / ".stageflow").exists()
    # A deploy creates it after loading the config: the same process saves on its next load.
    (root / ".stageflow").mkdir()
    load_project(root)
    assert (root / ".stageflow/cache/config.json").is_file()


def test_the_schema_is_part_of_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = project(tmp_path, BASE)
    good = cold(root)
    fingerprint = cache._schema_fingerprint()
    assert fingerprint.count("|") == 3  # version + models, durations, checks
    # Another stageflow (or an edited schema) does not trust this cache: it validates again.
    monkeypatch.setattr(cache, "_schema_fingerprint", lambda: fingerprint + "-other")
    assert cache.load(root / ".stageflow", (root / "stageflow.yml").read_bytes()) is None
    assert cold(root) == good
    assert json.loads((root / ".stageflow/cache/config.json").read_text())["schema"].endswith("-other")


def test_variables_are_substituted_per_environment(tmp_path: Path) -> None:
    root = project(tmp_path, FULL)
    (root / ".env.dev").write_text("POSTGRES_PASSWORD=pw\n")
    ctx = load_env_context(root, "dev", environ={"SLACK_WEBHOOK": "http://127.0.0.1:9/slack"})
    # dev's section and the shared ones are resolved; production's ${ONLY_IN_PROD} is not needed.
    assert ctx.env.url == "http://127.0.0.1:8001"  # default used, then normalised by the URL check
    assert ctx.env.variables == {"PRICE": "$5", "OTHER": "x"}
    assert ctx.database.port == "5433" and ctx.config.alerts.slack is not None
    assert ctx.config.alerts.slack.webhook == "http://127.0.0.1:9/slack"
    assert ctx.config.environments["production"].variables == {"NEEDS": "${ONLY_IN_PROD}"}
    with pytest.raises(ConfigError, match=r"environments\.dev\.url: must be an http\(s\) URL"):
        load_env_context(root, "dev", environ={"DEV_URL": "ftp://x", "POSTGRES_PASSWORD": "pw",
                                               "SLACK_WEBHOOK": "x"})
    with pytest.raises(ConfigError, match=r"environments\.production\.variables\.NEEDS: variable \$\{ONLY_IN_PROD\}"):
        load_env_context(root, "production", environ={"POSTGRES_PASSWORD": "pw", "SLACK_WEBHOOK": "x"})


def test_a_cache_hit_imports_neither_pydantic_nor_yaml(tmp_path: Path) -> None:
    root = project(tmp_path, FULL)
    cold(root)
    code = (
        "import sys; from pathlib import Path\n"
        "from stageflow.config.loader import load_project\n"
        f"cfg = load_project(Path({str(root)!r}))\n"
        "print(cfg.project, sorted(m for m in ('pydantic', 'yaml') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["shop", "[]"]
    (root / "stageflow.yml").write_text(FULL + "\n# edited\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "shop ['pydantic', 'yaml']"


# --- property: whatever validates, the cache gives back exactly ------------------------------------

_names = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_duration = st.one_of(st.integers(0, 10_000), st.floats(0, 1e4, allow_nan=False),
                      st.sampled_from(["30s", "250ms", "5m", "1h", "1.5s"]))


def _optional(**fields: st.SearchStrategy[object]) -> st.SearchStrategy[dict[str, object]]:
    """A mapping holding any subset of ``fields``."""
    return st.fixed_dictionaries({}, optional=fields)


_health = _optional(path=st.just("/") | st.from_regex(r"/[a-z/]{0,10}", fullmatch=True),
                    expect=st.integers(100, 599), timeout=_duration, interval=_duration, deadline=_duration)
_database = _optional(engine=st.sampled_from(["postgres", "sqlite", "none"]), name=_text, user=_text,
                      password=st.none() | _text, port=st.integers(1, 65535) | _text, path=_text)
_proxy = _optional(domain=st.none() | _text, tls=st.none() | st.booleans(), allow=st.lists(_text, max_size=2),
                   admin_paths=st.lists(_text, max_size=2), basic_auth=st.none() | st.booleans())
_environment = st.fixed_dictionaries(
    {"url": st.sampled_from(["http://127.0.0.1:8001", "https://shop.example.com/", "${URL}"])},
    optional={
        "runtime": st.sampled_from(["local", "compose"]),
        "require_clean_git": st.none() | st.booleans(),
        "approval": st.sampled_from(["auto", "required"]),
        "app_ports": st.none() | st.tuples(st.integers(1, 30000), st.integers(30001, 65535)),
        "variables": st.dictionaries(st.from_regex(r"[A-Z]{1,6}", fullmatch=True), _text, max_size=3),
        "required": st.lists(_text, max_size=2),
        "database": st.none() | _database,
        "replicas": st.integers(1, 50),
        "watch": _duration,
        "proxy": st.none() | _proxy,
        "images": st.dictionaries(_names, _text, max_size=2),
        "hot_reload": st.none() | st.booleans(),
    },
)
_config = st.fixed_dictionaries(
    {
        "project": _names,
        "services": st.fixed_dictionaries(
            {"web": _optional(command=_text.map(lambda c: c + " {port}"), release=st.none() | _text,
                              health=st.none() | _health, replicas=st.integers(1, 50))
                    .map(lambda s: {**s, "port": 8000})},
            optional={"worker": _optional(command=_text, replicas=st.integers(1, 50))},
        ),
        "environments": st.dictionaries(_names, _environment, min_size=1, max_size=3),
    },
    optional={
        "database": _database,
        "cache": st.none() | _optional(engine=st.sampled_from(["redis", "none"]), url=st.none() | _text),
        "backups": _optional(keep=st.integers(1, 1000), format=st.sampled_from(["plain", "custom"])),
        "releases": _optional(keep=st.integers(2, 1000), venv_dir=_text),
        "monitoring": _optional(interval=_duration,
                                thresholds=_optional(cpu=st.floats(0, 100), disk=st.integers(0, 100))),
        "alerts": _optional(slack=st.none() | st.fixed_dictionaries({"webhook": _text}),
                            webhooks=st.lists(st.fixed_dictionaries({"url": _text}), max_size=2)),
    },
)


@settings(max_examples=150, deadline=None)
@given(_config)
def test_any_valid_config_comes_back_from_the_cache_unchanged(data: dict[str, object]) -> None:
    validated = loader._validate(Path("stageflow.yml"), json.loads(json.dumps(data)))
    round_trip = cache.decode(ProjectConfig, json.loads(json.dumps(dataclasses.asdict(validated))))
    assert round_trip == validated
    assert [type(e.app_ports) for e in round_trip.environments.values()] == [
        type(e.app_ports) for e in validated.environments.values()
    ]
