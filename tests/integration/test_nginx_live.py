"""The generated reverse proxy under a real nginx: ``nginx -t``, gixy, and live HTTP(S) requests.

Each test renders the production template for a test project (only ports, certificate and
install paths replaced, through :class:`SiteOptions`), checks it with ``nginx -t`` and gixy,
starts a private nginx on loopback ports in front of a tiny real HTTP backend, and talks to it.
"""

from __future__ import annotations

import dataclasses
import shutil
import ssl
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from stageflow.config.loader import load_project
from stageflow.generate.nginx import SiteOptions, password_path, site_filename, site_options, write_site
from tests.support.compose import write_practika_project
from tests.support.nginx import (
    Backend,
    NginxInstance,
    free_ports,
    missing,
    nginx_instances,
    nginx_version,
    require_nginx,
    running_backend,
    self_signed_cert,
)

pytestmark = pytest.mark.integration

EXPECTED_HEADERS = {
    "strict-transport-security": "max-age=63072000",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
}


@pytest.fixture(scope="module")
def nginx_bin() -> str:
    return require_nginx()


@pytest.fixture(scope="module")
def gixy() -> str:
    venv = Path(sys.executable).parent / "gixy"
    found = str(venv) if venv.exists() else shutil.which("gixy")
    if found is None:
        missing("gixy is not installed (pip install gixy-ng)")
    assert found is not None
    return found


@pytest.fixture
def nginx_factory(nginx_bin: str) -> Iterator[Callable[[], NginxInstance]]:
    with nginx_instances(nginx_bin) as make:
        yield make


@pytest.fixture
def backend() -> Iterator[Backend]:
    with running_backend() as server:
        yield server


@dataclass
class Site:
    """A started nginx serving one generated environment."""

    opts: SiteOptions
    inst: NginxInstance
    root: Path
    cert: Path

    def url(self, path: str, *, https: bool = True) -> str:
        if https and self.opts.tls:
            return f"https://127.0.0.1:{self.opts.https_port}{path}"
        return f"http://127.0.0.1:{self.opts.http_port}{path}"

    def client(self, **kw: Any) -> httpx.Client:
        # The test certificate is its own trust anchor, so TLS is verified for real.
        return httpx.Client(verify=ssl.create_default_context(cafile=str(self.cert)), timeout=10, **kw)


@dataclass
class Harness:
    nginx_bin: str
    gixy: str
    make: Callable[[], NginxInstance]
    backend: Backend
    root: Path

    def render(self, env: str, **changes: Any) -> tuple[SiteOptions, NginxInstance, Path]:
        """Render ``env`` for loopback test ports into a fresh instance; nginx -t and gixy must pass."""
        inst = self.make()
        cert, key = self_signed_cert(inst.prefix / "tls")
        static, media = inst.prefix / "static", inst.prefix / "media"
        static.mkdir()
        media.mkdir()
        (static / "app.css").write_text("body { color: #123456; }\n" * 40)
        (media / "upload.txt").write_text("uploaded\n")
        if changes.get("chain") == "self":
            changes["chain"] = str(cert)  # a self-signed certificate is its own issuer chain
        base = site_options(load_project(self.root), env, root=self.root, nginx_version=nginx_version(self.nginx_bin))
        # Distinct ports, none that gixy mistakes for an HTTPS one (see tests.support.nginx.free_ports).
        port, http_port = free_ports(2)
        settings: dict[str, Any] = {
            "listen_address": "127.0.0.1",
            "http_port": http_port,
            "https_port": port,
            "public_https_port": port,
            "cert": str(cert),
            "key": str(key),
            "include_dir": str(inst.prefix / env),
            "static_root": str(static),
            "media_root": str(media),
            **changes,
        }
        if not settings.get("tls", base.tls):
            settings["http_port"] = port  # plain HTTP serves on the main port
        opts = dataclasses.replace(base, **settings)
        write_site(self.root, opts, inst.prefix / env, [self.backend.address])
        inst.sites.append(inst.prefix / env / site_filename(opts.project, env))
        checked = inst.test_config()
        assert checked.returncode == 0, checked.stderr
        assert_gixy_clean(self.gixy, inst.conf, inst.sites)
        return opts, inst, cert

    def start(self, env: str, **changes: Any) -> Site:
        opts, inst, cert = self.render(env, **changes)
        inst.start(ports=[opts.http_port, opts.https_port] if opts.tls else [opts.http_port])
        return Site(opts, inst, self.root, cert)


@pytest.fixture
def harness(
    nginx_bin: str, gixy: str, nginx_factory: Callable[[], NginxInstance], backend: Backend, tmp_path: Path
) -> Harness:
    root = write_practika_project(tmp_path / "app")
    return Harness(nginx_bin, gixy, nginx_factory, backend, root)


def assert_gixy_clean(gixy: str, conf: Path, sites: Sequence[Path]) -> None:
    """gixy finds nothing in ``conf``; else fail with its whole report and the audited files."""
    report = subprocess.run([gixy, str(conf)], capture_output=True, text=True, timeout=60, check=False)
    if report.returncode == 0 and "No issues found" in report.stdout:
        return
    audited = "\n".join(f"----- {path}\n{path.read_text(errors='replace')}" for path in (conf, *sites))
    pytest.fail(
        f"gixy exited with {report.returncode} on {conf}\n"
        f"----- stdout\n{report.stdout}\n----- stderr\n{report.stderr}\n{audited}"
    )


def assert_security_headers(response: httpx.Response, *, tls: bool = True) -> None:
    expected = dict(EXPECTED_HEADERS)
    if not tls:
        expected.pop("strict-transport-security")
    for name, value in expected.items():
        assert response.headers.get_list(name) == [value], (response.url, name, response.headers.get_list(name))
    csp = response.headers.get_list("content-security-policy")
    assert len(csp) == 1 and "default-src 'self'" in csp[0] and "unsafe-inline" not in csp[0]
    permissions = response.headers.get_list("permissions-policy")
    assert len(permissions) == 1 and "camera=()" in permissions[0]


# ---------------------------------------------------------------- production


def test_production_serves_all_six_headers_everywhere(harness: Harness) -> None:
    site = harness.start("production")
    with site.client() as client:
        proxied = client.get(site.url("/"), headers={"X-Forwarded-For": "203.0.113.9"})
        assert proxied.status_code == 200 and proxied.text == "backend ok /\n"
        assert_security_headers(proxied)
        # The edge replaces a client's X-Forwarded-For and tells the app the scheme.
        assert proxied.headers["x-seen-forwarded-for"] == "127.0.0.1"
        assert proxied.headers["x-seen-forwarded-proto"] == "https"
        assert proxied.headers["server"] == "nginx"  # server_tokens off: no version
        for path in ("/api/items", "/health/", "/accounts/login/", "/admin/"):
            response = client.get(site.url(path))
            assert response.status_code == 200, path
            assert_security_headers(response)
        static = client.get(site.url("/static/app.css"), headers={"Accept-Encoding": "gzip"})
        assert static.status_code == 200 and "#123456" in static.text
        assert static.headers["content-encoding"] == "gzip"
        assert_security_headers(static)
        media = client.get(site.url("/media/upload.txt"))
        assert media.status_code == 200 and media.text == "uploaded\n"
        assert_security_headers(media)
        not_found = client.get(site.url("/static/missing.css"))
        assert not_found.status_code == 404
        assert_security_headers(not_found)  # `always`: error responses carry them too


def test_http_redirects_to_https_without_trusting_host(harness: Harness) -> None:
    site = harness.start("production")
    with site.client() as client:
        response = client.get(site.url("/notes/?page=2", https=False), headers={"Host": "evil.example"})
    assert response.status_code in (301, 308)
    assert response.headers["location"] == f"https://practika.example.com:{site.opts.https_port}/notes/?page=2"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_versions_of_the_intermediate_profile(harness: Harness, version: ssl.TLSVersion) -> None:
    import socket

    site = harness.start("production")
    context = ssl.create_default_context(cafile=str(site.cert))
    context.minimum_version = context.maximum_version = version
    with (
        socket.create_connection(("127.0.0.1", site.opts.https_port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]
    # A client willing to speak TLS 1.1 (security level 0) is still refused by the server.
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is deprecated: that is the point
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        pytest.raises(ssl.SSLError),
        socket.create_connection(("127.0.0.1", site.opts.https_port), timeout=5) as sock,
        old.wrap_socket(sock, server_hostname="127.0.0.1"),
    ):
        pass


def test_production_admin_from_a_non_allowed_address_is_forbidden(harness: Harness) -> None:
    site = harness.start("production", admin_allow=("192.0.2.0/24",))
    with site.client() as client:
        for path in ("/admin/", "/admin/users/", "/admin/login/"):
            response = client.get(site.url(path))
            assert response.status_code == 403, path
            assert_security_headers(response)
        assert client.get(site.url("/")).status_code == 200


def test_production_admin_from_an_allowed_address_passes(harness: Harness) -> None:
    site = harness.start("production", admin_allow=("192.0.2.0/24", "127.0.0.0/8"))
    with site.client() as client:
        for path in ("/admin/", "/admin/login/"):
            assert client.get(site.url(path)).status_code == 200, path


def test_login_is_rate_limited(harness: Harness) -> None:
    site = harness.start("production")
    with site.client() as client:
        codes = [client.post(site.url("/accounts/login/")).status_code for _ in range(8)]
    # One request plus a burst of five pass at 10r/m; the rest are refused with 429.
    assert codes[:6] == [200] * 6
    assert codes[6:] == [429, 429]


def test_ocsp_stapling_variant_passes_nginx_t_and_gixy(harness: Harness) -> None:
    # With a chain file the template turns stapling on, with a resolver (gixy checks both).
    opts, inst, cert = harness.render("production", chain="self")
    assert "ssl_stapling on;" in (inst.prefix / "production" / site_filename("practika", "production")).read_text()
    del opts, cert


# ---------------------------------------------------------------- staging


def test_staging_requires_the_generated_credentials(harness: Harness) -> None:
    site = harness.start("staging", tls=True)
    password = password_path(harness.root, "staging").read_text().strip()
    with site.client() as client:
        anonymous = client.get(site.url("/"))
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == 'Basic realm="practika staging"'
        assert_security_headers(anonymous)
        assert client.get(site.url("/static/app.css")).status_code == 401
        assert client.get(site.url("/"), auth=("practika", "wrong")).status_code == 401
        ok = client.get(site.url("/"), auth=("practika", password))
        assert ok.status_code == 200 and ok.text == "backend ok /\n"
        assert_security_headers(ok)
        assert client.get(site.url("/static/app.css"), auth=("practika", password)).status_code == 200
        # Health checks (deploy gate, monitoring) are not locked out.
        assert client.get(site.url("/health/")).status_code == 200


def test_staging_allowlist_or_credentials(harness: Harness) -> None:
    site = harness.start("staging", tls=True, allow=("192.0.2.0/24",))
    password = password_path(harness.root, "staging").read_text().strip()
    with site.client() as client:
        assert client.get(site.url("/")).status_code in (401, 403)
        assert client.get(site.url("/"), auth=("practika", password)).status_code == 200


def test_staging_allowlist_alone(harness: Harness) -> None:
    denied = harness.start("staging", tls=True, allow=("192.0.2.0/24",), basic_auth=False)
    allowed = harness.start("staging", tls=True, allow=("127.0.0.1/32",), basic_auth=False)
    with denied.client() as client:
        response = client.get(denied.url("/"))
        assert response.status_code == 403
        assert_security_headers(response)
    with allowed.client() as client:
        assert client.get(allowed.url("/")).status_code == 200


def test_staging_over_plain_http_as_its_url_says(harness: Harness) -> None:
    # staging's URL is http://...: no TLS server, no HSTS, basic auth still on.
    site = harness.start("staging")
    assert not site.opts.tls
    with site.client() as client:
        anonymous = client.get(site.url("/"))
        assert anonymous.status_code == 401
        assert_security_headers(anonymous, tls=False)
        assert "strict-transport-security" not in anonymous.headers


def test_compose_form_passes_gixy(gixy: str, tmp_path: Path) -> None:
    # The file `stageflow config nginx production` writes for the compose runtime (upstream by
    # service name, container paths) cannot be started here, but gixy can still audit it.
    from stageflow.generate.nginx import default_upstream_servers

    root = write_practika_project(tmp_path / "app")
    config = load_project(root)
    out = tmp_path / "nginx" / "production"
    opts = dataclasses.replace(site_options(config, "production", root=root), include_dir=str(out))
    write_site(root, opts, out, default_upstream_servers(config, "production"))
    main = tmp_path / "nginx.conf"
    main.write_text(f"events {{}}\nhttp {{\n    include {out / site_filename('practika', 'production')};\n}}\n")
    assert_gixy_clean(gixy, main, [out / site_filename("practika", "production")])


def test_test_ports_are_distinct_and_never_look_like_https() -> None:
    # gixy takes any `listen` containing "443" for TLS and would flag the plain-HTTP redirect
    # server (missing HSTS, ssl_protocols, ssl_ciphers); the harness's ports must never do that.
    for _ in range(200):
        ports = free_ports(3)
        assert len(set(ports)) == 3
        assert not any("443" in str(port) for port in ports), ports
