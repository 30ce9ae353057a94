"""Releases: ``git archive`` of one commit into ``.stageflow/releases/<id>``."""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from stageflow.commands import git
from stageflow.errors import ConfigError, OperationError
from stageflow.fsutil import make_dirs
from stageflow.runner import Runner
from stageflow.state.store import Release, Store

if TYPE_CHECKING:
    from stageflow.config.models import ProjectConfig


@dataclass(frozen=True)
class GitFacts:
    """What git says about the work tree (read once, then planned on)."""

    head: str
    dirty_files: list[str]
    subject: str

    @property
    def dirty(self) -> bool:
        """True when tracked files have uncommitted changes."""
        return bool(self.dirty_files)


def parse_porcelain(text: str) -> list[str]:
    """File names from ``git status --porcelain`` output."""
    return [line[3:] for line in text.splitlines() if len(line) > 3]


def read_git(root: Path, runner: Runner) -> GitFacts:
    """Read HEAD, dirtiness and subject; ConfigError when ``root`` is not a git repository."""
    if not runner.run(git.is_repo(), cwd=root).ok:
        raise ConfigError(f"{root} is not a git repository", hint="run 'git init' and commit the app first")
    head = runner.run(git.rev_parse("HEAD"), cwd=root)
    if not head.ok or not head.stdout.strip():
        raise ConfigError(f"{root}: HEAD does not resolve to a commit", hint="commit the app first")
    sha = head.stdout.strip()
    status = runner.run(git.status_porcelain(), cwd=root, check=True, what="git status")
    subj = runner.run(git.subject(sha), cwd=root)
    return GitFacts(sha, parse_porcelain(status.stdout), subj.stdout.strip())


def file_hash(path: Path) -> str | None:
    """sha256 of a file, None when absent."""
    try:
        import hashlib  # not at the top: `status` never hashes, and OpenSSL's set-up costs ~5 ms

        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def release_id(sha: str, dirty: bool, now: datetime | None = None) -> str:
    """``<UTC timestamp>-<short sha>[-dirty]``; sortable by time."""
    ts = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{ts}-{sha[:7]}" + ("-dirty" if dirty else "")


def releases_dir(state_dir: Path) -> Path:
    """Where release trees live."""
    return state_dir / "releases"


def build_release(root: Path, state_dir: Path, facts: GitFacts, store: Store, runner: Runner,
                  requirements: str, *, include_dirty: bool) -> str:
    """Export the commit (plus dirty changes when allowed) into a new release directory."""

    sha = facts.head
    tree = sha
    if include_dirty and facts.dirty:
        # `git stash create` snapshots tracked changes as a commit without touching the work tree.
        snap = runner.run(git.stash_create(), cwd=root, check=True, what="git stash create").stdout.strip()
        tree = snap or sha
    rid = release_id(sha, include_dirty and facts.dirty)
    base = releases_dir(state_dir)
    dest = base / rid
    n = 1
    while dest.exists():
        n += 1
        dest = base / f"{rid}.{n}"
    rid = dest.name
    make_dirs(base, root=root)
    with tempfile.TemporaryDirectory(dir=base, prefix=".build-") as tmp:
        tar_path = Path(tmp) / "release.tar"
        runner.run(git.archive(tree, tar_path), cwd=root, check=True, what="git archive")
        staging = Path(tmp) / "tree"
        staging.mkdir()
        with tarfile.open(tar_path) as tar:
            try:
                tar.extractall(staging, filter=_keep_links)  # noqa: S202 (filtered)
            except tarfile.FilterError as exc:
                raise ConfigError(
                    f"the commit holds {exc.tarinfo.name!r}, which would be written outside the release",
                    hint="remove that entry from the repository",
                ) from None
        staging.rename(dest)
    store.add_release(rid, sha, include_dirty and facts.dirty, facts.subject, dest, file_hash(dest / requirements))
    return rid


def _keep_links(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's ``data`` filter, except that a symlink pointing outside the tree is kept as it is.

    Such a link (``static/vendor -> /usr/share/javascript``) is the repo's business at run time;
    what matters at extraction is that nothing is *written* through it, and the data filter still
    refuses every later member whose path would pass through a link out of the tree.
    """
    try:
        return tarfile.data_filter(member, dest)
    except (tarfile.AbsoluteLinkError, tarfile.LinkOutsideDestinationError):
        if member.issym():
            return member
        raise


def release_dir(store: Store, release: Release) -> Path:
    """The directory of a recorded release: ``<state dir>/releases/<id>``, wherever the record says it
    was built (the id is one plain name, checked when read), so a damaged or hostile ``state.db`` can
    never make a deploy run, or a cleanup delete, some other directory."""
    return releases_dir(store.path.parent) / release.id


def release_path(store: Store, rid: str) -> Path:
    """The directory of release ``rid``; OperationError when it is gone."""
    release = store.release(rid)
    path = release_dir(store, release) if release else None
    if path is None or path.is_symlink() or not path.is_dir():
        raise OperationError(f"release {rid} does not exist any more", hint="see 'stageflow history' for releases")
    return path


def remove_release(store: Store, rid: str) -> None:
    """Delete a release directory and its record."""
    release = store.release(rid)
    if release is not None:
        shutil.rmtree(release_dir(store, release), ignore_errors=True)  # refuses a symlink: nothing is removed
    store.delete_release(rid)


def rollback_target(store: Store, env: str, current: str | None) -> str | None:
    """Where ``rollback`` without ``--to`` goes: the newest release that served ``env``, is not
    current, was not rolled back away from, and still exists. Each rollback so goes one further back.
    """
    marked = store.rolled_back_from(env)
    for rid in store.env_releases(env):
        if rid == current or rid in marked:
            continue
        release = store.release(rid)
        if release is not None and release_dir(store, release).is_dir():
            return rid
    return None


#: A release no deployment names yet is being deployed right now (``full`` builds first) unless older.
FRESH_SECONDS = 900.0


def prune_releases(store: Store, config: ProjectConfig, names: list[str], keep: int) -> list[str]:
    """Remove release directories beyond the newest ``keep`` that served each env in ``names``.

    Never removes a current or previous release of any env, any release an env outside ``names``
    served, one a running deployment uses, or a brand-new one no deployment names yet. Releases of
    crashed or failed deploys that never served go too. Returns the removed ids.
    """
    wanted: set[str] = set()
    for name in config.environments:
        st = store.env_state(name)
        wanted |= {r for r in (st.current_release, st.previous_release) if r}
        served = store.env_releases(name)
        wanted |= set(served if name not in names else served[:keep])
    busy = store.releases_deploying()
    named = store.releases_named()
    now = datetime.now(UTC)
    removed: list[str] = []
    for release in store.releases():
        rid = release.id
        if rid in wanted or rid in busy:
            continue
        if rid not in named and (now - datetime.fromisoformat(release.created_at)).total_seconds() < FRESH_SECONDS:
            continue
        remove_release(store, rid)
        removed.append(rid)
    return removed
