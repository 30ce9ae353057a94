"""Generate the production nginx reverse proxy of one environment.

One directory per environment (``deploy/nginx/<env>/`` by default) holds everything nginx needs,
meant to be installed as ``include_dir`` (``/etc/nginx/stageflow/<env>`` by default):

* ``<project>-<env>.conf`` – the site: HTTP → HTTPS redirect, TLS (Mozilla intermediate), rate
  limits, access control, proxied/static/media locations. Include it from nginx's ``http`` block.
* ``upstream-<env>.conf`` – the upstream, rendered by :func:`stageflow.generate.upstream.render_upstream`;
  a cutover rewrites only this file.
* ``security-headers.conf`` and ``proxy.conf`` – snippets included in *every* location, because nginx
  drops inherited ``add_header``/``proxy_set_header`` as soon as a location sets one of its own.
* ``ffdhe2048.pem`` – the RFC 7919 DH group for the DHE suites of the intermediate profile.
* ``htpasswd`` – when basic auth is on (staging by default); the generated password itself is kept
  in ``.stageflow/secrets/`` (mode 0600) and never printed.

Settings come from ``environments.<env>.proxy`` (:class:`stageflow.config.models.Proxy`, every
field optional). :func:`site_options` checks that each value is safe to put into nginx's syntax
(a :class:`ConfigError` names ``environments.<env>.proxy.<field>`` otherwise) and resolves them into
a :class:`SiteOptions`; tests replace ports and paths in it (``dataclasses.replace``) so they
exercise the very template output that production gets.

The local runtime serves this same site from its private nginx: :func:`site_options` with a
:class:`PrivateProxy` moves the site into the runtime's directory, binds the URL's address and port
(no port-80 redirect), uses the runtime's certificate and adds the probe header; :func:`render_main`
renders the thin ``nginx.conf`` around it (pid, logs, temp paths, the probe-token map).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from stageflow.config.models import DEFAULT_CSP, DEFAULT_PERMISSIONS_POLICY, ProjectConfig, Proxy
from stageflow.errors import ConfigError, OperationError
from stageflow.fsutil import inside, read_file, write_file
from stageflow.generate.upstream import render_upstream, upstream_filename, upstream_name

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates" / "nginx"

HEADERS_SNIPPET = "security-headers.conf"
PROXY_SNIPPET = "proxy.conf"
DHPARAM_FILE = "ffdhe2048.pem"
HTPASSWD_FILE = "htpasswd"
# nginx workers (not the root master) read the htpasswd file on every request, so it must be
# readable by the worker user, which is a different account on every host and image (www-data,
# nginx/101, nobody). The file holds only a salted SHA-512-crypt hash of a 144-bit random
# password; the password itself is written 0600 under .stageflow/secrets/.
HTPASSWD_MODE = 0o644
SECRET_MODE = 0o600

HSTS_MAX_AGE = 63072000  # two years, as Mozilla's generator and hstspreload.org ask
# Mozilla server-side TLS guidelines, "intermediate" configuration (v5.7).
MOZILLA_INTERMEDIATE_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    ]
)
# nginx 1.25.1 replaced `listen ... http2` with the `http2` directive; older versions reject it.
HTTP2_DIRECTIVE_SINCE = (1, 25, 1)


@dataclass(frozen=True)
class PrivateProxy:
    """A proxy stageflow runs itself (the local runtime's nginx), serving the site of one environment.

    ``directory`` holds the site, its snippets, the upstream, pid, logs and temp files;
    ``listen_host`` is the IP address bound on the URL's port; ``cert``/``key`` the pair served
    when the URL is https.
    """

    directory: Path
    listen_host: str
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class SiteOptions:
    """Everything the site template needs, resolved and validated.

    ``http_port``/``https_port`` are what nginx binds; ``public_https_port`` is what redirects name
    (they differ when a container port is published elsewhere).
    """

    project: str
    env: str
    server_name: str
    tls: bool
    http_port: int
    https_port: int
    public_https_port: int
    include_dir: str
    cert: str
    key: str
    chain: str | None = None
    resolvers: tuple[str, ...] = ("127.0.0.53",)
    listen_address: str | None = None
    listen_ipv6: bool = False
    http2: Literal["directive", "listen", "off"] = "directive"
    allow: tuple[str, ...] = ()
    basic_auth: bool = False
    basic_auth_user: str = "stageflow"
    admin_paths: tuple[str, ...] = ("/admin/",)
    admin_allow: tuple[str, ...] = ()
    login_paths: tuple[str, ...] = ("/admin/login/", "/accounts/login/")
    api_paths: tuple[str, ...] = ("/api/",)
    login_rate: str = "10r/m"
    login_burst: int = 5
    api_rate: str = "20r/s"
    api_burst: int = 40
    client_max_body_size: str = "10m"
    static_url: str = "/static/"
    static_root: str | None = None
    media_url: str = "/media/"
    media_root: str | None = None
    health_path: str = "/health/"
    csp: str = DEFAULT_CSP
    permissions_policy: str = DEFAULT_PERMISSIONS_POLICY
    proxy_connect_timeout: str = "5s"
    proxy_timeout: str = "60s"
    #: With TLS, a server on ``http_port`` that redirects to HTTPS (off for a private proxy: one port).
    http_redirect: bool = True
    #: Proxied responses carry ``X-Stageflow-Upstream`` for requests with the probe token (see :func:`render_main`).
    probe_header: bool = False

    @property
    def main_port(self) -> int:
        """The port that serves the site (HTTPS with TLS, else HTTP)."""
        return self.https_port if self.tls else self.http_port


# ---------------------------------------------------------------- settings


def site_filename(project: str, env: str) -> str:
    """File name of the site config for ``env``."""
    return f"{project}-{env}.conf"


_HOST_RE = re.compile(
    r"^(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z"
)
_FS_PATH_RE = re.compile(r"^/[A-Za-z0-9_./@%+=:,~-]*\Z")
_URL_PATH_RE = re.compile(r"^/([A-Za-z0-9_.~@%+=:,-]+/)*\Z")
_SIZE_RE = re.compile(r"^\d+[kKmMgG]?\Z")
_HEADER_VALUE_RE = re.compile(r'^[^"\\$\x00-\x1f\x7f]*\Z')
_USER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
_RATE_RE = re.compile(r"^[1-9]\d{0,5}r/[sm]\Z")
_TOKEN_RE = re.compile(r"^[0-9a-f]{32}\Z")


def _bad(where: str, message: str, hint: str) -> ConfigError:
    return ConfigError(f"{where}: {message}", hint=hint)


def _address(value: str, where: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise _bad(
            where, f"{value!r} is not an IP address or CIDR range", "use e.g. 203.0.113.7 or 10.0.0.0/8"
        ) from None


def _fs_path(value: str, where: str) -> str:
    if not _FS_PATH_RE.match(value) or "/../" in f"{value}/":
        raise _bad(where, f"{value!r} is not a safe absolute path", "use an absolute path without spaces or '..'")
    return value.rstrip("/") or "/"


def _url_prefix(value: str, where: str) -> str:
    # A trailing slash is required: `location /static` + `alias .../` would allow /static../ traversal.
    if not _URL_PATH_RE.match(value) or value == "/" or ".." in value:
        raise _bad(
            where, f"{value!r} is not a URL path prefix", "use a path starting and ending with '/', e.g. /static/"
        )
    return value


def _header_value(value: str, where: str) -> str:
    if not _HEADER_VALUE_RE.match(value):
        raise _bad(where, "must not contain quotes, backslashes, '$' or control characters", "fix the header value")
    return value


def _exact_path(value: str, where: str) -> str:
    if not value.startswith("/") or not _FS_PATH_RE.match(value) or ".." in value:
        raise _bad(where, f"{value!r} is not a URL path", "use a path like /admin/login/")
    return value


def parse_nginx_version(text: str) -> tuple[int, int, int] | None:
    """Version from ``nginx -v`` output or an image tag like ``nginx:1.27``; None when absent."""
    m = re.search(r"(?:nginx/|nginx:|^)(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def _rate(value: str, where: str) -> str:
    if not _RATE_RE.match(value):
        raise _bad(where, f"{value!r} is not a request rate", "use requests per second or minute, e.g. 20r/s or 10r/m")
    return value


def site_options(
    config: ProjectConfig,
    env: str,
    *,
    root: Path,
    nginx_version: tuple[int, int, int] | None = None,
    private: PrivateProxy | None = None,
) -> SiteOptions:
    """Resolve ``env``'s proxy settings into validated :class:`SiteOptions`.

    Without ``private``: production ports and install paths (what ``config nginx`` writes). With it:
    the same site as served by that private proxy (see :func:`_private`).
    Raises :class:`ConfigError` naming the setting when a value is unsafe to put into nginx's syntax.
    """
    environment = config.environments[env]
    s = environment.proxy or Proxy()
    where = f"environments.{env}.proxy"
    url = urlsplit(environment.url)
    domain = s.domain or url.hostname or "localhost"
    if not _HOST_RE.match(domain):
        try:
            ipaddress.ip_address(domain)
        except ValueError:
            raise _bad(f"{where}.domain", f"{domain!r} is not a host name", "use e.g. app.example.com") from None
    tls = s.tls if s.tls is not None else url.scheme == "https"
    # With TLS the URL's port is the HTTPS one (443 by default); without, nginx serves the URL's port.
    https_port = environment.url_port if tls else 443
    http_port = 80 if tls else environment.url_port
    compose = environment.runtime == "compose"
    static_root = s.static_root or ("/srv/static" if compose else str(root / "staticfiles"))
    media_root = s.media_root or ("/srv/media" if compose else str(root / "media"))
    csp = _header_value(s.csp, f"{where}.csp")
    if "'unsafe-inline'" in csp or "'unsafe-eval'" in csp:
        raise _bad(f"{where}.csp", "must not allow 'unsafe-inline' or 'unsafe-eval'", "use nonces or hashes")
    if not _SIZE_RE.match(s.client_max_body_size):
        raise _bad(f"{where}.client_max_body_size", f"{s.client_max_body_size!r} is not a size", "use e.g. 10m")
    user = s.basic_auth_user or config.project
    if not _USER_RE.match(user):
        raise _bad(
            f"{where}.basic_auth_user", f"{user!r} is not a valid user name", "use letters, digits, '.', '_', '-'"
        )
    if s.admin_allow is not None:
        admin_allow = tuple(_address(a, f"{where}.admin_allow") for a in s.admin_allow)
    else:
        # Production's admin is reachable only from the host itself (an SSH tunnel) unless configured.
        admin_allow = ("127.0.0.1/32", "::1/128") if config.is_production(env) else ()
    version = nginx_version or HTTP2_DIRECTIVE_SINCE
    _, web = config.web_service
    health_path = web.health.path if web.health else "/health/"
    opts = SiteOptions(
        project=config.project,
        env=env,
        server_name=domain.lower(),
        tls=tls,
        http_port=http_port,
        https_port=https_port,
        public_https_port=https_port,
        include_dir=f"/etc/nginx/stageflow/{env}",
        cert=_fs_path(s.cert or f"/etc/ssl/stageflow/{env}/fullchain.pem", f"{where}.cert"),
        key=_fs_path(s.key or f"/etc/ssl/stageflow/{env}/privkey.pem", f"{where}.key"),
        chain=_fs_path(s.chain, f"{where}.chain") if s.chain else None,
        # Docker's embedded DNS inside compose networks; systemd-resolved's stub on hosts.
        resolvers=tuple(_address(r, f"{where}.resolvers").split("/")[0] for r in s.resolvers)
        if s.resolvers
        else (("127.0.0.11",) if compose else ("127.0.0.53",)),
        http2="directive" if version >= HTTP2_DIRECTIVE_SINCE else "listen",
        allow=tuple(_address(a, f"{where}.allow") for a in s.allow),
        basic_auth=s.basic_auth if s.basic_auth is not None else config.is_staging(env),
        basic_auth_user=user,
        admin_paths=tuple(_url_prefix(p, f"{where}.admin_paths") for p in s.admin_paths),
        admin_allow=admin_allow,
        login_paths=tuple(_exact_path(p, f"{where}.login_paths") for p in s.login_paths),
        api_paths=tuple(_url_prefix(p, f"{where}.api_paths") for p in s.api_paths),
        client_max_body_size=s.client_max_body_size,
        static_url=_url_prefix(s.static_url, f"{where}.static_url"),
        static_root=_fs_path(static_root, f"{where}.static_root"),
        media_url=_url_prefix(s.media_url, f"{where}.media_url"),
        media_root=_fs_path(media_root, f"{where}.media_root"),
        health_path=_exact_path(health_path, f"services.{config.web_service[0]}.health.path"),
        login_rate=_rate(s.login_rate, f"{where}.login_rate"),
        login_burst=s.login_burst,
        api_rate=_rate(s.api_rate, f"{where}.api_rate"),
        api_burst=s.api_burst,
        csp=csp,
        permissions_policy=_header_value(s.permissions_policy, f"{where}.permissions_policy"),
    )
    return opts if private is None else _private(opts, config, env, private)


def _listen_address(host: str) -> str:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise _bad("listen address", f"{host!r} is not an IP address", "use an IP address in the URL") from None
    return f"[{ip}]" if ip.version == 6 else str(ip)


def _private(opts: SiteOptions, config: ProjectConfig, env: str, private: PrivateProxy) -> SiteOptions:
    """``opts`` as served by a private proxy: its directory, the URL's address and port, its TLS pair.

    The URL's scheme decides TLS (the runtime probes what the URL says). Static and media are served
    by nginx only where ``proxy.static_root``/``media_root`` say so: the install defaults name
    directories the local runtime does not fill.
    """
    environment = config.environments[env]
    s = environment.proxy or Proxy()
    tls = urlsplit(environment.url).scheme == "https"
    if s.tls is not None and s.tls != tls:
        raise _bad(f"environments.{env}.proxy.tls", f"is {str(s.tls).lower()} but the URL is {environment.url}",
                   "leave proxy.tls out for the local runtime: the URL's scheme decides")
    directory = str(private.directory)
    if not _FS_PATH_RE.match(directory) or "/../" in f"{directory}/":
        raise ConfigError(f"{directory}: the app's path holds characters nginx's configuration cannot take",
                          hint="move the app to a path of letters, digits and / . _ - (no spaces)")
    cert = key = ""
    if tls:
        if private.cert is None or private.key is None:
            raise OperationError(f"{environment.url} is https but no certificate was given to the proxy")
        cert = _fs_path(str(private.cert), "TLS_CERT_FILE")
        key = _fs_path(str(private.key), "TLS_KEY_FILE")
    port = environment.url_port
    return replace(
        opts,
        tls=tls,
        http_port=port,
        https_port=port,
        public_https_port=port,
        include_dir=directory.rstrip("/"),
        cert=cert,
        key=key,
        chain=None,
        listen_address=_listen_address(private.listen_host),
        listen_ipv6=False,
        static_root=_fs_path(s.static_root, f"environments.{env}.proxy.static_root") if s.static_root else None,
        media_root=_fs_path(s.media_root, f"environments.{env}.proxy.media_root") if s.media_root else None,
        http_redirect=False,
        probe_header=True,
    )


def default_upstream_servers(config: ProjectConfig, env: str) -> list[str]:
    """Where the proxy sends traffic before any cutover: the web service's address for ``env``."""
    environment = config.environments[env]
    name, web = config.web_service
    port = web.port or 8000
    if environment.runtime == "compose":
        # Compose's DNS resolves the service name to every replica.
        return [f"{name}:{port}"]
    if environment.app_ports:
        return [f"127.0.0.1:{environment.app_ports[0]}"]
    return [f"127.0.0.1:{port}"]


# ---------------------------------------------------------------- rendering


def _jinja_env() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        # nginx syntax, not HTML: every value is validated by site_options() instead of escaped.
        autoescape=False,  # noqa: S701
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_site(opts: SiteOptions, upstream_servers: Sequence[str]) -> dict[str, str]:
    """Render every file of the site (except ``htpasswd``): ``{file name: content}``."""
    env = _jinja_env()
    suffix = "" if opts.public_https_port == 443 else f":{opts.public_https_port}"
    admin_login = tuple(p for p in opts.login_paths if any(p.startswith(a) for a in opts.admin_paths))
    context: dict[str, Any] = {
        **{k: getattr(opts, k) for k in opts.__dataclass_fields__},
        "main_port": opts.main_port,
        "zone": upstream_name(opts.project, opts.env),
        "upstream": upstream_name(opts.project, opts.env),
        "https_port_suffix": suffix,
        "ciphers": MOZILLA_INTERMEDIATE_CIPHERS,
        "hsts_max_age": HSTS_MAX_AGE,
        "realm": f"{opts.project} {opts.env}",
        "admin_login_paths": admin_login,
    }
    files = {
        site_filename(opts.project, opts.env): env.get_template("site.conf.j2").render(context),
        HEADERS_SNIPPET: env.get_template("security-headers.conf.j2").render(context),
        PROXY_SNIPPET: env.get_template("proxy.conf.j2").render(context),
        upstream_filename(opts.env): render_upstream(opts.project, opts.env, upstream_servers),
    }
    if opts.tls:
        files[DHPARAM_FILE] = (TEMPLATE_DIR / DHPARAM_FILE).read_text(encoding="utf-8")
    return files


def render_main(opts: SiteOptions, *, probe_token: str, worker: tuple[str, str] | None = None,
                mime_types: Path | None = None) -> str:
    """The thin ``nginx.conf`` of a private proxy (``opts`` from :func:`site_options` with a
    :class:`PrivateProxy`): pid, logs and temp paths in ``opts.include_dir``, the access log format
    the monitor reads (``rt=$request_time``), the map that shows stageflow's own probes (and no one
    else) which upstream answered, then the site itself.

    ``worker``: the (user, group) workers run as when the master is root; ``mime_types``: the
    system's types file, when there is one (for static files the site serves).
    """
    if not _TOKEN_RE.match(probe_token):
        raise OperationError("the probe token is damaged", hint="remove it; stageflow makes a new one")
    if worker is not None and not all(_USER_RE.match(w) for w in worker):
        raise ValueError(f"bad worker account {worker!r}")
    context = {
        "env": opts.env,
        "dir": opts.include_dir,
        "user": " ".join(worker) if worker else None,
        "token": probe_token,
        "mime_types": _fs_path(str(mime_types), "mime types") if mime_types else None,
        "site": site_filename(opts.project, opts.env),
    }
    return str(_jinja_env().get_template("main.conf.j2").render(context))


# ---------------------------------------------------------------- htpasswd (SHA-512-crypt)

_CRYPT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Byte order of the final encoding, from Drepper's "Unix crypt using SHA-256 and SHA-512".
_SHA512_ORDER = (
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
    (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13),
    (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41),
)  # fmt: skip


def _b64_24(b2: int, b1: int, b0: int, n: int) -> str:
    w = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(n):
        out.append(_CRYPT_ALPHABET[w & 0x3F])
        w >>= 6
    return "".join(out)


def sha512_crypt(password: str, salt: str | None = None, rounds: int = 5000) -> str:
    """``$6$`` SHA-512-crypt hash, as glibc/musl ``crypt()`` computes it (and nginx verifies).

    Implemented here because Python 3.13 removed :mod:`crypt` and no hashing library is a
    dependency; SHA-512-crypt is understood by every libc that nginx runs on, unlike bcrypt.
    """
    if salt is None:
        salt = "".join(secrets.choice(_CRYPT_ALPHABET) for _ in range(16))
    if not 1000 <= rounds <= 999_999_999:
        raise ValueError("rounds must be between 1000 and 999999999")
    p = password.encode("utf-8")
    s = salt.encode("ascii")[:16]
    b = hashlib.sha512(p + s + p).digest()
    a = hashlib.sha512(p + s)
    n = len(p)
    while n > 64:
        a.update(b)
        n -= 64
    a.update(b[:n])
    n = len(p)
    while n:
        a.update(b if n & 1 else p)
        n >>= 1
    digest = a.digest()
    dp = hashlib.sha512(p * len(p)).digest()
    p_seq = (dp * (len(p) // 64 + 1))[: len(p)]
    ds = hashlib.sha512(s * (16 + digest[0])).digest()
    s_seq = ds[: len(s)]
    for i in range(rounds):
        c = hashlib.sha512(p_seq if i & 1 else digest)
        if i % 3:
            c.update(s_seq)
        if i % 7:
            c.update(p_seq)
        c.update(digest if i & 1 else p_seq)
        digest = c.digest()
    encoded = "".join(_b64_24(digest[x], digest[y], digest[z], 4) for x, y, z in _SHA512_ORDER)
    encoded += _b64_24(0, 0, digest[63], 2)
    prefix = "$6$" if rounds == 5000 else f"$6$rounds={rounds}$"
    return f"{prefix}{s.decode('ascii')}${encoded}"


def verify_sha512_crypt(password: str, hashed: str) -> bool:
    """True when ``hashed`` (a ``$6$`` string) is ``password``'s hash."""
    m = re.match(r"^\$6\$(?:rounds=(\d+)\$)?([^$]{0,16})\$[./0-9A-Za-z]{86}\Z", hashed)
    if not m:
        return False
    rounds = int(m.group(1)) if m.group(1) else 5000
    return secrets.compare_digest(sha512_crypt(password, m.group(2), rounds), hashed)


def htpasswd_line(user: str, password: str) -> str:
    """One ``user:hash`` line for nginx's ``auth_basic_user_file``."""
    return f"{user}:{sha512_crypt(password)}\n"


def new_password() -> str:
    """A random password: 24 URL-safe characters, 144 bits."""
    return secrets.token_urlsafe(18)


def _write(root: Path, path: Path, content: str, mode: int) -> None:
    """Write ``content`` through the safe writer (no symlink followed, mode never widened)."""
    write_file(path, content, root=root if inside(root, path) else None, mode=mode, dir_mode=0o755)


# ---------------------------------------------------------------- writing


@dataclass(frozen=True)
class BasicAuth:
    """Where the basic-auth credentials of an environment live (never the password itself)."""

    user: str
    htpasswd: Path
    password_file: Path
    created: bool


@dataclass(frozen=True)
class GeneratedSite:
    """What :func:`write_site` wrote."""

    env: str
    directory: Path
    files: list[Path]
    basic_auth: BasicAuth | None


def password_path(root: Path, env: str) -> Path:
    """Where the generated basic-auth password of ``env`` is stored (mode 0600, git-ignored)."""
    return root / ".stageflow" / "secrets" / f"basic-auth-{env}.txt"


def ensure_basic_auth(root: Path, env: str, user: str, htpasswd: Path) -> BasicAuth:
    """Create or reuse ``env``'s password and write ``htpasswd`` for ``user``.

    The password is generated once and reused, and an ``htpasswd`` that already matches it is left
    alone, so regenerating the config does not lock people out or churn files.
    """
    pw_file = password_path(root, env)
    created = False
    try:
        password = (read_file(pw_file, root=root, limit=4096) or b"").decode("utf-8", "replace").strip()
    except OSError as exc:
        raise OperationError(f"cannot read {pw_file}: {exc.strerror}", hint="fix its permissions") from exc
    if not password:
        password = new_password()
        write_file(pw_file, password + "\n", root=root, mode=SECRET_MODE)
        created = True
    current = (read_file(htpasswd, root=root if inside(root, htpasswd) else None, limit=1 << 20) or b"").decode(
        "utf-8", "replace")
    user_hash = next(
        (line.split(":", 1)[1].strip() for line in current.splitlines() if line.startswith(f"{user}:")), ""
    )
    if not verify_sha512_crypt(password, user_hash):
        _write(root, htpasswd, htpasswd_line(user, password), HTPASSWD_MODE)
    return BasicAuth(user=user, htpasswd=htpasswd, password_file=pw_file, created=created)


def write_site(
    root: Path,
    opts: SiteOptions,
    out_dir: Path,
    upstream_servers: Sequence[str],
    *,
    mode: int = 0o644,
) -> GeneratedSite:
    """Render ``opts`` into ``out_dir`` (created), plus ``htpasswd`` when basic auth is on.

    ``mode``: of the config files (0644 to install, 0600 for a private proxy; ``htpasswd`` is always
    readable by nginx's workers).
    """
    try:
        written = []
        for name, content in render_site(opts, upstream_servers).items():
            path = out_dir / name
            _write(root, path, content, mode)
            written.append(path)
        auth = None
        if opts.basic_auth:
            auth = ensure_basic_auth(root, opts.env, opts.basic_auth_user, out_dir / HTPASSWD_FILE)
            written.append(auth.htpasswd)
    except OSError as exc:
        raise OperationError(
            f"cannot write the nginx config to {out_dir}: {exc.strerror}",
            hint="check that directory's permissions (config nginx: or choose another --output)",
        ) from exc
    return GeneratedSite(env=opts.env, directory=out_dir, files=written, basic_auth=auth)
