"""Reader and writer for ``.env`` files (``KEY=value`` lines), compatible with Docker Compose.

Syntax read (the subset Docker Compose v2's ``env_file`` reads the same way):

* blank lines and lines starting with ``#`` are ignored; an optional ``export`` prefix is allowed;
* ``KEY=value`` with ``KEY`` matching ``[A-Za-z_][A-Za-z0-9_]*``; spaces around ``=`` are allowed;
* unquoted values end at the line end; `` #`` (a hash after whitespace) starts a comment; trailing
  whitespace is dropped;
* ``'single quoted'`` values are literal, may span lines, and ``\\'`` stands for a quote;
* ``"double quoted"`` values may span lines and understand ``\\\\ \\" \\$ \\n \\r \\t \\a \\b \\f \\v``;
  any other backslash pair is kept as written (as Compose does);
* after a closing quote only whitespace and a ``# comment`` may follow.

Where Compose differs and how the writer avoids it:

* Compose expands ``$VAR`` / ``${VAR}`` in unquoted and double-quoted values; stageflow never
  expands anything in env files. The writer escapes every ``$`` as ``\\$``, which both read as ``$``.
* Compose ignores text after a closing quote and treats a bare ``KEY`` line as "inherit from the
  shell"; stageflow reports both as errors (with the line number) rather than guess.

The writer always emits ``KEY="..."`` with ``\\\\``, ``\\"``, ``\\$``, ``\\n`` and ``\\r`` escaped and every
other character (tabs, unicode, ``#``, ``=``) written as is, so a value survives a write/read round
trip through stageflow and through Compose alike.

Encryption at rest: a file whose first line is :data:`ENCRYPTED_HEADER` holds a Fernet token of the
plain text on the following lines; :func:`read_env_file` decrypts it with ``STAGEFLOW_MASTER_KEY``
(see :mod:`stageflow.configmgr.encryption`), so every command reads encrypted files transparently.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stageflow.errors import ConfigError

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_FULL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")

#: First line of an encrypted env file; the Fernet token follows on the next line.
ENCRYPTED_HEADER = "# stageflow:encrypted fernet v1 (needs STAGEFLOW_MASTER_KEY)"

# Escapes understood inside double quotes (Compose's set plus \$ and \"); others stay verbatim.
_DQ_ESCAPES = {
    "\\": "\\",
    '"': '"',
    "$": "$",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
}
_INLINE_WS = " \t"

#: Largest env file read (an env file is a few KB; this bounds what a hostile one can cost).
MAX_ENV_FILE = 1 << 20
#: Largest single value: more is no configuration value, and the OS limits one variable to 128 KB.
MAX_VALUE = 128 * 1024


class EnvFileError(ConfigError):
    """A malformed env file; the message names the file and line (``.env.staging:3: ...``)."""


@dataclass(frozen=True)
class EnvLine:
    """One logical line of an env file: an assignment (``key`` set) or a comment/blank line."""

    key: str | None = None
    value: str = ""
    comment: str | None = None
    lineno: int = field(default=0, compare=False)
    #: the value as written in the file (quotes and escapes included); "" for built lines
    raw: str = field(default="", compare=False)

    @property
    def is_assignment(self) -> bool:
        """True for ``KEY=value`` lines."""
        return self.key is not None


def _error(source: str, lineno: int, problem: str, hint: str = "fix or remove that line") -> EnvFileError:
    return EnvFileError(f"{source}:{lineno}: {problem}", hint=hint)


def parse_env_lines(text: str, source: str = "<env>") -> list[EnvLine]:
    """Parse env-file text into lines, keeping comments and blank lines (for rewriting files).

    Raises :class:`EnvFileError` naming ``source`` and the 1-based line of the first problem.
    """
    out: list[EnvLine] = []
    n = len(text)
    i = 0
    lineno = 1
    # Only "\n" ends a line: str.splitlines() would also split on \v, \f, \x85 or \u2028, which
    # may legitimately appear inside quoted values.
    while i < n:
        start_line = lineno
        eol = text.find("\n", i)
        if eol < 0:
            eol = n
        line = text[i:eol]
        stripped = line.strip(" \t\r\f\v")
        if not stripped or stripped.startswith("#"):
            out.append(EnvLine(comment=line.rstrip("\r"), lineno=start_line))
            i = eol + 1
            lineno += 1
            continue
        j = i
        while j < eol and text[j] in " \t":
            j += 1
        if text.startswith("export", j) and j + 6 < eol and text[j + 6] in _INLINE_WS:
            j += 6
            while j < eol and text[j] in _INLINE_WS:
                j += 1
        m = _KEY.match(text, j, eol)
        if not m:
            raise _error(source, start_line, "expected KEY=value (KEY: letters, digits, '_')")
        key = m.group(0)
        j = m.end()
        while j < eol and text[j] in _INLINE_WS:
            j += 1
        if j >= eol or text[j] != "=":
            # Never echo the line: a malformed line may well be a pasted secret.
            what = "a name without '='" if j >= eol else "no '=' after the name"
            raise _error(source, start_line, f"expected KEY=value, got {what}", hint="write KEY=value or KEY=")
        j += 1
        while j < eol and text[j] in _INLINE_WS:
            j += 1
        value_start = j
        if j < n and text[j] in "\"'":
            value, j, lineno = _quoted(text, j, lineno, source, key)
            raw = text[value_start:j]
            # After the closing quote: only blanks and an optional comment up to the line end.
            eol = text.find("\n", j)
            if eol < 0:
                eol = n
            rest = text[j:eol].strip(" \t\r")
            if rest and not rest.startswith("#"):
                raise _error(source, lineno, f"unexpected text after the closing quote of {key}")
        else:
            value = _strip_inline_comment(text[j:eol])
            raw = value
        if len(value) > MAX_VALUE:
            raise _error(source, start_line, f"the value of {key} is longer than 128 KB",
                         hint="keep large data in a file and put its path in the variable")
        if "\x00" in value:
            raise _error(source, start_line, f"the value of {key} contains a NUL character",
                         hint="remove it: no environment variable can hold one")
        out.append(EnvLine(key=key, value=value, lineno=start_line, raw=raw))
        i = eol + 1
        lineno += 1
    return out


def _strip_inline_comment(raw: str) -> str:
    # Like Compose: "#" starts a comment only after whitespace inside the value; "a#b" and "#b" stay.
    for k, ch in enumerate(raw):
        if ch == "#" and k > 0 and raw[k - 1] in _INLINE_WS:
            raw = raw[:k]
            break
    return raw.rstrip(" \t\r\f\v")


def _quoted(text: str, j: int, lineno: int, source: str, key: str) -> tuple[str, int, int]:
    """Read a quoted value starting at ``text[j]``; return (value, index after quote, line number)."""
    quote = text[j]
    start_line = lineno
    buf: list[str] = []
    k = j + 1
    n = len(text)
    while k < n:
        ch = text[k]
        if ch == "\\" and k + 1 < n:
            nxt = text[k + 1]
            if quote == '"' and nxt in _DQ_ESCAPES:
                buf.append(_DQ_ESCAPES[nxt])
                k += 2
                continue
            if quote == "'" and nxt == "'":
                buf.append("'")
                k += 2
                continue
            buf.append(ch)
            k += 1
            continue
        if ch == quote:
            return "".join(buf), k + 1, lineno
        if ch == "\n":
            lineno += 1
        buf.append(ch)
        k += 1
    kind = "double" if quote == '"' else "single"
    raise _error(
        source,
        start_line,
        f"unterminated {kind}-quoted value of {key}",
        hint=f"close the {quote} (inside the value write \\{quote})",
    )


def parse_env(text: str, source: str = "<env>") -> dict[str, str]:
    """Parse env-file text into a mapping (a later assignment of a key wins).

    Raises :class:`EnvFileError` with ``source:line:`` for malformed input.
    """
    return {ln.key: ln.value for ln in parse_env_lines(text, source) if ln.key is not None}


def quote_env_value(value: str) -> str:
    """``value`` as a double-quoted env-file value that stageflow and Docker Compose read alike."""
    if "\x00" in value:
        raise ValueError("environment values cannot contain NUL characters")
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("$", "\\$")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
    )
    return f'"{escaped}"'


def format_env_lines(lines: Iterable[EnvLine]) -> str:
    """Render parsed lines back to text: comments verbatim, assignments double-quoted."""
    out: list[str] = []
    for ln in lines:
        if ln.key is None:
            out.append(ln.comment or "")
        else:
            out.append(f"{ln.key}={quote_env_value(ln.value)}")
    return "\n".join(out) + "\n" if out else ""


def format_env(values: Mapping[str, str]) -> str:
    """Render a mapping as env-file text, double-quoting every value."""
    for key in values:
        if not _KEY_FULL.match(key):
            raise ValueError(f"invalid environment variable name {key!r}")
    return format_env_lines(EnvLine(key=k, value=v) for k, v in values.items())


def is_encrypted_text(text: str) -> bool:
    """True when ``text`` is an encrypted env file (starts with :data:`ENCRYPTED_HEADER`)."""
    return text.startswith(ENCRYPTED_HEADER.split(" (", 1)[0])


def read_env_text(
    path: Path, *, root: Path | None = None, environ: Mapping[str, str] | None = None
) -> tuple[str, bool] | None:
    """Plain text of ``path`` and whether it was encrypted; None when the file does not exist.

    Encrypted files are decrypted with ``STAGEFLOW_MASTER_KEY`` from ``environ`` (default: the
    process environment); a missing or wrong key is a one-line :class:`ConfigError`. A symlinked
    env file (or directory under ``root``), a FIFO, a device or a file over :data:`MAX_ENV_FILE`
    bytes is refused with one line: nothing is read from outside the app or from a source that
    could block or never end.
    """
    from stageflow.fsutil import read_file

    data = read_file(path, root=path.parent if root is None else root, limit=MAX_ENV_FILE)
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EnvFileError(f"{path}: not UTF-8 text", hint="re-save it as UTF-8") from exc
    if not is_encrypted_text(text):
        return text, False
    # Imported here: cryptography costs start-up time and most env files are not encrypted.
    from stageflow.configmgr.encryption import decrypt_text

    body = text.split("\n", 1)[1] if "\n" in text else ""
    return decrypt_text(body, source=str(path), environ=os.environ if environ is None else environ), True


def read_env_file(
    path: Path, *, root: Path | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Read ``path`` (decrypting it when encrypted); a missing file is an empty mapping."""
    got = read_env_text(path, root=root, environ=environ)
    if got is None:
        return {}
    return parse_env(got[0], display_path(path))


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when under it (short error messages), else as is."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def write_env_text(
    path: Path,
    text: str,
    *,
    root: Path | None = None,
    mode: int = 0o600,
    encrypt: bool = False,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Write ``text`` atomically with ``mode``, optionally encrypted with ``STAGEFLOW_MASTER_KEY``.

    Through :func:`stageflow.fsutil.write_file`: the temporary file has ``mode`` before any byte is
    written, no symlink is followed (under ``root`` not even in the directories), and the switch is
    atomic and durable. Without ``root`` only the file and its temporary are checked.
    """
    from stageflow.fsutil import write_file

    if encrypt:
        from stageflow.configmgr.encryption import encrypt_text

        token = encrypt_text(text, environ=os.environ if environ is None else environ)
        text = f"{ENCRYPTED_HEADER}\n{token}\n"
    write_file(path, text, root=path.parent if root is None else root, mode=mode, durable=True)


def write_env_file(
    path: Path,
    values: Mapping[str, str],
    *,
    root: Path | None = None,
    mode: int = 0o600,
    encrypt: bool = False,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Write ``values`` atomically with ``mode`` (0600 by default: env files hold secrets)."""
    write_env_text(path, format_env(values), root=root, mode=mode, encrypt=encrypt, environ=environ)
