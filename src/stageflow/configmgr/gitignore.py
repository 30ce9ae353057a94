"""Keep env files and stageflow's own files out of git: ``.gitignore`` must ignore ``.env.*``,
``.stageflow/`` (state, releases, venvs, backups, the TLS key), ``logs/`` and the SQLite databases,
but never the templates.

This is a small subset of gitignore matching (no ``**`` semantics beyond fnmatch, no nested
``.gitignore`` files); it only needs to answer "is this file name covered by a pattern at the
root", and errs on the side of adding an explicit line.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stageflow.config.models import ProjectConfig

ENV_PATTERN = ".env.*"
_TEMPLATE_SAMPLE = "config/templates/production.env.j2"
_HEADER = "# stageflow: env files hold secrets; state, releases, venvs, backups, logs and databases"


def _patterns(text: str) -> list[tuple[bool, str]]:
    """(negated, pattern) for each pattern line, in order."""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        out.append((neg, line[1:] if neg else line))
    return out


def _matches(pattern: str, rel: str) -> bool:
    pat = pattern.rstrip("/")
    anchored = pat.startswith("/") or "/" in pat.rstrip("*")
    pat = pat.lstrip("/")
    if anchored:
        return fnmatch.fnmatchcase(rel, pat) or fnmatch.fnmatchcase(rel, pat + "/*")
    # Unanchored patterns match the name at any depth, or any directory on the way.
    parts = PurePosixPath(rel).parts
    return any(fnmatch.fnmatchcase(p, pat) for p in parts)


def is_ignored(text: str, rel: str) -> bool:
    """Whether ``rel`` (POSIX path from the root) is ignored by the patterns in ``text``."""
    ignored = False
    for neg, pat in _patterns(text):
        if _matches(pat, rel):
            ignored = not neg
    return ignored


def state_paths(root: Path, config: ProjectConfig) -> list[tuple[str, str]]:
    """(gitignore line, a file it must cover) for every place stageflow writes inside the app root.

    ``.stageflow/`` and ``logs/``, plus the SQLite databases (``database.path`` per env, with their
    ``-wal``/``-shm`` files) and backup/venv directories configured outside ``.stageflow/``.
    """
    found = [(".stageflow/", ".stageflow/state.db"), ("logs/", "logs/workflow_1.log")]
    fill = {"project": config.project}
    for env in config.environments:
        db = config.database_for(env)
        if db.engine == "sqlite":
            found.append(_line_for(root, db.path.format(env=env, **fill), suffix="*"))
    found.append(_line_for(root, config.backups.dir, directory=True))
    for env in config.environments:
        found.append(_line_for(root, config.releases.venv_dir.format(env=env, **fill), directory=True))
    return [f for f in dict.fromkeys(found) if f[0]]


def _line_for(root: Path, value: str, *, suffix: str = "", directory: bool = False) -> tuple[str, str]:
    """An anchored gitignore line for a path relative to (or inside) the app root; ("", "") outside it."""
    p = Path(value)
    try:
        rel = (p.relative_to(root) if p.is_absolute() else p).as_posix()
    except ValueError:
        return "", ""
    if rel.startswith("..") or rel in ("", "."):
        return "", ""
    if directory:
        return f"/{rel.rstrip('/')}/", f"{rel.rstrip('/')}/x"
    return f"/{rel}{suffix}", rel


def ensure_ignored(root: Path, env_files: Iterable[str], extra: Iterable[tuple[str, str]] = ()) -> list[str]:
    """Fix ``root/.gitignore`` so every env file (and each ``extra`` (line, sample)) is ignored and
    templates are not; returns lines added."""
    path = root / ".gitignore"
    from stageflow.fsutil import read_file, write_file

    raw = read_file(path, root=root, limit=1 << 20)
    text = raw.decode("utf-8", "replace") if raw is not None else ""
    added: list[str] = []
    probe = text
    if not is_ignored(probe, ".env.production"):
        added.append(ENV_PATTERN)
        probe += f"\n{ENV_PATTERN}\n"
    for rel in env_files:
        if not is_ignored(probe, rel):
            line = "/" + rel.lstrip("/")
            added.append(line)
            probe += f"\n{line}\n"
    for line, sample in extra:
        if not is_ignored(probe, sample):
            added.append(line)
            probe += f"\n{line}\n"
    if is_ignored(probe, _TEMPLATE_SAMPLE):
        # Some broad pattern (e.g. *.env*) would hide the templates: they belong in git.
        line = "!config/templates/*.env.j2"
        added.append(line)
        probe += f"\n{line}\n"
    if not added:
        return []
    new = text
    if new and not new.endswith("\n"):
        new += "\n"
    new += ("\n" if new else "") + _HEADER + "\n" + "\n".join(added) + "\n"
    # An existing file keeps its mode (the writer narrows 0666 to it); a new one is 0644.
    write_file(path, new, root=root, mode=0o666 if raw is not None else 0o644)
    return added
