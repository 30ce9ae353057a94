"""Secret masking: one registry of secret values, applied to everything we print or store.

Two kinds of secret are masked, in one pass over the text whose cost is linear in its length
(whatever the number of secrets, and whatever the text holds):

* every registered value (values of secret-like variables, passwords, generated secrets), found
  all at once by one Aho–Corasick automaton, overlapping matches included;
* the password of every URL of any scheme (``redis://:pw@host``, ``postgres://u:p@ss@h/db``,
  ``amqp+ssl://…``): the userinfo ends at the authority's last ``@``, as RFC 3986 reads it.

Overlapping or adjacent masked spans merge into one ``******``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ahocorasick_rs import AhoCorasick

MASK = "******"

# Names whose values are secrets even when nobody registered them explicitly
# (DB_PASS, MYSQL_PWD, GITHUB_TOKEN, STRIPE_API_KEY, AWS_SECRET_ACCESS_KEY, SENTRY_DSN, …).
_SECRET_NAME = re.compile(
    r"SECRET|PASS|PWD|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE|WEBHOOK|CREDENTIAL|SALT|SIGNING|DSN"
    r"|_KEY\Z|\AKEY\Z",
    re.I,
)
# A scheme starts at a boundary: the look-behind makes every other start position fail at once,
# so a long run of letters is scanned once, not once per position (no quadratic backtracking).
_URL_START = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://")
_AUTHORITY_END = re.compile(r"[/?#\s\"'<>\\]")


def is_secret_name(name: str) -> bool:
    """True when an environment variable name conventionally holds a secret."""
    return bool(_SECRET_NAME.search(name))


def url_password_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the password of every URL in ``text``, in order; linear in ``len(text)``."""
    spans: list[tuple[int, int]] = []
    pos = 0
    while True:
        m = _URL_START.search(text, pos)
        if m is None:
            return spans
        start = m.end()
        e = _AUTHORITY_END.search(text, start)
        end = e.start() if e else len(text)
        at = text.rfind("@", start, end)
        if at > start:
            colon = text.find(":", start, at)
            if 0 <= colon < at - 1:
                spans.append((colon + 1, at))
        pos = max(end, start)


def url_passwords(text: str) -> list[str]:
    """The passwords of the URLs in ``text``."""
    return [text[a:b] for a, b in url_password_spans(text)]


class Masker:
    """Holds known secret values and replaces them in text.

    Values shorter than four characters are not registered: masking them would
    garble ordinary output without protecting anything worth protecting.
    """

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self._automaton: AhoCorasick | None = None
        self._patterns: list[str] = []

    def add(self, value: str | None) -> None:
        """Register one secret value."""
        if value and len(value) >= 4:
            with self._lock:
                if value not in self._values:
                    self._values.add(value)
                    self._automaton = None

    def add_env(self, env: Mapping[str, str]) -> None:
        """Register every value of ``env`` whose key names a secret, plus passwords inside URLs."""
        for key, value in env.items():
            if is_secret_name(key):
                self.add(value)
            if value and "://" in value:
                for pw in url_passwords(value):
                    self.add(pw)

    def extend(self, values: Iterable[str]) -> None:
        """Register several secret values."""
        for v in values:
            self.add(v)

    def _spans(self, text: str) -> list[tuple[int, int]]:
        with self._lock:
            if self._automaton is None and self._values:
                # Imported here: most commands print nothing that needs it.
                from ahocorasick_rs import AhoCorasick, MatchKind

                self._patterns = sorted(self._values)
                self._automaton = AhoCorasick(self._patterns, matchkind=MatchKind.Standard)
            automaton = self._automaton
        spans = url_password_spans(text) if "://" in text else []
        if automaton is not None:
            spans.extend((s, e) for _, s, e in automaton.find_matches_as_indexes(text, overlapping=True))
        return spans

    def mask(self, text: str) -> str:
        """Return ``text`` with every registered secret and every URL password replaced."""
        if not text:
            return text
        spans = self._spans(text)
        if not spans:
            return text
        spans.sort()
        out: list[str] = []
        pos = 0
        cur_s, cur_e = spans[0]
        for s, e in spans[1:]:
            if s <= cur_e:
                cur_e = max(cur_e, e)
                continue
            out += (text[pos:cur_s], MASK)
            pos = cur_e
            cur_s, cur_e = s, e
        out += (text[pos:cur_s], MASK, text[cur_e:])
        return "".join(out)


#: Process-wide masker used by the runner, the logger and the console.
masker = Masker()


# C0 controls but newline and tab, DEL and C1 controls: an ESC from a config value could
# rewrite the operator's terminal (move the cursor, hide text, set the window title).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with terminal control characters shown escaped (``\\x1b``), newlines and tabs kept."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text) if text else text


def shown(text: str) -> str:
    """What may be printed: secrets masked, control characters escaped."""
    return printable(masker.mask(text))
