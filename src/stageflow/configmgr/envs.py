"""Reading the env files of a project's environments (plain or encrypted) and comparing them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stageflow.config.envfile import EnvLine, display_path, parse_env_lines, read_env_text
from stageflow.config.models import ProjectConfig
from stageflow.configmgr.templates import template_from_text
from stageflow.errors import ConfigError
from stageflow.masking import is_secret_name

#: Values shorter than this are never compared across environments ("0", "1", hostnames...).
_MIN_SHARED_LEN = 8


def env_file_path(root: Path, config: ProjectConfig, env: str) -> Path:
    """The env file of ``env``: its ``env_file`` setting or ``.env.<env>``, confined to the app root."""
    from stageflow.config.loader import env_file_of

    return env_file_of(root, config, env)


@dataclass
class EnvFileState:
    """An env file as found on disk (``exists`` False when absent)."""

    path: Path
    exists: bool = False
    text: str = ""
    encrypted: bool = False
    lines: list[EnvLine] = field(default_factory=list)

    @property
    def values(self) -> dict[str, str]:
        """KEY -> value (a later assignment wins)."""
        return {ln.key: ln.value for ln in self.lines if ln.key is not None}

    @property
    def template(self) -> str | None:
        """The template name recorded in the file's first lines."""
        return template_from_text(self.text) if self.exists else None


def read_state(path: Path, environ: Mapping[str, str]) -> EnvFileState:
    """Read and parse ``path`` (decrypting it when encrypted); raises EnvFileError / ConfigError."""
    got = read_env_text(path, environ=environ)
    if got is None:
        return EnvFileState(path)
    text, encrypted = got
    return EnvFileState(path, True, text, encrypted, parse_env_lines(text, display_path(path)))


def other_env_values(
    root: Path, config: ProjectConfig, env: str, environ: Mapping[str, str]
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Values of every other environment's env file, and the problems met reading them.

    Two environments configured with the same file are not "other" for each other.
    """
    own = env_file_path(root, config, env).resolve()
    out: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    for name in config.environments:
        path = env_file_path(root, config, name)
        if name == env or path.resolve() == own:
            continue
        try:
            state = read_state(path, environ)
        except ConfigError as exc:
            problems.append(f"{name}: {exc.message}")
            continue
        if state.exists:
            out[name] = state.values
    return out, problems


def shared_secrets(
    secrets: Mapping[str, str], others: Mapping[str, Mapping[str, str]]
) -> list[tuple[str, str, str]]:
    """``(key, other_env, other_key)`` for each secret value that also appears in another environment."""
    index: dict[str, tuple[str, str]] = {}
    for other_env, values in others.items():
        for key, value in values.items():
            if len(value) >= _MIN_SHARED_LEN:
                index.setdefault(value, (other_env, key))
    found = []
    for key, value in secrets.items():
        if len(value) >= _MIN_SHARED_LEN and value in index:
            found.append((key, *index[value]))
    return found


def secret_keys_of(values: Mapping[str, str], template_secrets: set[str]) -> dict[str, str]:
    """The subset of ``values`` that are secrets: declared by the template or secret by name."""
    return {k: v for k, v in values.items() if k in template_secrets or is_secret_name(k)}
