"""Env-file templates: where they are found, what they see, and how secrets are marked.

Templates are Jinja2 files whose output is env-file text (see :mod:`stageflow.config.envfile`).

* Built-in: ``dev``, ``staging`` and ``production`` (``stageflow/templates/env/<NAME>.env.j2``), all
  extending ``builtin/base.env.j2``. A production-grade environment (``environments.<env>.production``)
  uses ``production``, the one named ``dev`` uses ``dev``, every other ``staging`` (debug off, secure
  cookies when its URL is https): :meth:`ProjectConfig.builtin_template`.
* Custom: ``<app root>/config/templates/<NAME>.env.j2``, chosen with ``--template NAME`` (one run) or
  ``environments.<env>.template: NAME``. Otherwise the template recorded in the env file, else an app
  template named after the environment (``config/templates/production.env.j2``), else the built-in
  one. Custom templates may ``{% extends "builtin/production.env.j2" %}`` and override its blocks
  (``debug``, ``allowed_hosts``, ``database``, ``cache``, ``security``, ``extra``).
* The template an env file was made from is recorded on its first line
  (``# stageflow-template: NAME``) and reused when the file is regenerated without ``--template``.

Marking secrets: ``KEY={{ secret("KEY", kind="django") }}`` declares ``KEY`` a secret of the given
kind (``django``, ``password``, ``token``, ``hex``; optional ``length=``). The secret is generated
once per environment and kept afterwards. A secret may also be embedded in another value
(``REDIS_URL=redis://:{{ secret("REDIS_PASSWORD", kind="password") }}@redis:6379/0``) as long as the
template also assigns it to its own key; such a derived value is itself treated as a secret.
Other values are quoted with the ``q`` filter when they may hold spaces, ``#`` or quotes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stageflow.config.envfile import EnvFileError, EnvLine, parse_env_lines, quote_env_value
from stageflow.config.models import ProjectConfig
from stageflow.configmgr.secrets import kind_spec
from stageflow.errors import ConfigError, UsageError

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "templates" / "env"
#: Where an app keeps its own templates, relative to its root.
APP_TEMPLATE_DIR = Path("config") / "templates"
SUFFIX = ".env.j2"
BUILTIN_NAMES = ("dev", "staging", "production")
#: First line of a generated env file: the template it came from.
MARKER = "# stageflow-template: "

_SENTINEL = "@@stageflow-secret:{}@@"
_SENTINEL_RE = re.compile(r"@@stageflow-secret:([A-Za-z_][A-Za-z0-9_]*)@@")
_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class TemplateRef:
    """A resolved template: its name, where it comes from, its file and its Jinja loader name."""

    name: str
    builtin: bool
    path: Path
    loader_name: str

    @property
    def label(self) -> str:
        """``built-in production`` or ``config/templates/custom.env.j2``."""
        return f"built-in {self.name}" if self.builtin else (APP_TEMPLATE_DIR / self.path.name).as_posix()


@dataclass(frozen=True)
class SecretSpec:
    """A secret a template declares with ``secret(NAME, kind=..., length=...)``."""

    name: str
    kind: str = "token"
    length: int | None = None


@dataclass
class Rendered:
    """A rendered template: its lines with secrets filled in, and which keys hold secrets."""

    template: TemplateRef
    lines: list[EnvLine]
    secrets: dict[str, SecretSpec] = field(default_factory=dict)
    #: key -> names of the secrets embedded in its value (keys other than the secrets themselves)
    derived: dict[str, set[str]] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        """Assigned keys in template order (each once)."""
        seen: dict[str, None] = {}
        for ln in self.lines:
            if ln.key is not None:
                seen.setdefault(ln.key, None)
        return list(seen)

    @property
    def secret_keys(self) -> set[str]:
        """Keys whose value is a secret or embeds one."""
        return set(self.secrets) | set(self.derived)


def template_from_text(text: str) -> str | None:
    """The template name recorded in a generated env file's leading comments, if any."""
    for line in text.splitlines()[:5]:
        if line.startswith(MARKER):
            name = line[len(MARKER) :].strip()
            return name or None
    return None


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise UsageError(f"invalid template name {name!r}", hint="use letters, digits, '.', '-' or '_'")


def resolve_template(
    root: Path, config: ProjectConfig, env: str, chosen: str | None = None, recorded: str | None = None
) -> TemplateRef:
    """Find the template for ``env``: ``chosen`` (``--template``), else ``environments.<env>.template``,
    else ``recorded`` (the env file's marker), else the app's template named after ``env``, else the
    built-in one (:meth:`ProjectConfig.builtin_template`)."""
    app_dir = root / APP_TEMPLATE_DIR
    configured = config.environments[env].template
    name = chosen or configured or recorded
    if name is not None:
        _check_name(name)
        app = app_dir / f"{name}{SUFFIX}"
        if app.is_file():
            return TemplateRef(name, False, app, app.name)
        if name in BUILTIN_NAMES:
            return _builtin(name)
        where = f"environments.{env}.template: " if not chosen and name == configured else ""
        raise UsageError(
            f"{where}template {name!r} not found",
            hint=f"create {APP_TEMPLATE_DIR / (name + SUFFIX)} or use a built-in one: {', '.join(BUILTIN_NAMES)}",
        )
    app = app_dir / f"{env}{SUFFIX}"
    if app.is_file():
        return TemplateRef(env, False, app, app.name)
    return _builtin(config.builtin_template(env))


def _builtin(name: str) -> TemplateRef:
    return TemplateRef(name, True, BUILTIN_DIR / f"{name}{SUFFIX}", f"builtin/{name}{SUFFIX}")


def _ref_var(value: str | None) -> str | None:
    if not value:
        return None
    m = _REF_RE.search(value)
    return m.group(1) if m else None


def _db_password_var(engine: str, password: str | None) -> str | None:
    # PostgreSQL always gets a generated password (the compose runtime's database container needs
    # POSTGRES_PASSWORD); stageflow.yml's database.password says under which name.
    if engine != "postgres":
        return None
    if password is None:
        return "POSTGRES_PASSWORD"
    return _ref_var(password)


def template_context(config: ProjectConfig, env: str, template: TemplateRef) -> dict[str, Any]:
    """The variables a template sees (documented in the README's configuration section)."""
    environment = config.environments[env]
    parts = urlsplit(environment.url)
    host = parts.hostname or "127.0.0.1"
    https = parts.scheme == "https"
    default_port = 443 if https else 80
    port = parts.port or default_port
    origin = f"{parts.scheme}://{host}" + (f":{port}" if port != default_port else "")
    hosts = [host, *sorted(_LOOPBACK - {host, "::1"})] if host in _LOOPBACK else [host]
    db = config.database_for(env)
    fill = {"env": env, "project": config.project}
    cache = config.cache
    cache_engine = cache.engine if cache else "none"
    redis_password_var = _ref_var(cache.url if cache else None)
    return {
        "project": config.project,
        "env": env,
        "environment": environment,
        "runtime": environment.runtime,
        "url": environment.url,
        "scheme": parts.scheme,
        "host": host,
        "port": port,
        "https": https,
        "origin": origin,
        "allowed_hosts": ",".join(hosts),
        "is_production": config.is_production(env),
        "database": dataclasses.replace(db, name=db.name.format(**fill), user=db.user.format(**fill)),
        "db_password_var": _db_password_var(db.engine, db.password),
        "cache_engine": cache_engine,
        "cache_url": cache.url if cache else None,
        "redis_password_var": redis_password_var,
        "redis_host": "redis" if environment.runtime == "compose" else "127.0.0.1",
        "template": template.name,
    }


def _q(value: object) -> str:
    if isinstance(value, bool):
        value = "1" if value else "0"
    return quote_env_value(str(value))


def render_template(
    root: Path,
    template: TemplateRef,
    context: Mapping[str, Any],
    provide: Callable[[SecretSpec], str] | None = None,
) -> Rendered:
    """Render ``template`` and fill its secrets with ``provide(spec)``.

    Without ``provide`` secrets stay empty: enough to learn the template's keys (validation).
    Errors (Jinja syntax, undefined variables, output that is not env-file syntax) are
    :class:`ConfigError` naming the template file and line.
    """
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    declared: dict[str, SecretSpec] = {}

    def secret(name: str, kind: str = "token", length: int | None = None) -> str:
        try:
            kind_spec(kind)
        except ValueError as exc:
            raise ConfigError(f"{_where(root, template)}: secret({name!r}): {exc}") from None
        declared.setdefault(name, SecretSpec(name, kind, length))
        return _SENTINEL.format(name)

    # autoescape is for HTML; these templates produce env files, quoted with |q where needed.
    # Sandboxed: an app's template is repository content, and must not reach Python internals
    # (``''.__class__.__mro__``…) or mutate what it is given.
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.ChoiceLoader(
            [
                jinja2.FileSystemLoader(str(root / APP_TEMPLATE_DIR)),
                jinja2.PrefixLoader({"builtin": jinja2.FileSystemLoader(str(BUILTIN_DIR))}),
            ]
        ),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # env files, not HTML
    )
    env.filters["q"] = _q
    env.globals["secret"] = secret
    try:
        text = env.get_template(template.loader_name).render(dict(context))
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(
            f"{exc.filename or _where(root, template)}:{exc.lineno}: {exc.message}",
            hint="fix the template syntax there",
        ) from None
    except jinja2.TemplateError as exc:
        raise ConfigError(
            f"{_where(root, template)}: {exc.message or exc.__class__.__name__}",
            hint="check the variable names the template uses (see the README)",
        ) from None
    try:
        lines = parse_env_lines(text, f"{_where(root, template)} (rendered)")
    except EnvFileError as exc:
        raise ConfigError(exc.message, hint="the template must render KEY=value lines; quote values with |q") from None
    return _fill(root, template, lines, declared, provide)


def _where(root: Path, template: TemplateRef) -> str:
    if template.builtin:
        return f"built-in template {template.path.name}"
    try:
        return str(template.path.relative_to(root))
    except ValueError:
        return str(template.path)


def _fill(
    root: Path,
    template: TemplateRef,
    lines: list[EnvLine],
    declared: dict[str, SecretSpec],
    provide: Callable[[SecretSpec], str] | None,
) -> Rendered:
    own = {ln.key for ln in lines if ln.key is not None and ln.value == _SENTINEL.format(ln.key)}
    for name in declared:
        if name not in own:
            raise ConfigError(
                f"{_where(root, template)}: secret({name!r}) must also be assigned on its own line",
                hint=f'add {name}={{{{ secret("{name}", kind="{declared[name].kind}") }}}}',
            )
    values = {name: (provide(spec) if provide else "") for name, spec in declared.items()}
    out: list[EnvLine] = []
    derived: dict[str, set[str]] = {}
    for ln in lines:
        if ln.key is None or "@@stageflow-secret:" not in ln.value:
            out.append(ln)
            continue
        names = set(_SENTINEL_RE.findall(ln.value))
        if ln.key not in names or ln.value != _SENTINEL.format(ln.key):
            derived.setdefault(ln.key, set()).update(names)
        value = _SENTINEL_RE.sub(lambda m: values.get(m.group(1), ""), ln.value)
        out.append(EnvLine(key=ln.key, value=value, lineno=ln.lineno))
    return Rendered(template=template, lines=out, secrets=declared, derived=derived)
