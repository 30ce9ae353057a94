"""``validate ENV``: everything that can be wrong with an environment's configuration, as a report.

:func:`validate_environment` is also the deploy pre-flight's configuration check. It never prints
and never raises for a problem it can describe (those become report items); only an unusable
``stageflow.yml`` or an unknown environment name raise (ConfigError / UsageError).

Checks, each item naming its key and the fix:

* the env file: present, parseable, readable (encryption key), mode 0600, not tracked by git;
* keys: required ones (the template's and ``environments.<env>.required``) present and non-empty;
  no placeholders (``changeme``, ``django-insecure-…``, ``your-…``); types by name (booleans, integers,
  ``*_PORT``, ``*_URL``); secret strength; ``$`` that Docker Compose would expand;
* production (production-grade environments: ``environments.<env>.production``, by default the one named
  ``production``): DEBUG off, explicit ALLOWED_HOSTS, an https URL,
  secure cookies, SSL redirect and HSTS, no secret shared with another environment, and Django's
  ``check --deploy --fail-level WARNING`` when the app has a ``manage.py``;
* across files: ports of environments on the same host, TLS certificate and key.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from stageflow.config.envfile import display_path
from stageflow.config.loader import EnvContext, load_env_context, load_project, resolve_env_name
from stageflow.config.models import Environment, ProjectConfig
from stageflow.configmgr.envs import EnvFileState, env_file_path, other_env_values, read_state, shared_secrets
from stageflow.configmgr.secrets import is_placeholder, weakness
from stageflow.configmgr.templates import Rendered, render_template, resolve_template, template_context
from stageflow.configmgr.tls import check_tls
from stageflow.errors import ConfigError, StageflowError
from stageflow.masking import is_secret_name, masker
from stageflow.runner import Runner

Level = Literal["error", "warning"]

# The example app's boolean parser (practika/settings.py): anything else is an error at start-up.
TRUE_VALUES = frozenset({"1", "true", "yes", "on"})
FALSE_VALUES = frozenset({"", "0", "false", "no", "off"})
BOOL_KEYS = frozenset(
    {
        "DEBUG",
        "SECURE_SSL_REDIRECT",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_HSTS_PRELOAD",
        "SECURE_PROXY_SSL_HEADER",
    }
)
INT_SUFFIXES = ("_SECONDS", "_TIMEOUT", "_WORKERS", "_THREADS", "_MAX_AGE", "_COUNT")
URL_SCHEMES = {
    "DATABASE_URL": ("postgres", "postgresql", "pgsql", "sqlite"),
    "REDIS_URL": ("redis", "rediss", "unix"),
}
ONE_YEAR = 31_536_000
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"}


@dataclass(frozen=True)
class ValidationItem:
    """One finding: the key it is about, what is wrong, and how to fix it."""

    key: str
    message: str
    fix: str
    level: Level = "error"


@dataclass
class ValidationReport:
    """Errors block a deploy; warnings are shown but do not."""

    env: str
    env_file: Path
    errors: list[ValidationItem] = field(default_factory=list)
    warnings: list[ValidationItem] = field(default_factory=list)
    #: names of the check groups that ran ("file", "keys", "production", "django", "ports", "tls")
    checks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there is no error."""
        return not self.errors

    @property
    def items(self) -> list[ValidationItem]:
        """Errors first, then warnings."""
        return [*self.errors, *self.warnings]

    def add(self, level: Level, key: str, message: str, fix: str) -> None:
        """Record a finding (masked: a message never carries a secret value)."""
        item = ValidationItem(key, masker.mask(message), masker.mask(fix), level)
        (self.errors if level == "error" else self.warnings).append(item)

    def error(self, key: str, message: str, fix: str) -> None:
        """Record an error."""
        self.add("error", key, message, fix)

    def warning(self, key: str, message: str, fix: str) -> None:
        """Record a warning."""
        self.add("warning", key, message, fix)

    def has(self, key: str) -> bool:
        """Whether any finding is about ``key``."""
        return any(i.key == key for i in self.items)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in TRUE_VALUES


def _kind(key: str) -> str | None:
    if key in BOOL_KEYS:
        return "bool"
    if key == "PORT" or key.endswith("_PORT"):
        return "port"
    if key.endswith(INT_SUFFIXES):
        return "int"
    if key.endswith(("_URL", "_URI")):
        return "url"
    return None


def _type_problem(key: str, value: str) -> str | None:
    kind = _kind(key)
    v = value.strip()
    if kind == "bool" and v.lower() not in TRUE_VALUES | FALSE_VALUES:
        return "must be a boolean: 1/true/yes/on or 0/false/no/off"
    if kind in ("int", "port"):
        try:
            n = int(v)
        except ValueError:
            return "must be an integer" if kind == "int" else "must be a port number (1-65535)"
        if kind == "port" and not 1 <= n <= 65535:
            return "must be a port number (1-65535)"
        if kind == "int" and n < 0:
            return "must not be negative"
    if kind == "url" and v:
        try:
            parts = urlsplit(v)
            parts.port  # noqa: B018 - raises ValueError for a non-numeric port
        except ValueError:
            return "is not a valid URL (bad port?)"
        schemes = URL_SCHEMES.get(key)
        if schemes and parts.scheme not in schemes:
            return f"must be a URL with scheme {' or '.join(s + '://' for s in schemes)}"
        if not parts.scheme or (parts.scheme not in ("sqlite", "unix", "file") and not parts.netloc):
            return "must be a URL like scheme://host[:port]/..."
    return None


def _file_checks(report: ValidationReport, root: Path, env: str, state: EnvFileState, prod: bool,
                 runner: Runner) -> None:
    path, name = state.path, _shown(root, state.path)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        report.add(
            "error" if prod else "warning",
            name,
            f"is readable by other users (mode {mode:04o}); it holds secrets",
            f"chmod 600 {name}",
        )
    if not _in_git_repo(root):
        return
    rel = os.path.relpath(path, root)
    try:
        tracked = runner.run(["git", "ls-files", "--error-unmatch", "--", rel], cwd=root, timeout=10).ok
        ignored = runner.run(["git", "check-ignore", "-q", "--", rel], cwd=root, timeout=10).ok
    except StageflowError:
        return  # no git binary: nothing to compare with
    if tracked:
        report.error(
            name,
            "is tracked by git: its secrets are in the repository history",
            f"git rm --cached {rel}, commit, then rotate its secrets (stageflow config generate {env} --rotate KEY)",
        )
    elif not ignored:
        report.warning(
            name, "is not ignored by git", f"add .env.* to .gitignore (stageflow config generate {env} does it)"
        )


def _in_git_repo(root: Path) -> bool:
    return any((d / ".git").exists() for d in (root.resolve(), *root.resolve().parents))


def _key_checks(
    report: ValidationReport,
    env: str,
    state: EnvFileState,
    values: Mapping[str, str],
    required: list[str],
    rendered: Rendered | None,
    compose: bool,
    name: str,
    *,
    prod: bool,
) -> None:
    gen = f"stageflow config generate {env}"
    template_secrets = rendered.secrets if rendered else {}
    derived = rendered.derived if rendered else {}
    if state.exists:
        for key in required:
            if key not in values:
                fix = gen if rendered and key in rendered.keys else f"add {key}=... to {name}"
                report.error(key, f"is missing from {name}", fix)
    for key, value in values.items():
        secret = key in template_secrets or key in derived or is_secret_name(key)
        if not value.strip():
            if key in required or key in template_secrets:
                report.error(key, "is empty", gen if key in template_secrets else f"set a value for {key} in {name}")
            continue
        if is_placeholder(value):
            shown = "" if secret else f" ({value!r})"
            fix = f"{gen} (replaces placeholder secrets)" if key in template_secrets else f"set a real value in {name}"
            report.error(key, f"holds a placeholder value{shown}", fix)
            continue
        problem = _type_problem(key, value)
        if problem:
            report.error(key, problem + ("" if secret else f", got {value!r}"), f"fix {key} in {name}")
            continue
        if key in template_secrets:
            why = weakness(value, template_secrets[key].kind)
            if why:
                # Strength is a rule of production; elsewhere a weak secret is worth saying, not refusing.
                strict = report.error if prod else report.warning
                strict(key, f"secret {why}", f"{gen} --rotate {key}")
        elif secret and key not in derived and "://" not in value:
            why = weakness(value)
            if why:
                report.warning(key, f"secret {why}", f"use a longer random value for {key}")
    if compose:
        for ln in state.lines:
            if ln.key and ln.raw[:1] != "'" and _UNESCAPED_DOLLAR.search(ln.raw):
                report.warning(
                    ln.key,
                    "contains '$', which Docker Compose's env_file expands as a variable",
                    f"write \\$ instead of $ (or rewrite the file: {gen})",
                )


def _production_checks(
    report: ValidationReport, environment: Environment, values: Mapping[str, str], name: str
) -> None:
    parts = urlsplit(environment.url)
    if _truthy(values.get("DEBUG")):
        report.error("DEBUG", "is on in production (it leaks settings and tracebacks)", f"set DEBUG=0 in {name}")
    hosts = [h.strip() for h in values.get("ALLOWED_HOSTS", "").split(",") if h.strip()]
    if "*" in hosts:
        report.error("ALLOWED_HOSTS", "is '*': any Host header is accepted in production",
                     f"list the real host names, e.g. ALLOWED_HOSTS={parts.hostname or 'example.com'}")
    elif not hosts and not report.has("ALLOWED_HOSTS"):
        report.error("ALLOWED_HOSTS", "is not set: Django refuses every request with DEBUG off",
                     f"set ALLOWED_HOSTS={parts.hostname or 'example.com'} in {name}")
    elif parts.hostname and not any(_host_allowed(h, parts.hostname) for h in hosts):
        report.warning("ALLOWED_HOSTS", f"does not include the URL's host {parts.hostname}",
                       f"add {parts.hostname} to ALLOWED_HOSTS")
    for key, why in (
        ("SECURE_SSL_REDIRECT", "http requests are not redirected to https"),
        ("SESSION_COOKIE_SECURE", "the session cookie may be sent over plain http"),
        ("CSRF_COOKIE_SECURE", "the CSRF cookie may be sent over plain http"),
    ):
        if not _truthy(values.get(key)) and not report.has(key):
            report.error(key, f"is off in production: {why}", f"set {key}=1 in {name}")
    raw = values.get("SECURE_HSTS_SECONDS", "0").strip() or "0"
    if not report.has("SECURE_HSTS_SECONDS"):
        seconds = int(raw) if raw.isdigit() else 0
        if seconds <= 0:
            report.error("SECURE_HSTS_SECONDS", "is 0 in production: browsers may still use plain http",
                         f"set SECURE_HSTS_SECONDS={ONE_YEAR} in {name}")
        elif seconds < ONE_YEAR:
            report.warning("SECURE_HSTS_SECONDS", f"is {seconds}s, less than the recommended year",
                           f"set SECURE_HSTS_SECONDS={ONE_YEAR} once https is proven")
    for key in ("SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD"):
        if not _truthy(values.get(key)) and not report.has(key):
            report.warning(key, "is off in production", f"set {key}=1 in {name} once every subdomain serves https")


def _database_password_checks(report: ValidationReport, config: ProjectConfig, env: str) -> None:
    db = config.database_for(env)
    where = f"environments.{env}.database.password" if config.environments[env].database else "database.password"
    if db.engine != "postgres":
        return
    if db.password is None:
        report.warning(where, "is not set: the app connects to PostgreSQL without a password",
                       "set database.password: ${POSTGRES_PASSWORD} in stageflow.yml")
    elif "${" not in db.password:
        report.error(where, "is written in stageflow.yml itself, which is committed to git",
                     "use database.password: ${POSTGRES_PASSWORD} and keep the value in the env file")


def _host_allowed(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower(), host.lower()
    if pattern.startswith("."):
        return host == pattern[1:] or host.endswith(pattern)
    return pattern == host


def _norm_host(host: str | None) -> str:
    h = (host or "").lower()
    return "loopback" if h in _LOOPBACK else h


def _ports_of(env: Environment) -> dict[int, str]:
    ports = {env.url_port: "url"}
    if env.app_ports:
        for p in env.app_ports:
            ports.setdefault(p, "app_ports")
    return ports


def _port_checks(report: ValidationReport, config: ProjectConfig, env: str) -> None:
    me = config.environments[env]
    if "${" in me.url:
        return
    host = _norm_host(urlsplit(me.url).hostname)
    mine = _ports_of(me)
    for other_name, other in config.environments.items():
        if other_name == env or "${" in other.url or _norm_host(urlsplit(other.url).hostname) != host:
            continue
        for port, what in _ports_of(other).items():
            if port in mine:
                report.error(
                    f"environments.{env}.{mine[port]}",
                    f"port {port} is also used by {other_name} ({what}) on the same host",
                    "give every environment on one host its own ports (url port and app_ports)",
                )


def _shared_checks(
    report: ValidationReport,
    root: Path,
    config: ProjectConfig,
    env: str,
    values: Mapping[str, str],
    secret_keys: set[str],
    environ: Mapping[str, str],
) -> None:
    others, problems = other_env_values(root, config, env, environ)
    for p in problems:
        report.warning("secrets", f"could not compare with {p}", "set STAGEFLOW_MASTER_KEY or fix that file")
    secrets = {k: v for k, v in values.items() if k in secret_keys or is_secret_name(k)}
    level: Level = "error" if config.is_production(env) else "warning"
    for key, other_env, other_key in shared_secrets(secrets, others):
        report.add(level, key, f"has the same value as {other_env}'s {other_key}",
                   f"give each environment its own: stageflow config generate {env} --rotate {key}")


def _load_context(report: ValidationReport, root: Path, env: str, environ: Mapping[str, str]) -> EnvContext | None:
    """The environment as a deploy resolves it; its errors (unset ${VAR}, required) become items."""
    try:
        return load_env_context(root, env, environ)
    except ConfigError as exc:
        m = re.search(r"(STAGEFLOW_MASTER_KEY)|\$\{(\w+)\}|variable (\w+)", exc.message)
        key = next((g for g in m.groups() if g), "stageflow.yml") if m else "stageflow.yml"
        if not report.has(key):
            report.error(key, exc.message, exc.hint or "fix stageflow.yml or the env file")
        return None


def _notifier_checks(report: ValidationReport, ctx: EnvContext) -> None:
    """A notifier whose variable is unset is disabled: a warning, never an error (it must not block deploys)."""
    from stageflow.alerts.notifiers import build_notifiers

    disabled: list[str] = []
    try:
        build_notifiers(ctx.config.alerts, disabled.append)
    except ConfigError as exc:
        report.error(exc.message.split(":")[0], exc.message, exc.hint or "fix it in stageflow.yml")
        return
    for message in disabled:
        key, _, what = message.partition(": ")
        report.warning(key, what, f"set the variable in the shell or in {ctx.env_file.name} to enable it")


def _django_checks(report: ValidationReport, root: Path, ctx: EnvContext, runner: Runner | None) -> None:
    from stageflow.configmgr.django_check import failure_line, run_deploy_check

    report.checks.append("django")
    try:
        result, messages = run_deploy_check(root, ctx.name, ctx.app_vars, runner=runner)
    except StageflowError as exc:
        report.error("manage.py check", str(exc), "run python manage.py check --deploy by hand to see why")
        return
    for msg in messages:
        key = msg.setting or msg.check_id
        if report.has(key):
            continue  # our own finding on that key already says it, with the fix
        level: Level = "error" if msg.level in "CEW" else "warning"
        report.add(level, key, f"Django {msg.check_id}: {msg.message}",
                   msg.hint or "see https://docs.djangoproject.com/en/stable/howto/deployment/checklist/")
    if not result.ok and not messages:
        line = failure_line(result)
        if "No module named 'django'" in line:
            report.warning("manage.py check", f"skipped: Django is not installed for {result.argv[0]}",
                           "deploy once (it creates .stageflow/venvs/) or install the app's requirements")
        else:
            report.error("manage.py check", f"Django could not load the settings: {line}",
                         "fix the variable it names, then run stageflow config validate again")


def _shown(root: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return display_path(path)


def validate_environment(
    root: Path,
    env: str,
    environ: Mapping[str, str] | None = None,
    *,
    run_django_check: bool = True,
    runner: Runner | None = None,
    now: dt.datetime | None = None,
) -> ValidationReport:
    """Validate ``env`` (name or alias) of the app at ``root``; see the module docstring for the checks.

    ``environ`` stands for the shell environment (default ``os.environ``): it provides
    ``STAGEFLOW_MASTER_KEY`` and overrides env-file values, as it does for a deploy.
    """
    environ = os.environ if environ is None else environ
    config = load_project(root)
    name = resolve_env_name(config, env)
    environment = config.environments[name]
    path = env_file_path(root, config, name)
    report = ValidationReport(env=name, env_file=path)
    shown = _shown(root, path)
    prod = config.is_production(name)

    report.checks.append("file")
    state = EnvFileState(path)
    try:
        state = read_state(path, environ)
    except ConfigError as exc:
        key = "STAGEFLOW_MASTER_KEY" if "STAGEFLOW_MASTER_KEY" in exc.message else shown
        report.error(key, exc.message, exc.hint or f"fix {shown}")
    else:
        if not state.exists:
            report.error(shown, "does not exist", f"stageflow config generate {name}")
        else:
            _file_checks(report, root, name, state, prod, runner or Runner())

    values = dict(state.values)
    for key in values:
        if key in environ:
            values[key] = environ[key]
    values.update({k: v for k, v in environment.variables.items() if "${" not in v})
    masker.add_env(values)

    rendered: Rendered | None = None
    try:
        ref = resolve_template(root, config, name, recorded=state.template)
        rendered = render_template(root, ref, template_context(config, name, ref))
    except StageflowError as exc:
        report.warning("template", exc.message, exc.hint or "fix the template")
    for key in rendered.secret_keys if rendered else ():
        masker.add(values.get(key))

    report.checks.append("keys")
    required = list(dict.fromkeys([*(rendered.keys if rendered else []), *environment.required]))
    for key in required:
        # A value set in the shell counts as present (`POSTGRES_PASSWORD=... stageflow deploy staging`).
        if key not in values and environ.get(key):
            values[key] = environ[key]
    _key_checks(report, name, state, values, required, rendered, environment.runtime == "compose", shown, prod=prod)

    if prod:
        report.checks.append("production")
        if urlsplit(environment.url).scheme != "https":
            report.error(f"environments.{name}.url",
                         f"is {environment.url}: a production-grade environment must be served over https",
                         "use an https:// URL in stageflow.yml")
    _database_password_checks(report, config, name)
    report.checks.append("ports")
    _port_checks(report, config, name)
    if not state.exists:
        # Without the file (missing or unreadable) every value rule would only repeat that one error.
        return report

    if prod:
        _production_checks(report, environment, values, shown)
    _shared_checks(report, root, config, name, values, rendered.secret_keys if rendered else set(), environ)

    report.checks.append("tls")
    for f in check_tls(root, values, urlsplit(environment.url).hostname, now=now):
        report.add(f.level, f.key, f.message, f.fix)

    ctx = _load_context(report, root, name, environ)
    if ctx is not None:
        _notifier_checks(report, ctx)
    if ctx is not None and prod and run_django_check and (root / "manage.py").is_file():
        _django_checks(report, root, ctx, runner)
    return report
