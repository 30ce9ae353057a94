"""Secret generation (OS CSPRNG via :mod:`secrets`) and strength rules.

Kinds, each with a default and a minimum length:

=========  =======  =======  ===========================================================
kind       default  minimum  alphabet
=========  =======  =======  ===========================================================
django     50       50       Django's ``get_random_secret_key`` alphabet
password   40       32       letters and digits: URL-safe without quoting, shell-safe
token      48       32       letters, digits, ``-`` and ``_`` (URL-safe base64 alphabet)
hex        64       32       ``0-9a-f``
=========  =======  =======  ===========================================================

Passwords avoid ``-`` and ``_`` on purpose, and tokens never start with them: a value starting
with ``-`` is read as an option by tools such as ``redis-cli -a``.
"""

from __future__ import annotations

import secrets as _csprng
import string
from dataclasses import dataclass
from typing import Literal

SecretKind = Literal["django", "password", "token", "hex"]

#: The alphabet of Django's ``get_random_secret_key``.
DJANGO_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789!@#$%^&*(-_=+)"


@dataclass(frozen=True)
class KindSpec:
    """How one kind of secret is generated and judged."""

    alphabet: str
    default_length: int
    min_length: int
    min_distinct: int


KINDS: dict[str, KindSpec] = {
    # Django's own check (security.W009) wants >= 50 characters and >= 5 distinct ones.
    "django": KindSpec(DJANGO_ALPHABET, 50, 50, 5),
    "password": KindSpec(string.ascii_letters + string.digits, 40, 32, 10),
    "token": KindSpec(string.ascii_letters + string.digits + "-_", 48, 32, 10),
    "hex": KindSpec("0123456789abcdef", 64, 32, 8),
}


def kind_spec(kind: str) -> KindSpec:
    """The :class:`KindSpec` of ``kind``; ValueError naming the known kinds otherwise."""
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown secret kind {kind!r} (known: {', '.join(KINDS)})") from None


def generate_secret(kind: str = "token", length: int | None = None) -> str:
    """A new random secret of ``kind``; ``length`` defaults per kind and may not go below its minimum."""
    spec = kind_spec(kind)
    n = spec.default_length if length is None else length
    if n < spec.min_length:
        raise ValueError(f"a {kind} secret needs at least {spec.min_length} characters, not {n}")
    while True:
        value = "".join(_csprng.choice(spec.alphabet) for _ in range(n))
        # Rejection keeps every generated secret above the strength bar validation applies, and
        # keeps tokens from starting with '-' (read as an option by command-line tools).
        if len(set(value)) >= spec.min_distinct and (kind == "django" or value[0].isalnum()):
            return value


def django_secret_key() -> str:
    """A Django ``SECRET_KEY``: 50 characters from Django's alphabet."""
    return generate_secret("django")


def weakness(value: str, kind: str | None = None) -> str | None:
    """Why ``value`` is too weak for a secret of ``kind`` (None: strong enough).

    Without a kind (a secret stageflow did not generate, e.g. a third-party token) the bar is
    lower: at least 16 characters and 6 distinct ones.
    """
    if kind is not None:
        spec = kind_spec(kind)
        min_len, min_distinct = spec.min_length, spec.min_distinct
    else:
        min_len, min_distinct = 16, 6
    if len(value) < min_len:
        return f"is too short ({len(value)} characters, needs at least {min_len})"
    if len(set(value)) < min_distinct:
        return f"has too few distinct characters ({len(set(value))}, needs at least {min_distinct})"
    return None


_PLACEHOLDER_WORDS = {
    "changeme",
    "change-me",
    "change_me",
    "change me",
    "changethis",
    "todo",
    "fixme",
    "tbd",
    "xxx",
    "placeholder",
    "replaceme",
    "replace-me",
    "example",
}
_PLACEHOLDER_PREFIXES = ("django-insecure-", "your-", "your_", "<", "changeme", "change-me", "change_me")


def is_placeholder(value: str) -> bool:
    """True for values that only stand in for a real one (``changeme``, ``django-insecure-…``, ``your-…``)."""
    low = value.strip().lower()
    if not low:
        return False
    if low in _PLACEHOLDER_WORDS or low.startswith(_PLACEHOLDER_PREFIXES):
        return True
    # "xxxxxxxx", "********", "...": filler characters only.
    return len(low) >= 3 and set(low) <= set("x*.?-_#")
