"""Load ``stageflow.yml``: YAML → pydantic (or the validated cache) → ``${VAR}`` per environment.

Errors name the file, the key path and what is expected. The project is validated once with its
references unresolved; an environment's context then substitutes that environment's variables into
the validated sections and re-runs the checks that let references through.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from stageflow.config import cache, models
from stageflow.config.checks import Check
from stageflow.config.envfile import read_env_file
from stageflow.config.models import NAME_RE, Database, Environment, ProjectConfig
from stageflow.errors import ConfigError, UsageError
from stageflow.masking import is_secret_name, masker

if TYPE_CHECKING:
    from pydantic import TypeAdapter

PROJECT_FILE = "stageflow.yml"
_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Shell text: `${VAR}` there is expanded by the child's shell from its environment, never by us.
_SHELL_KEY = re.compile(r"services\.[^.]+\.(command|release|healthcheck)\Z")


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


#: Bounds on ``stageflow.yml``: a project file is a few KB; these stop a hostile one (a huge file,
#: an alias bomb, absurd nesting) within a second and a few MB, before pydantic or the cache see it.
MAX_PROJECT_FILE = 1 << 20
MAX_NODES = 100_000
MAX_TEXT = 4 << 20
MAX_DEPTH = 64


def _read_bytes(path: Path) -> bytes:
    from stageflow.fsutil import read_file

    # A regular file only (a FIFO would hang, /dev/zero never ends); a symlink to one is fine.
    data = read_file(path, limit=MAX_PROJECT_FILE, follow=True)
    if data is None:
        raise ConfigError(f"{path}: file not found", hint="run from the app's root, or pass --root DIR")
    return data


def _check_bounds(path: Path, root: Any) -> None:
    """Refuse a YAML node graph whose expansion (aliases counted as copies) exceeds the bounds."""
    import yaml

    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, characters) once expanded
    open_nodes: set[int] = set()
    stack: list[tuple[Any, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, done = stack.pop()
        nid = id(node)
        if isinstance(node, yaml.MappingNode):
            children = [c for pair in node.value for c in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        if done:
            open_nodes.discard(nid)
            nodes = 1 + sum(sizes[id(c)][0] for c in children)
            chars = (len(node.value) if not children and isinstance(node.value, str) else 0) + sum(
                sizes[id(c)][1] for c in children)
            sizes[nid] = (nodes, chars)
            if nodes > MAX_NODES or chars > MAX_TEXT or len(sizes) > MAX_NODES:
                raise ConfigError(
                    f"{path}: the document (aliases expanded) holds more than "
                    + (f"{MAX_NODES} values" if nodes > MAX_NODES else f"{MAX_TEXT >> 20} MB of text"),
                    hint="a project file is small: remove the repeated aliases or the bulk data",
                )
            continue
        if nid in sizes:
            continue
        if nid in open_nodes:
            raise ConfigError(f"{path}: an alias refers to itself", hint="remove the recursive anchor")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{path}: nested more than {MAX_DEPTH} levels deep", hint="flatten the document")
        open_nodes.add(nid)
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)


def _parse_yaml(path: Path, text: bytes) -> dict[str, Any]:
    import yaml

    # libyaml's loader when present: the pure-Python one is several times slower.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_bounds(path, node)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{where}: {problem}", hint="fix the YAML syntax there") from exc
    finally:
        loader.dispose()
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


_adapter: TypeAdapter[ProjectConfig] | None = None
_UNKNOWN = {"extra_forbidden", "unexpected_keyword_argument"}
# Location parts that are pydantic's own (validator wrappers, union members), not keys of the file.
_NOT_KEYS = {"function-after", "function-before", "float", "Level"}
_MISSING = {"missing", "missing_keyword_only_argument", "missing_argument"}


def _validate(path: Path, data: dict[str, Any]) -> ProjectConfig:
    global _adapter
    from pydantic import TypeAdapter, ValidationError

    if _adapter is None:
        _adapter = TypeAdapter(ProjectConfig)
    try:
        return _adapter.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if p not in _NOT_KEYS)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] in _UNKNOWN:
            msg = "unknown key (check the spelling; see the README for the schema)"
        elif err["type"] in _MISSING:
            msg = "required key is missing"
        more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        # Checks across sections (ProjectConfig.__post_init__) name their own key path.
        where = f"{_keypath(loc)}: " if loc else ""
        raise ConfigError(f"{path}: {where}{msg}{more}") from None


def _substitute(text: str, variables: Mapping[str, str], where: str, missing: list[tuple[str, str]] | None) -> str:
    """Fill ``${VAR}``; a missing one is recorded, or with ``missing=None`` left in place as written."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$" if missing is not None else "$$"
        name, default = m.group(1), m.group(2)
        if name in variables and variables[name] != "":
            return variables[name]
        if default is not None:
            return default
        if missing is None:
            return m.group(0)
        missing.append((where, name))
        return ""

    return _REF.sub(sub, text)


def _shell_refs(text: str, variables: Mapping[str, str], where: str,
                missing: list[tuple[str, str]] | None) -> tuple[str, set[str]]:
    """Shell text with ``$$`` turned into ``$`` and its ``${VAR}`` references left for the shell.

    Returns the text and the names it references; a reference without a default to a variable
    that is not set is reported in ``missing``, as in any other value.
    """
    names: set[str] = set()

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$" if missing is not None else "$$"
        name = m.group(1)
        names.add(name)
        if m.group(2) is None and not variables.get(name) and missing is not None:
            missing.append((where, name))
        return m.group(0)

    return _REF.sub(sub, text), names


_rechecks: dict[type, dict[str, list[Check]]] = {}


def _checks_to_rerun(cls: type) -> dict[str, list[Check]]:
    found = _rechecks.get(cls)
    if found is None:
        found = _rechecks[cls] = {
            name: [m for m in getattr(tp, "__metadata__", ()) if isinstance(m, Check) and m.recheck]
            for name, tp in models.field_types(cls).items()
        }
    return found


#: Sections whose unset variables are no error: a notifier without its webhook is disabled (with a
#: warning, by :mod:`stageflow.alerts.notifiers`), and must never stop a deploy or ``status``.
_OPTIONAL_SECTIONS = frozenset({"alerts"})


class _Interpolation:
    """Substitutes ``${VAR}`` in every string of a validated config tree, collecting what is missing."""

    def __init__(self, path: Path, variables: Mapping[str, str], *, lenient: bool = False) -> None:
        self.path = path
        self.variables = variables
        self.missing: list[tuple[str, str]] | None = None if lenient else []
        #: variables referenced by shell text (command, release, healthcheck): the process needs them
        self.shell_names: set[str] = set()

    def value(self, value: Any, where: str) -> Any:
        if isinstance(value, str):
            if "$" not in value:
                return value
            if _SHELL_KEY.match(where):
                # A value is data: substituted into shell text, `; touch pwned` would run. The
                # shell expands the reference itself, from the environment the process gets.
                text, names = _shell_refs(value, self.variables, where, self.missing)
                self.shell_names |= names
                return text
            return _substitute(value, self.variables, where, self.missing)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return self.section(value, where)
        if isinstance(value, list | tuple):
            items = [self.value(v, f"{where}[{i}]") for i, v in enumerate(value)]
            return value if all(a is b for a, b in zip(items, value, strict=True)) else type(value)(items)
        if isinstance(value, dict):
            new = {k: self.value(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
            return value if all(new[k] is value[k] for k in value) else new
        return value

    def section(self, obj: Any, where: str, only: Mapping[str, str] | None = None) -> Any:
        changes: dict[str, Any] = {}
        rerun = _checks_to_rerun(type(obj))
        for f in dataclasses.fields(obj):
            key = f"{where}.{f.name}" if where else f.name
            old = getattr(obj, f.name)
            if only is not None and f.name in only:
                # Only this environment's section: the others may use variables it does not define.
                env = only[f.name]
                new = {**old, env: self.section(old[env], f"{key}.{env}")}
            elif not where and f.name in _OPTIONAL_SECTIONS:
                new = _Interpolation(self.path, self.variables, lenient=True).value(old, key)
            else:
                new = self.value(old, key)
            if new is old:
                continue
            for check in rerun.get(f.name, ()):
                try:
                    new = check.fn(new)
                except ValueError as exc:
                    raise ConfigError(f"{self.path}: {key}: {exc}") from None
            changes[f.name] = new
        return dataclasses.replace(obj, **changes) if changes else obj


#: ``${STAGEFLOW_RELEASE}`` in ``variables`` stays as this text until the runtime starts a release.
RELEASE_REF = "${STAGEFLOW_RELEASE}"


def fill_names(item: tuple[str, str], env: str, project: str) -> tuple[str, str]:
    """``{env}`` and ``{project}`` filled in one ``variables`` entry (plain replacement: no format spec)."""
    key, value = item
    return key, value.replace("{env}", env).replace("{project}", project)


def with_release(variables: Mapping[str, str], release: str) -> dict[str, str]:
    """``variables`` with ``${STAGEFLOW_RELEASE}`` replaced by ``release``."""
    return {k: v.replace(RELEASE_REF, release) if RELEASE_REF in v else v for k, v in variables.items()}


_memo: dict[bytes, ProjectConfig] = {}
_unsaved: set[bytes] = set()


def load_project(root: Path) -> ProjectConfig:
    """Validate ``root/stageflow.yml`` without resolving ``${VAR}`` references.

    Served from the validated-config cache when the file is unchanged (see :mod:`.cache`).
    """
    path = root / PROJECT_FILE
    text = _read_bytes(path)
    state_dir = root / ".stageflow"
    config = _memo.get(text) or cache.load(state_dir, text)
    if config is None:
        config = _validate(path, _parse_yaml(path, text))
        _unsaved.add(text)
    if text in _unsaved and state_dir.is_dir():
        # The first command of a project validates before it creates .stageflow: save on the next load.
        cache.store(state_dir, text, config)
        _unsaved.discard(text)
    _memo[text] = config
    return config


def resolve_env_name(config: ProjectConfig, name: str) -> str:
    """Canonical environment name for ``name`` or alias; UsageError naming the known ones."""
    if not NAME_RE.match(name):
        raise UsageError(
            f"invalid environment name {name!r}",
            hint="use lowercase letters, digits, '-' or '_'",
        )
    canonical = config.canonical_env(name)
    if canonical is None:
        # The scripts' role words (`staging`, `prod`) reach the env that plays the role when no env is
        # called so: `stageflow prod` deploys `live` when live is the production-grade one.
        canonical = {"staging": config.staging_env, "prod": config.production_env,
                     "production": config.production_env}.get(name)
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
        return dataclasses.replace(
            db, name=db.name.format(**fill), user=db.user.format(**fill), path=db.path.format(**fill)
        )

    @property
    def state_dir(self) -> Path:
        """Where stageflow keeps its state for this project."""
        return self.root / ".stageflow"

    @property
    def require_clean_git(self) -> bool:
        """Dirty tree is fatal (production by default) or a warning."""
        flag = self.env.require_clean_git
        return self.config.is_production(self.name) if flag is None else flag

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


def _check_paths(path: Path, root: Path, paths: list[tuple[str, str]]) -> None:
    """Relative paths from the config stay inside the app; an absolute one is an explicit choice."""
    from stageflow.fsutil import inside

    for key, value in paths:
        if value and not Path(value).is_absolute() and not inside(root, value):
            raise ConfigError(f"{path}: {key}: {value!r} leaves the app directory",
                              hint="use a path inside the app (without '..' climbing out), or an absolute path")


def _check_values(values: Mapping[str, str], env_file: Path) -> None:
    """Every value the app gets must be able to be an environment variable (Linux: 128 KB, no NUL)."""
    from stageflow.config.envfile import MAX_VALUE

    for key, value in values.items():
        if "\x00" in value:
            raise ConfigError(f"{key}: the value contains a NUL character",
                              hint=f"fix it in {env_file.name}, the shell or stageflow.yml")
        if len(value) > MAX_VALUE:
            raise ConfigError(f"{key}: the value is longer than 128 KB",
                              hint="keep large data in a file and put its path in the variable")


def env_file_of(root: Path, config: ProjectConfig, env: str) -> Path:
    """``env``'s env file: ``environments.<env>.env_file`` (default ``.env.<env>``), inside ``root``.

    A path leaving the app (``../elsewhere``, ``/etc/x``) is refused: stageflow reads and writes
    env files, and neither may reach outside the app.
    """
    from stageflow.fsutil import confine

    return confine(root, config.environments[env].env_file or f".env.{env}", f"environments.{env}.env_file")


def load_env_context(root: Path, env_name: str, environ: Mapping[str, str] | None = None) -> EnvContext:
    """Resolve ``env_name`` (or alias): read its env file, interpolate, validate, compute app variables.

    Shell variables override the env file, so ``POSTGRES_PASSWORD=x stageflow deploy staging`` works.
    """
    environ = os.environ if environ is None else environ
    path = root / PROJECT_FILE
    base = load_project(root)
    name = resolve_env_name(base, env_name)
    env_file = env_file_of(root, base, name)
    file_vars = read_env_file(env_file, root=root, environ=environ)
    for key in list(file_vars):
        if key in environ:
            file_vars[key] = environ[key]
    # The release is known only when its processes start: its reference passes through unchanged
    # and the runtime fills it in (see RELEASE_REF); the environment's name is known now.
    interpolation = _Interpolation(path, {**environ, **file_vars, "STAGEFLOW_ENV": name,
                                          "STAGEFLOW_RELEASE": RELEASE_REF})
    config: ProjectConfig = interpolation.section(base, "", only={"environments": name})
    if interpolation.missing:
        where, var = interpolation.missing[0]
        raise ConfigError(
            f"{path}: {where}: variable ${{{var}}} is not set",
            hint=f"set it in the shell or in {env_file.name}",
        )
    ctx_env = config.environments[name]
    app_vars = dict(file_vars)
    app_vars.update(fill_names(v, name, config.project) for v in ctx_env.variables.items())
    for var in interpolation.shell_names:
        # A variable the commands reference that only the calling shell sets reaches them too.
        if var not in app_vars and var in environ:
            app_vars[var] = environ[var]
    ctx = EnvContext(root=root, config=config, name=name, env_file=env_file, file_vars=file_vars, app_vars=app_vars)
    db = ctx.database
    _check_paths(path, root, [
        ("database.path", db.path if db.engine == "sqlite" else ""),
        ("backups.dir", config.backups.dir),
        ("releases.venv_dir", config.releases.venv_dir.format(env=name, project=config.project)),
    ])
    if "DATABASE_URL" not in app_vars:
        url = database_url(db, root)
        if url:
            app_vars["DATABASE_URL"] = url
    if config.cache and config.cache.url and "REDIS_URL" not in app_vars:
        app_vars["REDIS_URL"] = config.cache.url
    masker.add_env(app_vars)
    masker.add(db.password)
    _check_values(app_vars, env_file)
    for svc_name, svc in config.services.items():
        for field_name in ("command", "release", "healthcheck"):
            text = getattr(svc, field_name)
            if text and (not text.strip() or "\x00" in text):
                what = "a NUL character" if "\x00" in text else "only whitespace"
                raise ConfigError(f"{path}: services.{svc_name}.{field_name}: holds {what}",
                                  hint="give the command, or leave the key out for none")
    for var in ctx_env.required:
        if not app_vars.get(var):
            raise ConfigError(
                f"environments.{name}.required: variable {var} is not set",
                hint=f"add it to {env_file.name} or the shell",
            )
    return ctx
