"""Validated-config cache: the last validated ``stageflow.yml`` as JSON, keyed by its exact bytes.

Validating needs pydantic, whose import and schema build cost ~300 ms, more than the whole start-up
budget of a read-only command such as ``stageflow status``. The file rarely changes between two
commands, so the validated result is kept in ``.stageflow/cache/config.json`` (0600: the YAML may
hold inline secrets) and rebuilt into the dataclasses without pydantic. It is used only for the very
bytes it was validated from (kept in the file and compared, not hashed: no collision, and no
hashlib import) under the same schema, so an edit to either is a miss; a damaged cache is a miss too.
``${VAR}`` references are stored unresolved: no value from an env file or the shell is ever cached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import types
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from stageflow.config import checks, durations, models
from stageflow.errors import StageflowError

T = TypeVar("T")
CACHE_FILE = Path("cache") / "config.json"


def _schema_fingerprint() -> str:
    """Changes whenever the package or any file defining the schema changes."""
    from stageflow import __version__

    parts = [__version__]
    for mod in (models, durations, checks):
        st = os.stat(mod.__file__ or "")
        parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def load(state_dir: Path, source: bytes) -> models.ProjectConfig | None:
    """The config validated from exactly ``source`` under this schema, or None (absent, stale, unreadable)."""
    try:
        doc = json.loads((state_dir / CACHE_FILE).read_text(encoding="utf-8"))
        if doc.get("schema") != _schema_fingerprint() or doc.get("source") != source.decode("latin-1"):
            return None
        config: models.ProjectConfig = decode(models.ProjectConfig, doc["config"])
        return config
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def store(state_dir: Path, source: bytes, config: models.ProjectConfig) -> None:
    """Write the cache atomically; only into an existing state directory (never create one)."""
    if not state_dir.is_dir():
        return
    from stageflow.config.envfile import write_env_text

    path = state_dir / CACHE_FILE
    doc = {"schema": _schema_fingerprint(), "source": source.decode("latin-1"), "config": dataclasses.asdict(config)}
    # A cache that cannot be written (or sits behind a symlink) only costs speed.
    with contextlib.suppress(OSError, StageflowError):
        # The env files' writer: atomic, and 0600 before the first byte (the YAML may hold secrets).
        write_env_text(path, json.dumps(doc, separators=(",", ":")), root=state_dir.parent, mode=0o600)


def decode(tp: Any, value: Any) -> Any:
    """Rebuild a value of type ``tp`` from its ``dataclasses.asdict`` JSON form (no validation)."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = models.field_types(tp)
        return tp(**{f.name: decode(hints[f.name], value[f.name]) for f in dataclasses.fields(tp) if f.init})
    origin = get_origin(tp)
    if origin is Annotated:
        return decode(get_args(tp)[0], value)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        for arg in get_args(tp):
            if dataclasses.is_dataclass(arg) and not isinstance(value, dict):
                continue  # e.g. a threshold given as a plain number instead of {warning, critical}
            if arg is not type(None) and (dataclasses.is_dataclass(arg) or get_origin(arg) is not None):
                return decode(arg, value)
        if float in get_args(tp) and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    if origin is list:
        (item,) = get_args(tp)
        return [decode(item, v) for v in value]
    if origin is tuple:
        return tuple(decode(a, v) for a, v in zip(get_args(tp), value, strict=True))
    if origin is dict:
        _, item = get_args(tp)
        return {k: decode(item, v) for k, v in value.items()}
    if origin is Literal or tp in (str, int, bool) or tp is Any:
        return value
    if tp is float:
        return float(value)
    raise TypeError(f"cannot decode {tp!r}")
