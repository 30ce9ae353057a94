"""Secret masking: one registry of secret values, applied to everything we print or store."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping

MASK = "******"

# Names whose values are secrets even when nobody registered them explicitly.
_SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|API_?KEY|PRIVATE|WEBHOOK|CREDENTIAL|_KEY$)", re.I)
_URL_PASSWORD = re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?P<post>@)", re.I)


def is_secret_name(name: str) -> bool:
    """True when an environment variable name conventionally holds a secret."""
    return bool(_SECRET_NAME.search(name))


class Masker:
    """Holds known secret values and replaces them in text.

    Values shorter than four characters are not registered: masking them would
    garble ordinary output without protecting anything worth protecting.
    """

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: str | None) -> None:
        """Register one secret value."""
        if value and len(value) >= 4:
            with self._lock:
                self._values.add(value)

    def add_env(self, env: Mapping[str, str]) -> None:
        """Register every value of ``env`` whose key names a secret, plus passwords inside URLs."""
        for key, value in env.items():
            if is_secret_name(key):
                self.add(value)
            for m in _URL_PASSWORD.finditer(value or ""):
                self.add(m.group("pw"))

    def extend(self, values: Iterable[str]) -> None:
        """Register several secret values."""
        for v in values:
            self.add(v)

    def mask(self, text: str) -> str:
        """Return ``text`` with every registered secret and every URL password replaced."""
        if not text:
            return text
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for v in values:
            if v in text:
                text = text.replace(v, MASK)
        return _URL_PASSWORD.sub(lambda m: m.group("pre") + MASK + m.group("post"), text)


#: Process-wide masker used by the runner, the logger and the console.
masker = Masker()
