"""Encryption at rest for env files: Fernet (AES-128-CBC + HMAC-SHA256) keyed by ``STAGEFLOW_MASTER_KEY``.

``STAGEFLOW_MASTER_KEY`` holds one Fernet key, or several separated by commas: the first encrypts,
every one of them decrypts, so a key can be rotated by prepending the new key, regenerating the
files (``stageflow config setup --encrypt``) and then dropping the old one.

This module is a leaf (it imports nothing from stageflow but the errors) because
:mod:`stageflow.config.envfile` imports it lazily to read encrypted files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from stageflow.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

MASTER_KEY_VAR = "STAGEFLOW_MASTER_KEY"
_GENERATE_HINT = (
    "generate one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
)


def generate_master_key() -> str:
    """A new random Fernet key (URL-safe base64 of 32 bytes from the OS CSPRNG)."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode("ascii")


def _fernet(environ: Mapping[str, str], purpose: str) -> MultiFernet:
    from cryptography.fernet import Fernet, MultiFernet

    raw = environ.get(MASTER_KEY_VAR, "").strip()
    if not raw:
        raise ConfigError(f"{purpose} needs {MASTER_KEY_VAR}, which is not set", hint=_GENERATE_HINT)
    keys = []
    for n, part in enumerate((p.strip() for p in raw.split(",") if p.strip()), 1):
        try:
            keys.append(Fernet(part.encode("ascii")))
        except (ValueError, UnicodeEncodeError):
            # Never echo the value: it is a secret even when malformed.
            raise ConfigError(
                f"{MASTER_KEY_VAR}: key #{n} is not a Fernet key (44 URL-safe base64 characters)",
                hint=_GENERATE_HINT,
            ) from None
    return MultiFernet(keys)


def encrypt_text(text: str, *, environ: Mapping[str, str]) -> str:
    """Encrypt ``text`` with the first key of ``STAGEFLOW_MASTER_KEY``; returns the ASCII token."""
    return _fernet(environ, "--encrypt").encrypt(text.encode("utf-8")).decode("ascii")


def decrypt_text(token: str, *, source: str, environ: Mapping[str, str]) -> str:
    """Decrypt a token written by :func:`encrypt_text`; ``source`` names the file in errors."""
    from cryptography.fernet import InvalidToken

    fernet = _fernet(environ, f"{source} is encrypted and reading it")
    try:
        return fernet.decrypt("".join(token.split()).encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError):
        raise ConfigError(
            f"{source}: cannot decrypt with {MASTER_KEY_VAR}",
            hint="wrong key, or the file was damaged; set the key it was encrypted with",
        ) from None
