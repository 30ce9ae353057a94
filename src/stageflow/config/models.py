"""pydantic models, one per section of ``stageflow.yml``.

Unknown keys are rejected everywhere (``extra="forbid"``) so a typo is an error, not a silent
default. Strings may still hold ``${VAR}`` references here: they are resolved per environment by
:mod:`stageflow.config.loader`, and validators leave such strings alone.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stageflow.config.durations import Duration

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


def _has_ref(value: str) -> bool:
    return "${" in value


class Strict(BaseModel):
    """Base for every section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class HealthCheck(Strict):
    """HTTP health gate of a web service."""

    path: str = "/health/"
    expect: int = Field(200, ge=100, le=599)
    timeout: Duration = 5.0
    interval: Duration = 1.0
    deadline: Duration = 60.0

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with '/', like /health/")
        return v


class Service(Strict):
    """One process type of the app (web backend, worker...)."""

    build: str | None = "."
    image: str | None = None
    command: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    release: str | None = None
    health: HealthCheck | None = None
    replicas: int = Field(1, ge=1, le=50)
    healthcheck: str | None = None

    @model_validator(mode="after")
    def _web_needs_health(self) -> Service:
        if self.port is not None and self.health is None:
            object.__setattr__(self, "health", HealthCheck())
        return self


class Database(Strict):
    """The app's database. ``name`` and ``path`` may use ``{env}`` and ``{project}``."""

    engine: Literal["postgres", "sqlite", "none"] = "sqlite"
    name: str = "{project}_{env}"
    user: str = "{project}"
    password: str | None = None
    host: str = "127.0.0.1"
    port: int | str = 5432
    path: str = "data/{env}.sqlite3"
    image: str = "postgres:16"


class Cache(Strict):
    """Optional cache; ``url`` is passed to the app as REDIS_URL when set."""

    engine: Literal["redis", "none"] = "redis"
    url: str | None = None
    image: str = "redis:7"


class Nginx(Strict):
    """The proxy that makes local cutovers zero-downtime."""

    enabled: Literal["auto", "on", "off"] = "auto"
    binary: str = "nginx"


DEFAULT_CSP = (
    "default-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'; "
    "object-src 'none'; img-src 'self' data:"
)
DEFAULT_PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()"
)

class Proxy(Strict):
    """Per-environment reverse-proxy settings (proposed ``environments.<env>.proxy``).

    ``None`` means "derive from the environment": the domain from ``url``, TLS from its scheme,
    basic auth on for ``staging``, the admin allowlist loopback-only for ``production``.
    """

    domain: str | None = None
    tls: bool | None = None
    cert: str | None = None
    key: str | None = None
    chain: str | None = None
    resolvers: list[str] | None = None
    allow: list[str] = Field(default_factory=list)
    basic_auth: bool | None = None
    basic_auth_user: str | None = None
    admin_paths: list[str] = Field(default_factory=lambda: ["/admin/"])
    admin_allow: list[str] | None = None
    login_paths: list[str] = Field(default_factory=lambda: ["/admin/login/", "/accounts/login/"])
    api_paths: list[str] = Field(default_factory=lambda: ["/api/"])
    client_max_body_size: str = "10m"
    static_url: str = "/static/"
    static_root: str | None = None
    media_url: str = "/media/"
    media_root: str | None = None
    csp: str = DEFAULT_CSP
    permissions_policy: str = DEFAULT_PERMISSIONS_POLICY


class Environment(Strict):
    """One deployment target (dev, staging, production...)."""

    runtime: Literal["local", "compose"] = "local"
    url: str
    aliases: list[str] = Field(default_factory=list)
    require_clean_git: bool | None = None
    approval: Literal["auto", "required"] = "auto"
    app_ports: tuple[int, int] | None = None
    variables: dict[str, str] = Field(default_factory=dict)
    required: list[str] = Field(default_factory=list)
    env_file: str | None = None
    database: Database | None = None
    docker_host: str | None = None
    replicas: int = Field(1, ge=1, le=50)
    deadline: Duration = 900.0
    watch: Duration = 3.0
    drain: Duration = 10.0
    skip_checks: list[str] = Field(default_factory=list)
    proxy: Proxy | None = None
    images: dict[str, str] = Field(default_factory=dict)
    hot_reload: bool | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if _has_ref(v):
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL like http://127.0.0.1:8001")
        return v.rstrip("/")

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, v: list[str]) -> list[str]:
        for a in v:
            if not NAME_RE.match(a):
                raise ValueError(f"alias {a!r} must be lowercase letters, digits, '-' or '_'")
        return v

    @field_validator("app_ports")
    @classmethod
    def _ports(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is None:
            return v
        if v[0] == v[1] or not all(1 <= p <= 65535 for p in v):
            raise ValueError("needs two different ports between 1 and 65535")
        return v

    @property
    def url_port(self) -> int:
        """Port of the public URL (the proxy listens there)."""
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)


class Backups(Strict):
    """Backups taken before every deploy."""

    keep: int = Field(10, ge=1, le=1000)
    format: Literal["plain", "custom"] = "plain"
    dir: str = ".stageflow/backups"
    min_free_mb: int = Field(100, ge=0)


class Releases(Strict):
    """Release directories kept per environment."""

    keep: int = Field(5, ge=2, le=1000)
    requirements: str = "requirements.txt"
    venv_dir: str = ".stageflow/venvs/{env}"


class Thresholds(Strict):
    """Monitoring thresholds (percent, milliseconds)."""

    cpu: float = Field(80, ge=0, le=100)
    memory: float = Field(85, ge=0, le=100)
    disk: float = Field(90, ge=0, le=100)
    response_time_ms: float = Field(2000, gt=0)
    error_rate: float = Field(5, ge=0, le=100)


class Monitoring(Strict):
    """Monitoring settings."""

    interval: Duration = 60.0
    thresholds: Thresholds = Field(default_factory=Thresholds)


class SlackAlerts(Strict):
    """Slack incoming-webhook target."""

    webhook: str
    channel: str | None = None


class WebhookAlerts(Strict):
    """Generic JSON webhook target."""

    url: str


class Alerts(Strict):
    """Where alerts go."""

    slack: SlackAlerts | None = None
    webhooks: list[WebhookAlerts] = Field(default_factory=list)


class ProjectConfig(Strict):
    """The whole ``stageflow.yml``."""

    project: str
    services: dict[str, Service]
    database: Database = Field(default_factory=Database)
    cache: Cache | None = None
    environments: dict[str, Environment]
    promotion: list[str] | None = None
    backups: Backups = Field(default_factory=Backups)
    releases: Releases = Field(default_factory=Releases)
    nginx: Nginx = Field(default_factory=Nginx)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    alerts: Alerts = Field(default_factory=Alerts)

    @field_validator("project")
    @classmethod
    def _project(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must be lowercase letters, digits, '-' or '_', starting with a letter")
        return v

    @field_validator("services")
    @classmethod
    def _services(cls, v: dict[str, Service]) -> dict[str, Service]:
        if not v:
            raise ValueError("needs at least one service")
        for name in v:
            if not NAME_RE.match(name):
                raise ValueError(f"service name {name!r} must be lowercase letters, digits, '-' or '_'")
        if sum(1 for s in v.values() if s.port is not None) != 1:
            raise ValueError("exactly one service must have a port (the web service)")
        return v

    @field_validator("environments")
    @classmethod
    def _envs(cls, v: dict[str, Environment]) -> dict[str, Environment]:
        if not v:
            raise ValueError("needs at least one environment")
        seen: dict[str, str] = {}
        for name, env in v.items():
            if not NAME_RE.match(name):
                raise ValueError(f"environment name {name!r} must be lowercase letters, digits, '-' or '_'")
            for key in (name, *env.aliases):
                if key in seen and seen[key] != name:
                    raise ValueError(f"name {key!r} is used by both {seen[key]!r} and {name!r}")
                seen[key] = name
        return v

    @model_validator(mode="after")
    def _promotion(self) -> ProjectConfig:
        if self.promotion is not None:
            for name in self.promotion:
                if name not in self.environments:
                    raise ValueError(
                        f"promotion: {name!r} is not an environment (known: {', '.join(self.environments)})"
                    )
        return self

    @property
    def promotion_order(self) -> list[str]:
        """The environments ``full`` promotes through, in order."""
        return list(self.promotion) if self.promotion is not None else list(self.environments)

    @property
    def web_service(self) -> tuple[str, Service]:
        """The single service with a port."""
        for name, svc in self.services.items():
            if svc.port is not None:
                return name, svc
        raise AssertionError("validated: one service has a port")

    def canonical_env(self, name: str) -> str | None:
        """Resolve an environment name or alias; None when unknown."""
        if name in self.environments:
            return name
        for env_name, env in self.environments.items():
            if name in env.aliases:
                return env_name
        return None

    def database_for(self, env: str) -> Database:
        """The database section in force for ``env`` (the env's override or the top-level one)."""
        return self.environments[env].database or self.database
