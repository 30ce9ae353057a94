"""git argv builders."""

from __future__ import annotations

from pathlib import Path


def rev_parse(ref: str = "HEAD") -> list[str]:
    """Resolve ``ref`` to a full sha."""
    return ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"]


def is_repo() -> list[str]:
    """Succeeds inside a work tree."""
    return ["git", "rev-parse", "--is-inside-work-tree"]


def status_porcelain() -> list[str]:
    """Changes in the work tree, machine-readable (untracked files excluded: they do not ship)."""
    return ["git", "status", "--porcelain", "--untracked-files=no"]


def subject(sha: str) -> list[str]:
    """First line of a commit message."""
    return ["git", "log", "-1", "--format=%s", sha]


def commit_time(sha: str) -> list[str]:
    """Committer date of ``sha``, ISO-8601 strict."""
    return ["git", "log", "-1", "--format=%cI", sha]


def archive(sha: str, output: Path) -> list[str]:
    """Tarball of the tree at ``sha``."""
    return ["git", "archive", "--format=tar", f"--output={output}", sha]


def stash_create() -> list[str]:
    """A commit object for the dirty work tree without touching it (empty output when clean)."""
    return ["git", "stash", "create"]


def ls_files(paths: list[str]) -> list[str]:
    """Tracked files under ``paths`` (pathspecs from the root, NUL-separated)."""
    return ["git", "ls-files", "-z", "--", *[f":(top,glob){p}" for p in paths]]
