"""Load ``stageflow.yml``: YAML → ``${VAR}`` interpolation → pydantic, with key-path errors."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from pydantic import ValidationError

from stageflow.config.envfile import read_env_file
from stageflow.config.models import NAME_RE, Database, Environment, ProjectConfig
from stageflow.errors import ConfigError, UsageError
from stageflow.masking import is_secret_name, masker

PROJECT_FILE = "stageflow.yml"
_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def find_root(start: Path | None = None) -> Path:
    """The directory holding ``stageflow.yml``: ``start`` or the nearest parent."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / PROJECT_FILE).is_file():
            return d
    raise ConfigError(
        f"no {PROJECT_FILE} in {here} or its parents",
        hint="run from the app's root, or pass --root DIR",
    )


_yaml_cache: dict[tuple[Path, int], dict[str, Any]] = {}


def _read_yaml(path: Path) -> dict[str, Any]:
    import copy

    try:
        key = (path.resolve(), path.stat().st_mtime_ns)
    except FileNotFoundError:
        key = (path, -1)
    if key in _yaml_cache:
        # Callers interpolate in place of a copy; the cache must stay pristine.
        return copy.deepcopy(_yaml_cache[key])
    data = _parse_yaml(path)
    _yaml_cache[key] = copy.deepcopy(data)
    return data


def _parse_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found", hint="run from the app's root, or pass --root DIR") from exc
    try:
        # libyaml's loader when present: the pure-Python one dominates `status` otherwise.
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{where}: {problem}", hint="fix the YAML syntax there") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level (project:, services:, environments:)")
    return data


def _keypath(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts) or "(top level)"


def _validate(path: Path, data: dict[str, Any]) -> ProjectConfig:
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if p not in ("function-after", "function-before"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see the README for the schema)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"{path}: {_keypath(loc)}: {msg}{more}") from None


def _interpolate(value: Any, variables: Mapping[str, str], where: str, missing: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if name in variables and variables[name] != "":
                return variables[name]
            if default is not None:
                return default
            missing.append((where, name))
            return ""

        return _REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, variables, f"{where}.{k}" if where else str(k), missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, variables, f"{where}[{i}]", missing) for i, v in enumerate(value)]
    return value


def load_project(root: Path) -> ProjectConfig:
    """Validate ``root/stageflow.yml`` without resolving ``${VAR}`` references."""
    path = root / PROJECT_FILE
    return _validate(path, _read_yaml(path))


def resolve_env_name(config: ProjectConfig, name: str) -> str:
    """Canonical environment name for ``name`` or alias; UsageError naming the known ones."""
    if not NAME_RE.match(name):
        raise UsageError(
            f"invalid environment name {name!r}",
            hint="use lowercase letters, digits, '-' or '_'",
        )
    canonical = config.canonical_env(name)
    if canonical is None:
        known = ", ".join(
            f"{n} ({', '.join(e.aliases)})" if e.aliases else n for n, e in config.environments.items()
        )
        raise UsageError(f"unknown environment {name!r}", hint=f"known: {known}")
    return canonical


@dataclass(frozen=True)
class EnvContext:
    """Everything resolved for one environment: config with variables substituted, app variables."""

    root: Path
    config: ProjectConfig
    name: str
    env_file: Path
    file_vars: dict[str, str]
    app_vars: dict[str, str]

    @property
    def env(self) -> Environment:
        """This environment's section."""
        return self.config.environments[self.name]

    @property
    def database(self) -> Database:
        """The database in force for this environment, placeholders filled."""
        db = self.config.database_for(self.name)
        fill = {"env": self.name, "project": self.config.project}
        return db.model_copy(
            update={"name": db.name.format(**fill), "user": db.user.format(**fill), "path": db.path.format(**fill)}
        )

    @property
    def state_dir(self) -> Path:
        """Where stageflow keeps its state for this project."""
        return self.root / ".stageflow"

    @property
    def require_clean_git(self) -> bool:
        """Dirty tree is fatal (production by default) or a warning."""
        flag = self.env.require_clean_git
        return self.name == "production" if flag is None else flag

    @property
    def secret_values(self) -> list[str]:
        """Every value of this environment that must never be shown."""
        vals = [v for k, v in self.app_vars.items() if is_secret_name(k)]
        if self.database.password:
            vals.append(self.database.password)
        return vals


def database_url(db: Database, root: Path) -> str | None:
    """The DATABASE_URL the app receives for ``db``; None for ``engine: none``."""
    if db.engine == "sqlite":
        p = Path(db.path)
        return f"sqlite:///{(p if p.is_absolute() else root / p)}"
    if db.engine == "postgres":
        auth = quote(db.user, safe="")
        if db.password:
            auth += ":" + quote(db.password, safe="")
        return f"postgres://{auth}@{db.host}:{db.port}/{quote(db.name, safe='')}"
    return None


def load_env_context(root: Path, env_name: str, environ: Mapping[str, str] | None = None) -> EnvContext:
    """Resolve ``env_name`` (or alias): read its env file, interpolate, validate, compute app variables.

    Shell variables override the env file, so ``POSTGRES_PASSWORD=x stageflow deploy staging`` works.
    """
    environ = os.environ if environ is None else environ
    path = root / PROJECT_FILE
    raw = _read_yaml(path)
    base = _validate(path, raw)
    name = resolve_env_name(base, env_name)
    env_file = root / (base.environments[name].env_file or f".env.{name}")
    file_vars = read_env_file(env_file, environ=environ)
    for key in list(file_vars):
        if key in environ:
            file_vars[key] = environ[key]
    variables = {**environ, **file_vars}
    # Other environments' sections may reference variables this one does not define.
    missing: list[tuple[str, str]] = []
    data = _interpolate({k: v for k, v in raw.items() if k != "environments"}, variables, "", missing)
    envs = dict(raw["environments"])
    envs[name] = _interpolate(envs[name], variables, f"environments.{name}", missing)
    data["environments"] = envs
    if missing:
        where, var = missing[0]
        raise ConfigError(
            f"{path}: {where}: variable ${{{var}}} is not set",
            hint=f"set it in the shell or in {env_file.name}",
        )
    config = _validate(path, data)
    ctx_env = config.environments[name]
    app_vars = dict(file_vars)
    app_vars.update(ctx_env.variables)
    ctx = EnvContext(root=root, config=config, name=name, env_file=env_file, file_vars=file_vars, app_vars=app_vars)
    db = ctx.database
    if "DATABASE_URL" not in app_vars:
        url = database_url(db, root)
        if url:
            app_vars["DATABASE_URL"] = url
    if config.cache and config.cache.url and "REDIS_URL" not in app_vars:
        app_vars["REDIS_URL"] = config.cache.url
    masker.add_env(app_vars)
    masker.add(db.password)
    for var in ctx_env.required:
        if not app_vars.get(var):
            raise ConfigError(
                f"environments.{name}.required: variable {var} is not set",
                hint=f"add it to {env_file.name} or the shell",
            )
    return ctx
