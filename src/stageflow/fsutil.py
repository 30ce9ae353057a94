"""The one way stageflow touches files it writes or reads back: no symlink is ever followed.

Every file stageflow writes goes through :func:`write_file` (atomic replace) or :func:`open_append`
(logs), every directory it creates through :func:`make_dirs`, and files it reads back from the app
(env files, pid files, records) through :func:`read_file`. The rules, from the trust model (the app's
repo and stageflow's own state on disk may be hostile):

* under the app root no path component is followed through a symlink: directories are opened one
  component at a time with ``O_NOFOLLOW``, and ``..`` never climbs out of the root;
* the target itself is never followed: a symlink (or a FIFO, a device…) there is refused with a
  one-line :class:`UnsafePathError` naming the file, rather than written through or replaced;
* temporary files get a random name, ``O_EXCL | O_NOFOLLOW``, and their final mode before the first
  byte; ``rename`` makes the switch atomic;
* a mode is never widened: rewriting a file the operator tightened keeps it tight;
* directories stageflow creates get their mode explicitly (the umask does not widen or narrow it).

A path outside the root (an operator's ``-o DIR``) is the operator's choice: its directories are
taken as they are, but the target itself is still never followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from stageflow.errors import ConfigError

#: Mode of files that may hold secrets or private state (env files, state, logs).
PRIVATE = 0o600
#: Mode of directories stageflow creates for its own state (``.stageflow``, ``logs``, ``data``).
PRIVATE_DIR = 0o700

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class UnsafePathError(ConfigError):
    """A path stageflow was about to use is a symlink, not a regular file, or leaves the app root."""


def _show(path: Path | str) -> str:
    # Relative to the working directory when under it: error lines stay short and readable.
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def inside(root: Path, path: Path | str) -> bool:
    """True when ``path`` (lexically, ``..`` applied) lies inside ``root``."""
    full = os.path.normpath(os.path.join(root, path))
    base = os.path.normpath(root)
    return full == base or full.startswith(base.rstrip(os.sep) + os.sep)


def confine(root: Path, value: str, key: str) -> Path:
    """``value`` (a path from config or an env file) as a path inside ``root``, else UnsafePathError.

    ``key`` names where the value came from, for the error line.
    """
    if not value or "\x00" in value or "\n" in value:
        raise UnsafePathError(f"{key}: must be a path inside the app", hint="use a relative path like config/x")
    if not inside(root, value):
        raise UnsafePathError(
            f"{key}: {value!r} leaves the app directory",
            hint="use a path inside the app (relative, without '..' climbing out)",
        )
    return Path(os.path.normpath(os.path.join(root, value)))


def _refuse(path: Path, st: os.stat_result | None, action: str) -> UnsafePathError:
    if st is not None and stat.S_ISLNK(st.st_mode):
        return UnsafePathError(
            f"{_show(path)} is a symbolic link; stageflow never {action} through links",
            hint="remove the link (stageflow recreates the file) or replace it with a regular file",
        )
    if st is not None and stat.S_ISDIR(st.st_mode):
        return UnsafePathError(f"{_show(path)} is a directory, expected a file", hint="remove or rename it")
    return UnsafePathError(
        f"{_show(path)} is not a regular file", hint="replace it with a regular file or remove it"
    )


def _lstat_at(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_dir(path: Path, *, root: Path | None, create: bool = True, mode: int = PRIVATE_DIR) -> int:
    """A file descriptor of directory ``path``, creating missing directories with ``mode``.

    Under ``root`` every component below the root is opened without following symlinks; a symlinked
    or non-directory component is an :class:`UnsafePathError`. FileNotFoundError when ``create`` is
    false and a component is missing.
    """
    path = Path(os.path.abspath(path))
    if root is None or not inside(root, path):
        if root is not None:
            raise UnsafePathError(f"{_show(path)} leaves the app directory {_show(root)}",
                                  hint="use a path inside the app")
        if create:
            os.makedirs(path, mode=mode, exist_ok=True)
        return os.open(path, _DIR_FLAGS)
    base = Path(os.path.abspath(root))
    rel = Path(os.path.relpath(path, base))
    if create and not base.exists():
        os.makedirs(base, mode=mode, exist_ok=True)  # the root itself is the caller's, like an -o DIR
    fd = os.open(base, _DIR_FLAGS)
    current = base
    try:
        for part in rel.parts:
            if part == ".":
                continue
            current = current / part
            created = False
            try:
                try:
                    nfd = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, mode, dir_fd=fd)
                        created = True
                    except FileExistsError:
                        pass  # made meanwhile by a concurrent stageflow: opened and checked below
                    nfd = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _refuse(current, _lstat_at(part, fd), "writes") from exc
                raise
            if created:
                os.fchmod(nfd, mode)  # mkdir's mode went through the umask; ours is explicit
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_dirs(path: Path, *, root: Path | None, mode: int = PRIVATE_DIR) -> Path:
    """Create ``path`` (and its parents) like ``mkdir -p`` without following symlinks; return it."""
    os.close(open_dir(path, root=root, create=True, mode=mode))
    return path


def write_file(
    path: Path,
    data: str | bytes,
    *,
    root: Path | None,
    mode: int = 0o644,
    dir_mode: int = PRIVATE_DIR,
    durable: bool = False,
) -> None:
    """Replace ``path`` atomically with ``data``; see the module doc for the rules.

    The file gets ``mode`` (narrowed to an existing file's mode, never widened) before its first
    byte. ``durable`` also fsyncs the file and the directory (env files, records that must survive
    a crash). Missing directories are created with ``dir_mode``.
    """
    import secrets

    raw = data.encode("utf-8") if isinstance(data, str) else data
    dfd = open_dir(path.parent, root=root, create=True, mode=dir_mode)
    name = path.name
    try:
        st = _lstat_at(name, dfd)
        if st is not None:
            if not stat.S_ISREG(st.st_mode):
                raise _refuse(path, st, "writes")
            mode &= stat.S_IMODE(st.st_mode)
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE,
                     dir_fd=dfd)
        try:
            try:
                os.fchmod(fd, mode)
                view = memoryview(raw)
                while view:
                    view = view[os.write(fd, view):]
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        if durable:
            # Not every filesystem syncs directories; the rename itself is still atomic.
            with contextlib.suppress(OSError):
                os.fsync(dfd)
    finally:
        os.close(dfd)


def open_append(path: Path, *, root: Path | None, mode: int = PRIVATE, dir_mode: int = PRIVATE_DIR) -> int:
    """A descriptor appending to ``path`` (created with ``mode``), never through a symlink.

    An existing file keeps its mode narrowed to ``mode``: logs may quote secrets' surroundings.
    """
    dfd = open_dir(path.parent, root=root, create=True, mode=dir_mode)
    try:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path.name, flags, mode, dir_fd=dfd)
        except OSError as exc:
            raise _refuse(path, _lstat_at(path.name, dfd), "writes") from exc
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise _refuse(path, st, "writes")
        os.set_blocking(fd, True)
        if stat.S_IMODE(st.st_mode) & ~mode:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & mode)
        return fd
    finally:
        os.close(dfd)


def create_private(path: Path, *, root: Path | None, mode: int = PRIVATE) -> None:
    """Make sure ``path`` exists as a regular file with at most ``mode`` (before SQLite opens it)."""
    os.close(open_append(path, root=root, mode=mode))


class FileTooLargeError(ConfigError):
    """A file stageflow reads is larger than the limit for its kind."""


def read_file(path: Path, *, root: Path | None = None, limit: int, follow: bool = False) -> bytes | None:
    """The bytes of regular file ``path`` (None when it does not exist), at most ``limit`` bytes.

    A symlink (unless ``follow``), FIFO, device or directory is an :class:`UnsafePathError`, a larger
    file a :class:`FileTooLargeError`: nothing is read from a source that could block or never end.
    """
    try:
        dfd = open_dir(path.parent, root=root, create=False)
    except FileNotFoundError:
        return None
    try:
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
        try:
            fd = os.open(path.name, flags, dir_fd=dfd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _refuse(path, _lstat_at(path.name, dfd), "reads") from exc
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, st, "reads")
        if st.st_size > limit:
            raise _too_large(path, limit)
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise _too_large(path, limit)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _too_large(path: Path, limit: int) -> FileTooLargeError:
    size = f"{limit // (1 << 20)} MB" if limit >= 1 << 20 else f"{limit // 1024} KB"
    return FileTooLargeError(f"{_show(path)} is larger than {size}", hint="it cannot be a file stageflow reads")


def remove_file(path: Path, *, root: Path | None) -> None:
    """Unlink ``path`` if present (a symlink is removed itself, never its target)."""
    try:
        dfd = open_dir(path.parent, root=root, create=False)
    except FileNotFoundError:
        return
    try:
        os.unlink(path.name, dir_fd=dfd)
    except FileNotFoundError:
        pass
    finally:
        os.close(dfd)


def narrow_mode(path: Path, mode: int, *, root: Path | None) -> None:
    """Take away every permission ``path`` has beyond ``mode`` (a file someone else created for us,
    like the app's SQLite database); never follows a symlink, never widens, ignores a missing file."""
    try:
        dfd = open_dir(path.parent, root=root, create=False)
    except FileNotFoundError:
        return
    try:
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        return  # missing, or a link: nothing of ours to narrow
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & ~mode:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & mode)
    finally:
        os.close(fd)


def allow_traverse(path: Path, *, root: Path) -> None:
    """Let other users pass through directory ``path`` and its parents below ``root`` (``--x``, never
    read or write): nginx workers run as ``nobody`` and must reach their temp directories."""
    base = Path(os.path.abspath(root))
    rel = Path(os.path.relpath(os.path.abspath(path), base))
    current = base
    for part in rel.parts:
        current = current / part
        fd = open_dir(current, root=root, create=False)
        try:
            st = os.fstat(fd)
            if stat.S_IMODE(st.st_mode) & 0o011 != 0o011:
                os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o011)
        finally:
            os.close(fd)
