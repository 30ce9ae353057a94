"""Reference pages generated from the code itself: the ``stageflow.yml`` keys and the CLI commands.

The MkDocs build (``scripts/mkdocs_hooks.py``) replaces a marker in ``docs/reference/*.md`` with
this output, so a key or a command added to the code appears in the docs without anyone editing
them. What the code cannot say (what a key means, an example) lives in
``docs/reference/config-keys.yml``, keyed by section class and field; a test fails, naming the
entry to add, when a key has no description there.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from stageflow.config.checks import Bounds, Check
from stageflow.config.durations import parse_duration

CONFIG_MARKER = "<!-- stageflow:config-reference -->"
COMMANDS_MARKER = "<!-- stageflow:commands-reference -->"


@dataclass(frozen=True)
class ConfigKey:
    """One key ``stageflow.yml`` accepts, as the models define it."""

    path: str  # environments.<name>.url
    owner: str  # the section class that declares it (HealthCheck, Environment...)
    field: str  # its field name in that class
    type: str  # human form: "duration", "integer 1–65535", "list of strings"...
    default: str | None  # YAML-ish text; None when the key is required
    section: bool  # True when the value is itself a section (its keys follow)


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _strip(tp: Any) -> tuple[Any, list[Any]]:
    """The bare type and its ``Annotated`` metadata."""
    if typing.get_origin(tp) is typing.Annotated:
        base, *meta = typing.get_args(tp)
        return base, meta
    return tp, []


def _optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` → (X, True)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True  # noqa: UP007
    return tp, False


_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def type_name(tp: Any) -> str:
    """A reader's name for a field type (``Annotated`` bounds and durations included)."""
    base, meta = _strip(tp)
    base, nullable = _optional(base)
    inner, inner_meta = _strip(base)
    meta += inner_meta
    if any(isinstance(m, Check) and m.fn is parse_duration for m in meta):
        return "duration or null" if nullable else "duration"
    text = _bare_type_name(inner)
    for m in meta:
        if isinstance(m, Bounds):
            lim = m.limits
            lo = lim.get("ge", lim.get("gt"))
            hi = lim.get("le")
            if lo is not None and hi is not None:
                text += f" {_num(lo)}–{_num(hi)}"
            elif "gt" in lim:
                text += f" > {_num(lim['gt'])}"
            elif lo is not None:
                text += f" ≥ {_num(lo)}"
            if "min_length" in lim:
                text += f", at least {_num(lim['min_length'])} characters"
    return f"{text} or null" if nullable else text


def _num(v: float) -> str:
    return f"{v:g}"


def _bare_type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp in _SCALARS:
        return _SCALARS[tp]
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(
            "section (keys below)" if _is_section(_strip(a)[0]) else _bare_type_name(_strip(a)[0]) for a in args
        )
    if origin is list:
        item = _strip(args[0])[0]
        if typing.get_origin(item) is Literal:
            return "list of: " + ", ".join(str(a) for a in typing.get_args(item))
        return "list of sections" if _is_section(item) else f"list of {_plural(_bare_type_name(item))}"
    if origin is tuple:
        names = {_bare_type_name(_strip(a)[0]) for a in args}
        return f"{len(args)} {_plural(names.pop())}" if len(names) == 1 else "list"
    if origin is dict:
        value = _strip(args[1])[0]
        if value is Any:
            return "map"
        return "map of name → section" if _is_section(value) else f"map of name → {_bare_type_name(value)}"
    if _is_section(tp):
        return "section"
    return getattr(tp, "__name__", str(tp))


def _plural(word: str) -> str:
    return word if word.endswith("s") else word + "s"


def _render_default(value: Any, tp: Any) -> str:
    if value is None:
        return "null"
    if _is_section(type(value)):
        if value == type(value)():
            return "(its keys' defaults)"
        return _render_default({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, Any)
    if type_name(tp).startswith("duration") and isinstance(value, int | float):
        return _duration(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"' if value == "" or any(c in value for c in ":{}#") else value
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_render_default(v, Any) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_render_default(v, Any)}" for k, v in value.items()) + "}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _default(f: dataclasses.Field[Any], tp: Any) -> str | None:
    if f.default is not dataclasses.MISSING:
        return _render_default(f.default, tp)
    if f.default_factory is not dataclasses.MISSING:
        return _render_default(f.default_factory(), tp)
    return None


def _section_of(tp: Any) -> tuple[type | None, str]:
    """The section class a field holds, and the path suffix to reach its keys."""
    base, _ = _optional(_strip(tp)[0])
    base = _strip(base)[0]
    origin = typing.get_origin(base)
    if _is_section(base):
        return base, ""
    if origin in (typing.Union, types.UnionType):  # a number or a section (thresholds: 80 or {warning: ...})
        for arg in typing.get_args(base):
            if _is_section(_strip(arg)[0]):
                return _strip(arg)[0], ""
    if origin is dict:
        value = _strip(typing.get_args(base)[1])[0]
        if _is_section(value):
            return value, ".<name>"
    if origin is list:
        item = _strip(typing.get_args(base)[0])[0]
        if _is_section(item):
            return item, "[]"
    return None, ""


def _declared_by(cls: type, name: str) -> str:
    """The class in ``cls``'s hierarchy whose own annotations declare field ``name``."""
    for klass in cls.__mro__:
        if name in inspect.get_annotations(klass):
            return klass.__name__
    return cls.__name__


def config_keys(root: type | None = None, prefix: str = "") -> Iterator[ConfigKey]:
    """Every key of ``stageflow.yml``, depth first in declaration order, nested sections expanded."""
    if root is None:
        from stageflow.config.models import ProjectConfig

        root = ProjectConfig
    hints = typing.get_type_hints(root, include_extras=True)
    for f in dataclasses.fields(root):
        tp = hints[f.name]
        path = f"{prefix}{f.name}"
        section, suffix = _section_of(tp)
        yield ConfigKey(path, _declared_by(root, f.name), f.name, type_name(tp), _default(f, tp), section is not None)
        if section is not None:
            yield from config_keys(section, f"{path}{suffix}.")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_reference(docs: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown: one table per top-level key, every key with its type, default, meaning and example.

    ``docs`` maps a section class name to ``{field: {doc: ..., example: ...}}`` (config-keys.yml).
    """
    out: list[str] = []
    current = None
    for key in config_keys():
        top = key.path.split(".", 1)[0].split("[", 1)[0]
        if top != current:
            current = top
            out += ["", f"## `{top}`", "", "| key | type | default | meaning | example |", "|---|---|---|---|---|"]
        entry = docs.get(key.owner, {}).get(key.field) or {}
        doc = str(entry.get("doc", "")) if isinstance(entry, Mapping) else str(entry)
        example = entry.get("example") if isinstance(entry, Mapping) else None
        if example is None and key.default is not None and not key.default.startswith("("):
            example = key.default
        default = "**required**" if key.default is None else f"`{key.default}`"
        ex = f"`{_cell(str(example))}`" if example is not None else ""
        out.append(f"| `{key.path}` | {_cell(key.type)} | {_cell(default)} | {_cell(doc)} | {ex} |")
    return "\n".join(out).lstrip("\n") + "\n"


def missing_docs(docs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Keys without a description in config-keys.yml, as ``Section.field (path)``; required keys need an example."""
    missing = []
    for key in config_keys():
        entry = docs.get(key.owner, {}).get(key.field)
        doc = entry.get("doc") if isinstance(entry, Mapping) else entry
        if not doc:
            missing.append(f"{key.owner}.{key.field} ({key.path}): add a 'doc'")
        elif key.default is None and not (isinstance(entry, Mapping) and entry.get("example") is not None):
            missing.append(f"{key.owner}.{key.field} ({key.path}): required, add an 'example'")
    return missing


def stale_docs(docs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Entries of config-keys.yml that name no key of the models."""
    known = {(k.owner, k.field) for k in config_keys()}
    return [f"{owner}.{name}" for owner, entries in docs.items() for name in entries if (owner, name) not in known]


def commands_reference() -> str:
    """Markdown for every command of the Typer CLI (groups expanded), from its own help and parameters.

    Typer ships its own copy of Click, so commands and parameters are read by their attributes
    rather than by class.
    """
    import typer.main

    from stageflow.cli.main import app

    out: list[str] = []

    def walk(cmd: Any, path: list[str]) -> None:
        subcommands: dict[str, Any] | None = getattr(cmd, "commands", None)
        if subcommands is not None:
            if len(path) > 1:
                out.extend(["", f"{'#' * len(path)} `{' '.join(path)}`", "", _help(cmd)])
            for name, sub in subcommands.items():
                if not sub.hidden:
                    walk(sub, [*path, name])
            return
        args = [p.name.upper() if p.required else f"[{p.name.upper()}]"
                for p in cmd.params if p.param_type_name == "argument"]
        usage = " ".join([*path, "[OPTIONS]", *args])
        out.extend(["", f"{'#' * len(path)} `{' '.join(path)}`", "", _help(cmd), "", "```text", usage, "```", ""])
        rows = []
        for p in cmd.params:
            if getattr(p, "hidden", False):
                continue
            if p.param_type_name == "argument":
                name = p.name.upper()
                kind = "argument" + ("" if p.required else ", optional")
            else:
                name = ", ".join(p.opts + p.secondary_opts)
                kind = "flag" if p.is_flag else p.type.name
                if p.multiple:
                    kind += ", repeatable"
            default = "" if p.default in (None, False, ()) or p.required else f"`{p.default}`"
            rows.append(f"| `{_cell(name)}` | {kind} | {default} | {_cell(getattr(p, 'help', None) or '')} |")
        if rows:
            out.extend(["| parameter | kind | default | meaning |", "|---|---|---|---|", *rows])

    root = typer.main.get_command(app)
    global_opts = [p for p in root.params if not getattr(p, "hidden", False)]
    described = (f"`{', '.join(p.opts)}` ({getattr(p, 'help', '')})" for p in global_opts)
    out.extend(["Global options: " + ", ".join(described), ""])
    walk(root, ["stageflow"])
    return "\n".join(out).lstrip("\n") + "\n"


def _help(cmd: Any) -> str:
    return (cmd.help or cmd.short_help or "").strip()

