"""The sections of ``stageflow.yml``: frozen dataclasses that pydantic validates.

They are plain dataclasses, not ``BaseModel``s, so that reading a validated config back from the
cache (:mod:`stageflow.config.cache`) costs no pydantic import; pydantic builds its validator only
when a file actually changed. Unknown keys are rejected everywhere (``extra="forbid"``) so a typo is
an error, not a silent default. Strings may still hold ``${VAR}`` references here: they are resolved
per environment by :mod:`stageflow.config.loader`, and checks marked ``recheck`` run again then.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from stageflow.config.checks import Bounds, Check
from stageflow.config.durations import Duration

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}\Z")
Port = Annotated[int, Bounds(ge=1, le=65535)]
Replicas = Annotated[int, Bounds(ge=1, le=50)]
Percent = Annotated[float, Bounds(ge=0, le=100)]


def field_types(cls: type) -> dict[str, Any]:
    """Resolved field annotations of a section, ``Annotated`` metadata kept; computed once per class."""
    found = _field_types.get(cls)
    if found is None:
        found = _field_types[cls] = typing.get_type_hints(cls, include_extras=True)
    return found


_field_types: dict[type, dict[str, Any]] = {}


def _has_ref(value: str) -> bool:
    return "${" in value


class Strict:
    """Base for every section: unknown keys are errors (read by pydantic when it validates).

    Equality and repr are written once here instead of generated per class: generating them costs
    ~12 ms of every command's start-up across the sections, for the same behaviour.
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(self))  # type: ignore[arg-type]

    __hash__ = None  # type: ignore[assignment]  # sections hold lists and dicts

    def __repr__(self) -> str:
        inner = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))  # type: ignore[arg-type]
        return f"{type(self).__name__}({inner})"


def _health_path(v: str) -> str:
    if not v.startswith("/"):
        raise ValueError("must start with '/', like /health/")
    return v


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class HealthCheck(Strict):
    """HTTP health gate of a web service."""

    path: Annotated[str, Check(_health_path)] = "/health/"
    expect: Annotated[int, Bounds(ge=100, le=599)] = 200
    timeout: Duration = 5.0
    interval: Duration = 1.0
    deadline: Duration = 60.0


def _health_shorthand(v: Any) -> Any:
    """``health: /healthz`` is short for ``health: {path: /healthz}``."""
    if isinstance(v, str):
        return {"path": v}
    if v is not None and not isinstance(v, dict | HealthCheck):
        raise ValueError("must be a path like /health/ or a mapping like {path: /health/, expect: 200}")
    return v


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Service(Strict):
    """One process type of the app (web backend, worker...)."""

    build: str | None = "."
    image: str | None = None
    command: str | None = None
    port: Port | None = None
    release: str | None = None
    health: Annotated[HealthCheck | None, Check(_health_shorthand, before=True)] = None
    replicas: Replicas = 1
    healthcheck: str | None = None

    def __post_init__(self) -> None:
        if self.port is not None and self.health is None:
            object.__setattr__(self, "health", HealthCheck())
        cmd = self.command or ""
        # A blank command or one with a NUL has its own error; one from a ${VAR} is known only later.
        if self.port is not None and cmd.strip() and "\0" not in cmd and "{port}" not in cmd and "${" not in cmd:
            # The app would listen where stageflow never probes: every health gate would time out.
            raise ValueError(f"command {self.command!r} of the web service must contain {{port}} (and may use "
                             "{host}), e.g. 'gunicorn app.wsgi --bind {host}:{port}': stageflow fills in the "
                             "port it starts and probes each release on")


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
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


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Cache(Strict):
    """Optional cache; ``url`` is passed to the app as REDIS_URL when set."""

    engine: Literal["redis", "none"] = "redis"
    url: str | None = None
    image: str = "redis:7"


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
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

@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Proxy(Strict):
    """Per-environment reverse-proxy settings (``environments.<env>.proxy``): what ``config nginx``
    writes and what the local runtime's nginx serves.

    ``None`` means "derive from the environment": the domain from ``url``, TLS from its scheme,
    basic auth on for the staging environment (``staging:``), the admin allowlist loopback-only for
    production-grade ones (``production:``).
    """

    domain: str | None = None
    tls: bool | None = None
    cert: str | None = None
    key: str | None = None
    chain: str | None = None
    resolvers: list[str] | None = None
    allow: list[str] = field(default_factory=list)
    basic_auth: bool | None = None
    basic_auth_user: str | None = None
    admin_paths: list[str] = field(default_factory=lambda: ["/admin/"])
    admin_allow: list[str] | None = None
    login_paths: list[str] = field(default_factory=lambda: ["/admin/login/", "/accounts/login/"])
    api_paths: list[str] = field(default_factory=lambda: ["/api/"])
    #: Rate limits per client address (nginx ``limit_req``): ``<n>r/s`` or ``<n>r/m``, and the burst
    #: let through at once. The health path is never limited (deploy gates, monitors, load tests).
    login_rate: str = "10r/m"
    login_burst: Annotated[int, Bounds(ge=0, le=100000)] = 5
    api_rate: str = "20r/s"
    api_burst: Annotated[int, Bounds(ge=0, le=100000)] = 40
    client_max_body_size: str = "10m"
    static_url: str = "/static/"
    static_root: str | None = None
    media_url: str = "/media/"
    media_root: str | None = None
    csp: str = DEFAULT_CSP
    permissions_policy: str = DEFAULT_PERMISSIONS_POLICY


_URL_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


def _env_url(v: str) -> str:
    if _has_ref(v):
        return v
    if any(c.isspace() or not c.isprintable() for c in v):
        raise ValueError("must be an http(s) URL without spaces or control characters")
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL like http://127.0.0.1:8001")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port: use a number between 1 and 65535") from None
    if port == 0:
        raise ValueError("has an invalid port: use a number between 1 and 65535")
    if parts.username is not None or parts.query or parts.fragment:
        raise ValueError("must be scheme://host[:port] (no user, query or fragment)")
    host = parts.hostname
    if not _URL_HOST.fullmatch(host):
        import ipaddress

        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"has an invalid host name {host!r}") from None
    return v.rstrip("/")


def _aliases(v: list[str]) -> list[str]:
    for a in v:
        if not NAME_RE.match(a):
            raise ValueError(f"alias {a!r} must be lowercase letters, digits, '-' or '_'")
    return v


def _app_ports(v: tuple[int, int] | None) -> tuple[int, int] | None:
    if v is None:
        return v
    if v[0] == v[1] or not all(1 <= p <= 65535 for p in v):
        raise ValueError("needs two different ports between 1 and 65535")
    return v


# Neither a user nor a host may start with "-": ssh would read it as an option.
_DOCKER_HOST = re.compile(r"(ssh://([A-Za-z0-9_][A-Za-z0-9._-]{0,63}@)?[A-Za-z0-9\[][A-Za-z0-9.:\[\]-]{0,254}"
                          r"(:[0-9]{1,5})?|tcp://[A-Za-z0-9\[][A-Za-z0-9.:\[\]-]{0,254}:[0-9]{1,5}"
                          r"|unix:///[A-Za-z0-9._/-]{1,255})")


def _docker_host(v: str | None) -> str | None:
    if v is None or _has_ref(v):
        return v
    if not _DOCKER_HOST.fullmatch(v):
        raise ValueError("must be ssh://[user@]host[:port], tcp://host:port or unix:///path (no path, "
                         "query, spaces or shell characters)")
    if v.startswith("ssh://"):
        try:
            port = urlsplit(v).port
        except ValueError:
            raise ValueError("has an invalid port: use a number between 1 and 65535") from None
        if port == 0:
            raise ValueError("has an invalid port: use a number between 1 and 65535")
    return v


#: ssh_config keywords ``ssh.options`` may set: none of them runs a command on this machine
#: (``ProxyCommand``, ``LocalCommand``, ``KnownHostsCommand``… are refused: use ``ProxyJump``).
SSH_OPTIONS = frozenset({
    "AddressFamily", "BatchMode", "CertificateFile", "CheckHostIP", "Ciphers", "Compression", "ConnectTimeout",
    "ConnectionAttempts", "ControlMaster", "ControlPath", "ControlPersist", "GSSAPIAuthentication",
    "HashKnownHosts", "HostKeyAlgorithms", "HostKeyAlias", "HostName", "IdentitiesOnly", "IdentityAgent",
    "IPQoS", "KexAlgorithms", "LogLevel", "MACs", "PreferredAuthentications", "ProxyJump",
    "PubkeyAcceptedAlgorithms", "PubkeyAuthentication", "RekeyLimit", "ServerAliveCountMax",
    "ServerAliveInterval", "StrictHostKeyChecking", "TCPKeepAlive", "UpdateHostKeys", "VerifyHostKeyDNS",
})
_SSH_VALUE = re.compile(r"[A-Za-z0-9_.,:@%+=/~\[\]-]{1,200}")


def _ssh_options(v: dict[str, str | int | bool]) -> dict[str, str | int | bool]:
    lower = {k.lower(): k for k in SSH_OPTIONS}
    for key, value in v.items():
        if key.lower() not in lower:
            raise ValueError(f"{key!r} is not an ssh option stageflow passes (allowed: ProxyJump, ConnectTimeout, "
                             "ServerAliveInterval, ControlPersist, … ; commands such as ProxyCommand never)")
        text = ("yes" if value else "no") if isinstance(value, bool) else str(value)
        if not _SSH_VALUE.fullmatch(text):
            raise ValueError(f"{key}: {text!r} must be one word without spaces, quotes or shell characters")
    return v


def _ssh_path(v: str | None) -> str | None:
    if v is not None and not _has_ref(v) and (not v or any(c in v for c in '"\n\r\x00\\') or v != v.strip()):
        raise ValueError("must be a file path without quotes, newlines or surrounding spaces")
    return v


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Ssh(Strict):
    """How ``ssh`` reaches an ``ssh://`` Docker host (the operator's own ssh config applies too)."""

    #: Private key (``~`` = the operator's home; a relative path is inside the app).
    identity: Annotated[str | None, Check(_ssh_path)] = None
    #: Known-hosts file pinning the host key (relative: inside the app, so it can be committed).
    known_hosts: Annotated[str | None, Check(_ssh_path)] = None
    #: Further ssh_config keywords (``ProxyJump``, ``ServerAliveInterval``…); no command-running ones.
    options: Annotated[dict[str, str | int | bool], Check(_ssh_options)] = field(default_factory=dict)


_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_COMPOSE_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\.ya?ml")


def _template_name(v: str | None) -> str | None:
    if v is not None and not _TEMPLATE_NAME.fullmatch(v):
        raise ValueError("must be a template name: letters, digits, '.', '-' or '_' (e.g. production)")
    return v


def _compose_file(v: str | None) -> str | None:
    if v is not None and (not _COMPOSE_FILE.fullmatch(v) or ".." in v):
        raise ValueError("must be a file name in the app root ending in .yml, like docker-compose.live.yml")
    return v


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Environment(Strict):
    """One deployment target (dev, staging, production...)."""

    runtime: Literal["local", "compose"] = "local"
    url: Annotated[str, Check(_env_url, recheck=True)]
    #: Production-grade: approval asked, clean git required, strict validation, admin paths
    #: loopback-only, the production env template, compose file and CI stage. Unset: true for the
    #: environment named ``production`` only.
    production: bool | None = None
    #: The pre-production rehearsal: basic auth in front, the CI's deploy-staging target. Unset: true
    #: for the environment named ``staging`` only (unless it is production-grade).
    staging: bool | None = None
    #: Env-file template (``config/templates/NAME.env.j2`` or a built-in one); unset: the app's template
    #: named after the environment, else the built-in one (:meth:`ProjectConfig.builtin_template`).
    template: Annotated[str | None, Check(_template_name)] = None
    #: File ``config compose`` writes and the compose runtime runs; unset: see :meth:`ProjectConfig.compose_file`.
    compose_file: Annotated[str | None, Check(_compose_file)] = None
    aliases: Annotated[list[str], Check(_aliases)] = field(default_factory=list)
    require_clean_git: bool | None = None
    approval: Literal["auto", "required"] = "auto"
    app_ports: Annotated[tuple[int, int] | None, Check(_app_ports)] = None
    variables: dict[str, str] = field(default_factory=dict)
    required: list[str] = field(default_factory=list)
    env_file: str | None = None
    database: Database | None = None
    docker_host: Annotated[str | None, Check(_docker_host, recheck=True)] = None
    ssh: Ssh | None = None
    replicas: Replicas = 1
    #: compose: how many new web containers start (and are health-gated) at a time beside the old
    #: ones when ``replicas`` > 1; null means one at a time.
    batch_size: Replicas | None = None
    deadline: Duration = 900.0
    watch: Duration = 3.0
    drain: Duration = 10.0
    skip_checks: list[str] = field(default_factory=list)
    proxy: Proxy | None = None
    images: dict[str, str] = field(default_factory=dict)
    hot_reload: bool | None = None

    def __post_init__(self) -> None:
        if self.staging and self.production:
            raise ValueError("staging and production cannot both be true: an environment is one or the other")
        if self.batch_size is not None and self.batch_size > self.replicas:
            raise ValueError(f"batch_size {self.batch_size} is more than replicas ({self.replicas}): lower "
                             f"batch_size to at most {self.replicas} or raise replicas")

    @property
    def batch(self) -> int:
        """New web containers started and gated together (``batch_size``, one by default)."""
        return self.batch_size or 1

    @property
    def url_port(self) -> int:
        """Port of the public URL (the proxy listens there)."""
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Backups(Strict):
    """Backups taken before every deploy."""

    keep: Annotated[int, Bounds(ge=1, le=1000)] = 10
    format: Literal["plain", "custom"] = "plain"
    dir: str = ".stageflow/backups"
    min_free_mb: Annotated[int, Bounds(ge=0)] = 100


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Releases(Strict):
    """Release directories kept per environment."""

    keep: Annotated[int, Bounds(ge=2, le=1000)] = 5
    requirements: str = "requirements.txt"
    #: Content-addressed (one venv per requirements hash), shared by every env; may use {env}/{project}.
    venv_dir: str = ".stageflow/venvs"


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Level(Strict):
    """A rule's two levels: ``{warning: 70, critical: 90}``; either may be left out."""

    warning: float | None = None
    critical: float | None = None


#: A threshold: a number (the warning level; critical follows the rule's default) or both levels.
Threshold = float | Level


def _percent_level(v: Threshold) -> Threshold:
    for level in (v.warning, v.critical) if isinstance(v, Level) else (v,):
        if level is not None and not 0 <= level <= 100:
            raise ValueError("must be a percentage between 0 and 100")
    return v


def _positive_level(v: Threshold) -> Threshold:
    for level in (v.warning, v.critical) if isinstance(v, Level) else (v,):
        if level is not None and level < 0:
            raise ValueError("must be a positive number")
    return v


PercentLevel = Annotated[Threshold, Check(_percent_level)]
PositiveLevel = Annotated[Threshold, Check(_positive_level)]


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Thresholds(Strict):
    """Monitoring thresholds (percent, milliseconds, counts per interval, days)."""

    cpu: PercentLevel = 80.0
    memory: PercentLevel = 85.0
    disk: PercentLevel = 90.0
    response_time_ms: PositiveLevel = 2000.0
    error_rate: PercentLevel = 5.0
    log_errors: PositiveLevel = 10.0
    db_connections: PercentLevel = 80.0
    redis_memory: PercentLevel = 90.0
    long_transaction_s: PositiveLevel = 300.0
    tls_days: PositiveLevel = field(default_factory=lambda: Level(warning=14.0, critical=3.0))


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class ThresholdOverrides(Strict):
    """Per-environment thresholds: only the keys given replace the project's."""

    cpu: PercentLevel | None = None
    memory: PercentLevel | None = None
    disk: PercentLevel | None = None
    response_time_ms: PositiveLevel | None = None
    error_rate: PercentLevel | None = None
    log_errors: PositiveLevel | None = None
    db_connections: PercentLevel | None = None
    redis_memory: PercentLevel | None = None
    long_transaction_s: PositiveLevel | None = None
    tls_days: PositiveLevel | None = None


def _json_field(v: dict[str, Any]) -> dict[str, Any]:
    for key in v:
        if not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", key):
            raise ValueError(f"{key!r} must be a dotted field path like status or checks.database")
    return v


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Endpoint(Strict):
    """An extra HTTP endpoint to watch (besides every service's health URL and the public URL)."""

    url: Annotated[str, Check(_env_url)]
    name: str | None = None
    expect: Annotated[int, Bounds(ge=100, le=599)] = 200
    json: Annotated[dict[str, Any], Check(_json_field)] = field(default_factory=dict)
    timeout: Duration | None = None


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class EnvMonitoring(Strict):
    """``monitoring.environments.<env>``: what differs for one environment."""

    thresholds: ThresholdOverrides = field(default_factory=ThresholdOverrides)
    endpoints: list[Endpoint] = field(default_factory=list)
    fire_after: Duration | None = None
    resolve_after: Duration | None = None


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Monitoring(Strict):
    """Monitoring settings: checks every ``interval``, each bounded by ``timeout``.

    An alert fires once its condition held ``consecutive`` checks in a row *and* for ``fire_after``;
    it resolves the same way with ``resolve_after``; so a flapping check sends nothing.
    """

    interval: Duration = 60.0
    timeout: Duration = 10.0
    concurrency: Annotated[int, Bounds(ge=1, le=1000)] = 20
    fire_after: Duration = 0.0
    resolve_after: Duration = 0.0
    consecutive: Annotated[int, Bounds(ge=1, le=100)] = 2
    reminder: Duration = 14400.0
    min_requests: Annotated[int, Bounds(ge=0)] = 20
    retention: Duration = 2592000.0
    raw_retention: Duration = 172800.0
    health_json: Annotated[dict[str, Any], Check(_json_field)] = field(default_factory=dict)
    thresholds: Thresholds = field(default_factory=Thresholds)
    endpoints: list[Endpoint] = field(default_factory=list)
    environments: dict[str, EnvMonitoring] = field(default_factory=dict)


AlertSeverity = Literal["info", "warning", "critical"]
DeployEvent = Literal["deployed", "failed", "rolled_back", "promoted"]
DEPLOY_EVENTS: tuple[str, ...] = ("deployed", "failed", "rolled_back", "promoted")


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Route(Strict):
    """Which messages one notifier takes: environments (empty: all), lowest severity, deploy events."""

    environments: list[str] = field(default_factory=list)
    min_severity: AlertSeverity = "info"
    events: list[DeployEvent] = field(default_factory=lambda: ["deployed", "failed", "rolled_back", "promoted"])
    deploy_environments: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class SlackAlerts(Route):
    """Slack incoming-webhook target (``SLACK_WEBHOOK`` in the shell when ``webhook`` is left out)."""

    webhook: str = "${SLACK_WEBHOOK}"
    channel: str | None = None


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class WebhookAlerts(Route):
    """Generic JSON webhook target."""

    url: str
    name: str | None = None


def _daily(v: str | None) -> str | None:
    if v is not None and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d", v):
        raise ValueError("must be a UTC time range like 02:00-03:30")
    return v


def _timestamp(v: str | None) -> str | None:
    if v is not None:
        from datetime import datetime

        try:
            datetime.fromisoformat(v)
        except ValueError:
            raise ValueError("must be an ISO-8601 time like 2026-12-01T02:00:00+00:00") from None
    return v


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Silence(Strict):
    """A silence or maintenance window: matching alerts are recorded but not sent."""

    env: str = "*"
    check: str = "*"
    start: Annotated[str | None, Check(_timestamp)] = None
    end: Annotated[str | None, Check(_timestamp)] = None
    daily: Annotated[str | None, Check(_daily)] = None
    comment: str = ""


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Alerts(Strict):
    """Where alerts go. A notifier whose ``${VAR}`` is unset is disabled with one warning, never an error."""

    slack: SlackAlerts | None = None
    webhooks: list[WebhookAlerts] = field(default_factory=list)
    silences: list[Silence] = field(default_factory=list)
    digest: Annotated[int, Bounds(ge=2, le=1000)] = 5
    min_gap: Duration = 1.0
    timeout: Duration = 5.0


Severity = Literal["critical", "high", "medium", "low"]


def _iso_date(v: str) -> str:
    from datetime import date

    try:
        date.fromisoformat(v)
    except ValueError:
        raise ValueError("must be a date like 2026-12-31") from None
    return v


def _url_paths(v: list[str]) -> list[str]:
    if not v:
        raise ValueError("needs at least one path, like /health/")
    for p in v:
        if not p.startswith("/") or any(c.isspace() for c in p):
            raise ValueError(f"{p!r} must be a path starting with '/', like /health/")
    return v


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Acceptance(Strict):
    """A scan finding accepted until ``expires`` (an ISO date), for a stated reason."""

    id: str
    reason: Annotated[str, Bounds(min_length=3)]
    expires: Annotated[str, Check(_iso_date)]


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Security(Strict):
    """``stageflow scan``: the level that fails, what is not scanned, accepted findings."""

    fail_on: Severity = "high"
    exclude: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    accept: list[Acceptance] = field(default_factory=list)
    #: pip-audit's vulnerability service: ``pypi`` (default), ``osv``, or an OSV-API mirror URL.
    vulnerability_service: Literal["pypi", "osv"] = "pypi"
    osv_url: str | None = None


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class LoadTest(Strict):
    """``stageflow loadtest ENV`` and the pipeline's k6 script: a constant arrival rate, bounded."""

    rate: Annotated[float, Bounds(gt=0, le=500)] = 10.0
    duration: Duration = 30.0
    paths: Annotated[list[str], Check(_url_paths)] = field(default_factory=lambda: ["/health/"])
    timeout: Duration = 5.0
    max_requests: Annotated[int, Bounds(ge=1, le=100000)] = 5000
    concurrency: Annotated[int, Bounds(ge=1, le=200)] = 20


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Gates(Strict):
    """Thresholds of ``stageflow gate``."""

    coverage: Percent = 80.0
    vulnerabilities: Severity = "high"
    p95: Duration = 2.0
    error_rate: Percent = 1.0
    memory_growth_mb: Annotated[float, Bounds(ge=0)] = 100.0


def _project_name(v: str) -> str:
    if not NAME_RE.match(v):
        raise ValueError("must be lowercase letters, digits, '-' or '_', starting with a letter")
    return v


def _services(v: dict[str, Service]) -> dict[str, Service]:
    if not v:
        raise ValueError("needs at least one service")
    for name in v:
        if not NAME_RE.match(name):
            raise ValueError(f"service name {name!r} must be lowercase letters, digits, '-' or '_'")
    if sum(1 for s in v.values() if s.port is not None) != 1:
        raise ValueError("exactly one service must have a port (the web service)")
    return v


def _environments(v: dict[str, Environment]) -> dict[str, Environment]:
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


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class ProjectConfig(Strict):
    """The whole ``stageflow.yml``."""

    project: Annotated[str, Check(_project_name)]
    services: Annotated[dict[str, Service], Check(_services)]
    database: Database = field(default_factory=Database)
    cache: Cache | None = None
    environments: Annotated[dict[str, Environment], Check(_environments)]
    promotion: list[str] | None = None
    backups: Backups = field(default_factory=Backups)
    releases: Releases = field(default_factory=Releases)
    nginx: Nginx = field(default_factory=Nginx)
    monitoring: Monitoring = field(default_factory=Monitoring)
    alerts: Alerts = field(default_factory=Alerts)
    security: Security = field(default_factory=Security)
    loadtest: LoadTest = field(default_factory=LoadTest)
    gates: Gates = field(default_factory=Gates)

    def __post_init__(self) -> None:
        if self.promotion is not None:
            for name in self.promotion:
                if name not in self.environments:
                    raise ValueError(
                        f"promotion: {name!r} is not an environment (known: {', '.join(self.environments)})"
                    )
        files: dict[str, str] = {}
        for env in self.environments:
            name = self.compose_file(env)
            if name in files:
                raise ValueError(f"environments.{env}.compose_file: {name} is also {files[name]}'s compose file; "
                                 f"set a different compose_file")
            files[name] = env

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

    def is_production(self, env: str) -> bool:
        """``environments.<env>.production``, by default true for the environment named production."""
        flag = self.environments[env].production
        return env == "production" if flag is None else flag

    def is_staging(self, env: str) -> bool:
        """``environments.<env>.staging``, by default true for the environment named staging.

        A production-grade environment is never also the staging one.
        """
        if self.is_production(env):
            return False
        flag = self.environments[env].staging
        return env == "staging" if flag is None else flag

    def _ordered_envs(self) -> list[str]:
        order = self.promotion_order
        return [*order, *(e for e in self.environments if e not in order)]

    @property
    def production_env(self) -> str | None:
        """The production environment: the first production-grade one in promotion order (None: none is).

        It is the one the CI's deploy-production stage deploys and whose compose file is
        ``docker-compose.prod.yml`` by default.
        """
        return next((e for e in self._ordered_envs() if self.is_production(e)), None)

    @property
    def staging_env(self) -> str | None:
        """The staging environment: the last staging-grade one promoted before production (None: none is).

        It is the one the CI's deploy-staging stage deploys and load-tests.
        """
        order = self._ordered_envs()
        prod = self.production_env
        before = order[: order.index(prod)] if prod is not None else order
        staged = [e for e in before if self.is_staging(e)] or [e for e in order if self.is_staging(e)]
        return staged[-1] if staged else None

    def builtin_template(self, env: str) -> str:
        """The built-in env template of ``env`` when neither ``template:`` nor the app names one:
        ``production`` for production-grade environments, ``dev`` for the one named dev, else ``staging``."""
        if self.is_production(env):
            return "production"
        return "dev" if env == "dev" else "staging"

    def compose_file(self, env: str) -> str:
        """``environments.<env>.compose_file``, else ``docker-compose.prod.yml`` for the production
        environment (:attr:`production_env`, the seed's name) and ``docker-compose.<env>.yml`` for others."""
        named = self.environments[env].compose_file
        if named is not None:
            return named
        return "docker-compose.prod.yml" if env == self.production_env else f"docker-compose.{env}.yml"

    def database_for(self, env: str) -> Database:
        """The database section in force for ``env`` (the env's override or the top-level one)."""
        return self.environments[env].database or self.database
