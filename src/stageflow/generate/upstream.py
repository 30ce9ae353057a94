"""The small nginx file a cutover rewrites: ``upstream-<env>.conf``.

Site configs ``include`` it and ``proxy_pass http://<upstream_name>``; a cutover rewrites only
this file, runs ``nginx -t`` and reloads.
"""

from __future__ import annotations

from collections.abc import Sequence


def upstream_name(project: str, env: str) -> str:
    """Name of the nginx upstream block for ``env``."""
    return f"{project}_{env}".replace("-", "_")


def upstream_filename(env: str) -> str:
    """File name of the upstream include for ``env``."""
    return f"upstream-{env}.conf"


def render_upstream(project: str, env: str, servers: Sequence[str], *, keepalive: int = 16) -> str:
    """Render the upstream block; ``servers`` are ``host:port`` strings."""
    if not servers:
        raise ValueError("an upstream needs at least one server")
    lines = [f"# managed by stageflow: the cutover rewrites this file\nupstream {upstream_name(project, env)} {{"]
    lines += [f"    server {s} max_fails=0;" for s in servers]
    lines.append(f"    keepalive {keepalive};")
    lines.append("}")
    return "\n".join(lines) + "\n"
