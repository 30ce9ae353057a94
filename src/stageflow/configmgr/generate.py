"""Use cases behind ``stageflow config setup`` and ``stageflow config generate``.

Rules:

* the file is rendered from its template, then merged with what is already there: every existing
  value is kept (user edits win), keys the template does not know are kept at the end;
* a secret is generated only when missing, empty or a placeholder (``changeme``...), with the OS
  CSPRNG, separately for every environment; ``rotate`` replaces the named secrets;
* a value that embeds a secret (``REDIS_URL`` with the Redis password) is re-derived when that
  secret is generated or rotated, kept otherwise;
* the file is written atomically with mode 0600 (only when its content, mode or encryption
  changes), registered with the masker, and ``.gitignore`` is fixed to ignore it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stageflow.config.envfile import EnvLine, display_path, format_env_lines, write_env_text
from stageflow.config.loader import load_project, resolve_env_name
from stageflow.config.models import ProjectConfig
from stageflow.configmgr.envs import (
    EnvFileState,
    env_file_path,
    other_env_values,
    read_state,
    shared_secrets,
)
from stageflow.configmgr.gitignore import ensure_ignored, state_paths
from stageflow.configmgr.secrets import generate_secret, is_placeholder
from stageflow.configmgr.templates import (
    MARKER,
    Rendered,
    SecretSpec,
    TemplateRef,
    render_template,
    resolve_template,
    template_context,
)
from stageflow.errors import UsageError
from stageflow.masking import MASK, is_secret_name, masker

FILE_MODE = 0o600


@dataclass(frozen=True)
class KeyOutcome:
    """What happened to one key: generated, kept, rotated (secrets), added, updated."""

    key: str
    status: str
    secret: bool
    value: str = field(repr=False)

    def display(self) -> str:
        """``KEY=****** (generated)`` for secrets, ``KEY=value (kept)`` otherwise (still masked)."""
        shown = MASK if self.secret else masker.mask(self.value)
        return f"{self.key}={shown} ({self.status})"


@dataclass
class GenerateResult:
    """Outcome of generating one environment's env file."""

    env: str
    path: Path
    template: TemplateRef
    outcomes: list[KeyOutcome]
    written: bool
    created: bool
    encrypted: bool
    problems: list[str] = field(default_factory=list)
    #: (key, other_env, other_key): secrets whose value another environment also uses
    shared: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """Problems worth telling the user, secrets never included."""
        return self.problems + [
            f"{key} has the same value as {other_env}'s {other_key}: every environment needs its own "
            f"(stageflow config generate {self.env} --rotate {key})"
            for key, other_env, other_key in self.shared
        ]

    @property
    def rotated(self) -> list[str]:
        """Keys rotated by this run."""
        return [o.key for o in self.outcomes if o.status == "rotated"]

    @property
    def secret_values(self) -> dict[str, str]:
        """Secret keys and their values (never print these)."""
        return {o.key: o.value for o in self.outcomes if o.secret}


@dataclass
class SetupResult:
    """Outcome of ``setup``: one result per environment and the lines added to ``.gitignore``."""

    results: list[GenerateResult]
    gitignore_added: list[str]


def _rel(root: Path, path: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def _build(
    rendered: Rendered,
    state: EnvFileState,
    statuses: Mapping[str, str],
) -> tuple[list[EnvLine], list[KeyOutcome]]:
    """Merge the rendered template with the existing file (see the module rules)."""
    existing = state.values
    fresh = {name for name, st in statuses.items() if st in ("generated", "rotated")}
    final: dict[str, tuple[str, str]] = {}
    for ln in rendered.lines:
        if ln.key is None or ln.key in final:
            continue
        key = ln.key
        if key in rendered.secrets:
            final[key] = (ln.value, statuses[key])
        elif key in rendered.derived:
            if key in existing and not (rendered.derived[key] & fresh):
                final[key] = (existing[key], "kept")
            else:
                final[key] = (ln.value, "updated" if key in existing else "generated")
        elif key in existing:
            final[key] = (existing[key], "kept")
        else:
            final[key] = (ln.value, "added")
    lines: list[EnvLine] = [EnvLine(comment=f"{MARKER}{rendered.template.name}")]
    for ln in rendered.lines:
        lines.append(ln if ln.key is None else EnvLine(key=ln.key, value=final[ln.key][0]))
    extras = [k for k in existing if k not in final]
    if extras:
        if lines[-1].key is not None or (lines[-1].comment or "").strip():
            lines.append(EnvLine(comment=""))
        note = f"# --- kept from the previous file (not in template {rendered.template.name}) ---"
        lines.append(EnvLine(comment=note))
        lines += [EnvLine(key=k, value=existing[k]) for k in extras]
    outcomes = [
        KeyOutcome(k, st, k in rendered.secret_keys or is_secret_name(k), v) for k, (v, st) in final.items()
    ]
    outcomes += [KeyOutcome(k, "kept", is_secret_name(k), existing[k]) for k in extras]
    return lines, outcomes


def generate_env(
    root: Path,
    env: str,
    *,
    template: str | None = None,
    rotate: Iterable[str] = (),
    encrypt: bool | None = None,
    environ: Mapping[str, str] | None = None,
    config: ProjectConfig | None = None,
    fix_gitignore: bool = True,
) -> GenerateResult:
    """Create or update ``env``'s env file from its template.

    ``template`` picks a template by name (default: the one recorded in the file, else the app's or
    the built-in one for ``env``). ``encrypt`` None keeps the file's current form; True/False
    encrypts or decrypts it (key from ``STAGEFLOW_MASTER_KEY`` in ``environ``).
    """
    environ = os.environ if environ is None else environ
    config = config or load_project(root)
    name = resolve_env_name(config, env)
    path = env_file_path(root, config, name)
    state = read_state(path, environ)
    ref = resolve_template(root, config, name, template, state.template)
    rotate_set = set(rotate)
    existing = state.values
    statuses: dict[str, str] = {}

    def provide(spec: SecretSpec) -> str:
        current = existing.get(spec.name, "")
        if spec.name in rotate_set:
            statuses[spec.name] = "rotated"
        elif current and not is_placeholder(current):
            statuses[spec.name] = "kept"
            return current
        else:
            statuses[spec.name] = "generated"
        return generate_secret(spec.kind, spec.length)

    rendered = render_template(root, ref, template_context(config, name, ref), provide)
    unknown = sorted(rotate_set - set(rendered.secrets))
    if unknown:
        raise UsageError(
            f"--rotate {unknown[0]}: not a secret of template {ref.name}",
            hint=f"its secrets: {', '.join(rendered.secrets) or 'none'}",
        )
    lines, outcomes = _build(rendered, state, statuses)
    for o in outcomes:
        if o.secret:
            masker.add(o.value)
    text = format_env_lines(lines)
    target_encrypted = state.encrypted if encrypt is None else encrypt
    mode_ok = state.exists and (path.stat().st_mode & 0o777) == FILE_MODE
    written = False
    if not (state.exists and text == state.text and target_encrypted == state.encrypted and mode_ok):
        write_env_text(path, text, root=root, mode=FILE_MODE, encrypt=target_encrypted, environ=environ)
        written = True
    result = GenerateResult(
        env=name,
        path=path,
        template=ref,
        outcomes=outcomes,
        written=written,
        created=not state.exists,
        encrypted=target_encrypted,
    )
    if fix_gitignore:
        rel = _rel(root, path)
        ensure_ignored(root, [rel] if rel else [])
    _cross_check(root, config, result, environ)
    if result.rotated:
        _rotation_notes(config, result)
    return result


def _cross_check(root: Path, config: ProjectConfig, result: GenerateResult, environ: Mapping[str, str]) -> None:
    others, problems = other_env_values(root, config, result.env, environ)
    result.problems += [f"could not compare secrets with {p}" for p in problems]
    result.shared = shared_secrets(result.secret_values, others)


def _rotation_notes(config: ProjectConfig, result: GenerateResult) -> None:
    db = config.database_for(result.env)
    user = db.user.format(env=result.env, project=config.project)
    for key in result.rotated:
        if db.engine == "postgres" and db.password and f"${{{key}}}" in db.password:
            result.notes.append(
                f"{key} is the PostgreSQL password of role {user}: set the new value in the database "
                f"first (ALTER ROLE {user} PASSWORD '...', value in {display_path(result.path)})"
            )
    result.notes.append(f"restart {result.env}'s services: stageflow deploy {result.env}")


def setup_envs(
    root: Path,
    *,
    encrypt: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> SetupResult:
    """Create or update the env file of every environment, then fix ``.gitignore`` once."""
    environ = os.environ if environ is None else environ
    config = load_project(root)
    results = [
        generate_env(root, name, encrypt=encrypt, environ=environ, config=config, fix_gitignore=False)
        for name in config.environments
    ]
    rels = [r for r in (_rel(root, res.path) for res in results) if r]
    added = ensure_ignored(root, rels, state_paths(root, config))
    # Both sides of a shared secret report it; tell it once, on the side reported first.
    seen: set[tuple[str, str]] = set()
    for res in results:
        res.shared = [s for s in res.shared if (s[1], s[2]) not in seen]
        seen.update((res.env, key) for key, _, _ in res.shared)
    return SetupResult(results, added)
