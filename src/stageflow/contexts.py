"""Validators for values that stageflow renders into another language's text (nginx, Compose).

A value from an env file or ``stageflow.yml`` is data. Where it must appear inside generated
configuration, it is checked for that context first and refused with the key's name, rather than
escaped and hoped for: one newline and ``return 200 …;`` in ``TLS_CERT_FILE`` would otherwise
take over every response of the proxy.
"""

from __future__ import annotations

import re

from stageflow.errors import ConfigError

# Whitespace and control characters end an nginx token; ; { } end a directive or block; quotes,
# backslashes, $ (variables) and # (comments) change how the rest of the line is read.
_NGINX_BREAKOUT = re.compile(r"[\x00-\x20\x7f;{}\"'\\$#`]")
# An image reference: [registry[:port]/]name[:tag][@digest], as Docker spells it.
_IMAGE_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}")


def nginx_problem(value: str) -> str | None:
    """Why ``value`` cannot be one nginx token (a path, a host), or None when it can."""
    if not value:
        return "is empty"
    m = _NGINX_BREAKOUT.search(value)
    if m is None:
        return None
    ch = m.group(0)
    what = "a control character or whitespace" if ch <= " " or ch == "\x7f" else repr(ch)
    return f"holds {what}, which would break out of the nginx configuration"


def nginx_token(value: str, key: str) -> str:
    """``value`` when it is safe as one nginx token; ConfigError naming ``key`` otherwise."""
    problem = nginx_problem(value)
    if problem:
        raise ConfigError(f"{key}: {problem}", hint="use a plain path or name (no spaces, ; { } quotes $ #)")
    return value


def image_ref(value: str, key: str) -> str:
    """``value`` when it is a Docker image reference; ConfigError naming ``key`` otherwise."""
    if not _IMAGE_REF.fullmatch(value) or "//" in value:
        raise ConfigError(f"{key}: {value!r} is not an image reference",
                          hint="use e.g. postgres:16 or registry.example.com/app:1.2")
    return value


def host_port(host: str, port: int) -> str:
    """``host:port`` for a URL, nginx ``listen``/``server`` or gunicorn ``--bind``: IPv6 in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
