"""TLS certificate checks for ``validate``: files exist, key matches certificate, not expiring.

The files are named by two env-file variables, paths relative to the app root:
``TLS_CERT_FILE`` (PEM certificate, the leaf first when it is a full chain) and ``TLS_KEY_FILE``
(PEM private key, unencrypted or with ``TLS_KEY_PASSWORD``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CERT_VAR = "TLS_CERT_FILE"
KEY_VAR = "TLS_KEY_FILE"
KEY_PASSWORD_VAR = "TLS_KEY_PASSWORD"  # noqa: S105 - a variable name, not a password
#: A certificate expiring sooner than this is a warning.
EXPIRY_WARNING = dt.timedelta(days=14)


@dataclass(frozen=True)
class TlsFinding:
    """One problem found with the TLS files."""

    level: Literal["error", "warning"]
    key: str
    message: str
    fix: str


def _host_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        # A wildcard covers exactly one label: *.example.com matches a.example.com only.
        return "." in host and host.split(".", 1)[1] == pattern[2:]
    return pattern == host


def check_tls(
    root: Path,
    values: Mapping[str, str],
    host: str | None,
    *,
    now: dt.datetime | None = None,
) -> list[TlsFinding]:
    """Check the TLS files named in ``values``; nothing to check (no variables) is no finding."""
    from stageflow.contexts import nginx_problem

    raw = {CERT_VAR: values.get(CERT_VAR, ""), KEY_VAR: values.get(KEY_VAR, "")}
    unsafe = [TlsFinding("error", var, problem, "use a plain file path (no spaces, ; { } quotes $ #)")
              for var, value in raw.items() if value and (problem := nginx_problem(value))]
    if unsafe:
        return unsafe
    cert_name, key_name = raw[CERT_VAR].strip(), raw[KEY_VAR].strip()
    if not cert_name and not key_name:
        return []
    if not cert_name or not key_name:
        missing, present = (CERT_VAR, KEY_VAR) if not cert_name else (KEY_VAR, CERT_VAR)
        return [TlsFinding("error", missing, f"is not set but {present} is", f"set both {CERT_VAR} and {KEY_VAR}")]
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    found: list[TlsFinding] = []
    cert_path, key_path = root / cert_name, root / key_name
    for var, path in ((CERT_VAR, cert_path), (KEY_VAR, key_path)):
        if not path.is_file():
            found.append(TlsFinding("error", var, f"file {path} does not exist", f"point {var} at the PEM file"))
    if found:
        return found
    try:
        certs = x509.load_pem_x509_certificates(cert_path.read_bytes())
        cert = certs[0]
    except ValueError:
        return [
            TlsFinding("error", CERT_VAR, f"{cert_name} is not a PEM certificate", "use the BEGIN CERTIFICATE file")
        ]
    password = values.get(KEY_PASSWORD_VAR)
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password.encode() if password else None)
    except TypeError:
        return [
            TlsFinding("error", KEY_VAR, f"{key_name} is encrypted", f"set {KEY_PASSWORD_VAR} or decrypt the key")
        ]
    except ValueError:
        return [TlsFinding("error", KEY_VAR, f"{key_name} is not a PEM private key (or the password is wrong)",
                           "use the PEM (BEGIN PRIVATE KEY) file that belongs to the certificate")]
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        found.append(TlsFinding("error", KEY_VAR, f"{key_name} does not belong to the certificate {cert_name}",
                                "use the private key the certificate was issued for"))
    now = now or dt.datetime.now(dt.UTC)
    expires = cert.not_valid_after_utc
    if expires <= now:
        found.append(TlsFinding("error", CERT_VAR, f"certificate expired on {expires:%Y-%m-%d}",
                                "renew it (e.g. certbot renew) and point TLS_CERT_FILE at the new file"))
    elif expires - now < EXPIRY_WARNING:
        days = (expires - now).days
        found.append(TlsFinding("warning", CERT_VAR, f"certificate expires in {days} days ({expires:%Y-%m-%d})",
                                "renew it before it expires (e.g. certbot renew)"))
    if cert.not_valid_before_utc > now:
        start = cert.not_valid_before_utc
        found.append(TlsFinding("warning", CERT_VAR, f"certificate is not valid before {start:%Y-%m-%d}",
                                "check the server clock or the certificate"))
    if host and not _covers(cert, host):
        found.append(TlsFinding("warning", CERT_VAR, f"certificate does not cover {host}",
                                "issue a certificate whose subject alternative names include the URL's host"))
    return found


def _covers(cert: object, host: str) -> bool:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    assert isinstance(cert, x509.Certificate)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        return any(_host_matches(n, host) for n in names)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return any(_host_matches(n, host) for n in san.get_values_for_type(x509.DNSName))
    return ip in san.get_values_for_type(x509.IPAddress)
