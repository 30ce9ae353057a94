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
