"""Is a process running? Read from ``/proc`` where there is one, psutil elsewhere.

Shared by the deploy lock, the local runtime and its nginx handling. ``/proc`` because ``status``
checks every process and importing psutil costs ~30 ms of its 300 ms start-up budget; a zombie
(killed, not yet reaped) counts as gone, although its pid still "exists".
"""

from __future__ import annotations

import os

NO_PROCFS = "?"


def proc_stat(pid: int) -> tuple[str, int | None]:
    """(state, start ticks since boot) of ``pid``; ("", None) when gone, ("?", None) without procfs."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return ("", None) if os.path.isdir("/proc/self") else (NO_PROCFS, None)
    except OSError:
        return NO_PROCFS, None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = raw[raw.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[19])


def running(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    state, _ = proc_stat(pid)
    if state != NO_PROCFS:
        return state not in ("", "Z")
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _proc_read(pid: int, name: str) -> bytes | None:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as fh:
            return fh.read(1 << 20)
    except OSError:
        return None


def cmdline(pid: int) -> list[str] | None:
    """The argv of ``pid``; None when gone or unreadable."""
    raw = _proc_read(pid, "cmdline")
    if raw is None and not os.path.isdir("/proc/self"):
        import psutil

        try:
            return list(psutil.Process(pid).cmdline())
        except (psutil.Error, OSError):
            return None
    if not raw:
        return None
    return [a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0")]


def cwd(pid: int) -> str | None:
    """The working directory of ``pid``; None when gone or unreadable."""
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        if os.path.isdir("/proc/self"):
            return None
    import psutil

    try:
        return str(psutil.Process(pid).cwd())
    except (psutil.Error, OSError):
        return None


def is_ours(pid: int, *, start_ticks: int | None = None, argv_has: str | None = None,
            cwd_in: str | None = None) -> bool:
    """True only when ``pid`` runs, is no zombie, and matches every given fact about the process
    stageflow started: its start time (pids are reused), a word of its command line, and a
    working directory at or under ``cwd_in``.

    A pid read back from disk (pid files may be stale, damaged or hostile) is signalled only
    after this check; anything unreadable counts as "not ours".
    """
    if pid <= 1 or pid == os.getpid():
        return False
    state, ticks = proc_stat(pid)
    if state == NO_PROCFS:
        if not running(pid):
            return False
    elif state in ("", "Z") or (start_ticks is not None and ticks != start_ticks):
        return False
    if argv_has is not None:
        argv = cmdline(pid)
        if argv is None or not any(argv_has in a for a in argv):
            return False
    if cwd_in is not None:
        where = cwd(pid)
        base = cwd_in.rstrip("/")
        if where is None or not (where == base or where.startswith(base + "/")):
            return False
    return True
