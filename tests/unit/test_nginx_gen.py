"""The nginx generator: settings, validation, rendered text, htpasswd (no nginx needed)."""

from __future__ import annotations

import copy
import dataclasses
import re
import stat
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from stageflow.config.loader import load_project
from stageflow.config.models import ProjectConfig
from stageflow.errors import ConfigError, UsageError
from stageflow.generate.nginx import (
    HEADERS_SNIPPET,
    HSTS_MAX_AGE,
    MOZILLA_INTERMEDIATE_CIPHERS,
    PROXY_SNIPPET,
    SiteOptions,
    default_upstream_servers,
    htpasswd_line,
    parse_nginx_version,
    password_path,
    render_site,
    sha512_crypt,
    site_filename,
    site_options,
    verify_sha512_crypt,
    write_site,
)
from stageflow.generate.upstream import render_upstream
from tests.support.compose import PRACTIKA, write_practika_project


def write_with_proxy(root: Path, env: str, proxy: dict[str, Any]) -> Path:
    """The Practika project with ``environments.<env>.proxy`` set to ``proxy``."""
    data: dict[str, Any] = copy.deepcopy(PRACTIKA)
    data["environments"][env]["proxy"] = proxy
    write_practika_project(root)
    (root / "stageflow.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, ProjectConfig]:
    root = write_practika_project(tmp_path / "app")
    return root, load_project(root)


def options(project: tuple[Path, ProjectConfig], env: str, **changes: object) -> SiteOptions:
    root, config = project
    return dataclasses.replace(site_options(config, env, root=root), **changes)  # type: ignore[arg-type]


def site_text(opts: SiteOptions) -> str:
    return render_site(opts, ["127.0.0.1:9000"])[site_filename(opts.project, opts.env)]


def locations(text: str) -> dict[str, str]:
    """``location`` header → body, for the flat blocks the template writes."""
    return {
        m.group(1).strip(): m.group(2)
        for m in re.finditer(r"^    location ([^{\n]+)\{(.*?)\n    \}", text, re.S | re.M)
    }


# ---------------------------------------------------------------- defaults


def test_production_defaults(project: tuple[Path, ProjectConfig]) -> None:
    opts = options(project, "production")
    assert opts.server_name == "practika.example.com"
    assert opts.tls is True
    assert (opts.http_port, opts.https_port) == (80, 443)
    assert opts.cert == "/etc/ssl/stageflow/production/fullchain.pem"
    assert opts.key == "/etc/ssl/stageflow/production/privkey.pem"
    assert opts.include_dir == "/etc/nginx/stageflow/production"
    assert opts.admin_allow == ("127.0.0.1/32", "::1/128")
    assert opts.basic_auth is False
    assert opts.static_root == "/srv/static"  # compose runtime: the shared volume


def test_staging_defaults_follow_its_http_url(project: tuple[Path, ProjectConfig]) -> None:
    opts = options(project, "staging")
    assert opts.tls is False
    assert opts.http_port == 8002 and opts.main_port == 8002
    assert opts.basic_auth is True
    assert opts.basic_auth_user == "practika"
    assert opts.admin_allow == ()


def test_settings_from_the_proxy_section(tmp_path: Path) -> None:
    root = write_with_proxy(
        tmp_path,
        "staging",
        {
            "domain": "staging.example.com",
            "tls": True,
            "allow": ["10.0.0.0/8", "203.0.113.7"],
            "admin_allow": ["192.0.2.1"],
            "basic_auth": False,
            "chain": "/etc/ssl/stageflow/staging/chain.pem",
            "client_max_body_size": "50m",
        },
    )
    opts = site_options(load_project(root), "staging", root=root)
    assert opts.server_name == "staging.example.com"
    assert opts.tls is True and opts.https_port == 8002
    assert opts.allow == ("10.0.0.0/8", "203.0.113.7/32")
    assert opts.admin_allow == ("192.0.2.1/32",)
    assert opts.basic_auth is False
    assert opts.chain == "/etc/ssl/stageflow/staging/chain.pem"
    assert opts.client_max_body_size == "50m"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("domain", "bad domain;"),
        ("allow", ["10.0.0.300"]),
        ("static_root", "/srv/../etc"),
        ("static_url", "/static"),
        ("csp", "default-src 'self' 'unsafe-inline'"),
        ("csp", 'default-src "self"'),
        ("client_max_body_size", "10 m"),
        ("cert", "relative/cert.pem"),
        ("basic_auth_user", "a:b"),
    ],
)
def test_unsafe_values_are_config_errors(tmp_path: Path, key: str, value: object) -> None:
    root = write_with_proxy(tmp_path, "production", {key: value})
    with pytest.raises(ConfigError) as info:
        site_options(load_project(root), "production", root=root)
    assert f"environments.production.proxy.{key}" in str(info.value)


def test_unknown_setting_is_reported(tmp_path: Path) -> None:
    root = write_with_proxy(tmp_path, "production", {"domian": "x"})
    with pytest.raises(ConfigError, match=r"environments\.production\.proxy\.domian: unknown key"):
        load_project(root)


# ---------------------------------------------------------------- rendered text


def test_site_proxies_to_the_included_upstream(project: tuple[Path, ProjectConfig]) -> None:
    opts = options(project, "production")
    files = render_site(opts, ["backend:8000"])
    site = files["practika-production.conf"]
    assert "include /etc/nginx/stageflow/production/upstream-production.conf;" in site
    assert files["upstream-production.conf"] == render_upstream("practika", "production", ["backend:8000"])
    assert "proxy_pass http://practika_production;" in site
    assert set(files) == {
        "practika-production.conf",
        "upstream-production.conf",
        HEADERS_SNIPPET,
        PROXY_SNIPPET,
        "ffdhe2048.pem",
    }


def test_http_redirects_to_https_by_server_name(project: tuple[Path, ProjectConfig]) -> None:
    site = site_text(options(project, "production"))
    assert "listen 80;" in site and "listen 443 ssl;" in site
    assert "return 301 https://$server_name$request_uri;" in site
    moved = site_text(options(project, "production", public_https_port=8443))
    assert "return 301 https://$server_name:8443$request_uri;" in moved


def test_tls_is_mozilla_intermediate(project: tuple[Path, ProjectConfig]) -> None:
    site = site_text(options(project, "production"))
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in site
    assert f"ssl_ciphers {MOZILLA_INTERMEDIATE_CIPHERS};" in site
    assert "ssl_prefer_server_ciphers off;" in site
    assert "ssl_session_timeout 1d;" in site
    assert "ssl_session_cache shared:practika_production_tls:10m;" in site
    assert "ssl_session_tickets off;" in site
    assert "ssl_dhparam /etc/nginx/stageflow/production/ffdhe2048.pem;" in site
    assert "ssl_stapling" not in site  # no chain file, no stapling
    stapled = site_text(options(project, "production", chain="/etc/ssl/x/chain.pem"))
    assert "ssl_stapling on;" in stapled and "ssl_stapling_verify on;" in stapled
    assert "ssl_trusted_certificate /etc/ssl/x/chain.pem;" in stapled
    assert "resolver 127.0.0.11 valid=300s;" in stapled


def test_http2_syntax_follows_the_nginx_version(project: tuple[Path, ProjectConfig]) -> None:
    root, config = project
    new = site_text(site_options(config, "production", root=root, nginx_version=(1, 27, 0)))
    old = site_text(site_options(config, "production", root=root, nginx_version=(1, 22, 1)))
    assert "http2 on;" in new and "listen 443 ssl;" in new
    assert "http2 on;" not in old and "listen 443 ssl http2;" in old


def test_security_headers_snippet(project: tuple[Path, ProjectConfig]) -> None:
    headers = render_site(options(project, "production"), ["x:1"])[HEADERS_SNIPPET]
    lines = [line for line in headers.splitlines() if line.startswith("add_header")]
    assert len(lines) == 6
    assert all(line.endswith(" always;") for line in lines)
    text = "\n".join(lines)
    assert f'Strict-Transport-Security "max-age={HSTS_MAX_AGE}"' in text and HSTS_MAX_AGE == 63072000
    assert 'X-Frame-Options "DENY"' in text
    assert 'X-Content-Type-Options "nosniff"' in text
    assert 'Referrer-Policy "strict-origin-when-cross-origin"' in text
    assert "Permissions-Policy" in text
    assert "Content-Security-Policy" in text and "unsafe-inline" not in text
    # Without TLS, HSTS is meaningless (browsers ignore it over HTTP) and is left out.
    plain = render_site(options(project, "staging"), ["x:1"])[HEADERS_SNIPPET]
    assert "Strict-Transport-Security" not in plain


def test_every_location_includes_the_headers(project: tuple[Path, ProjectConfig]) -> None:
    site = site_text(options(project, "production"))
    https = site.split("server {")[2]
    locs = locations(https)
    assert {
        "/",
        "= /health/",
        "= /admin/login/",
        "= /accounts/login/",
        "/api/",
        "/admin/",
        "/static/",
        "/media/",
    } <= set(locs)
    for name, body in locs.items():
        assert "include /etc/nginx/stageflow/production/security-headers.conf;" in body, name
        assert "add_header" not in body, name  # only via the snippet, so no set can be partial
    for name in ("/", "= /health/", "/api/", "/admin/"):
        assert "include /etc/nginx/stageflow/production/proxy.conf;" in locs[name], name
    assert "alias /srv/static/;" in locs["/static/"]
    assert "alias /srv/media/;" in locs["/media/"]


def test_proxy_snippet_sets_forwarding_headers_and_timeouts(project: tuple[Path, ProjectConfig]) -> None:
    proxy = render_site(options(project, "production"), ["x:1"])[PROXY_SNIPPET]
    for line in (
        "proxy_set_header Host $host;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_connect_timeout 5s;",
        "proxy_read_timeout 60s;",
        "proxy_hide_header X-Frame-Options;",
    ):
        assert line in proxy


def test_hardening_and_limits(project: tuple[Path, ProjectConfig]) -> None:
    site = site_text(options(project, "production"))
    assert site.count("server_tokens off;") == 2
    assert "gzip on;" in site
    assert "client_max_body_size 10m;" in site
    assert "limit_req_zone $binary_remote_addr zone=practika_production_login:10m rate=10r/m;" in site
    assert "limit_req_zone $binary_remote_addr zone=practika_production_api:10m rate=20r/s;" in site
    locs = locations(site.split("server {")[2])
    assert "limit_req zone=practika_production_login burst=5 nodelay;" in locs["= /admin/login/"]
    assert "limit_req zone=practika_production_api" in locs["/api/"]


def test_production_admin_is_allowlisted(project: tuple[Path, ProjectConfig]) -> None:
    locs = locations(site_text(options(project, "production", admin_allow=("192.0.2.0/24",))).split("server {")[2])
    for name in ("/admin/", "= /admin/login/"):
        assert "allow 192.0.2.0/24;\n        deny all;" in locs[name], name
    assert "deny all" not in locs["/"]


def test_staging_access_control(project: tuple[Path, ProjectConfig]) -> None:
    site = site_text(options(project, "staging", allow=("10.0.0.0/8",)))
    server = site.split("server {")[1]
    assert "allow 10.0.0.0/8;\n    deny all;" in server
    assert 'auth_basic "practika staging";' in server
    assert "auth_basic_user_file /etc/nginx/stageflow/staging/htpasswd;" in server
    assert "satisfy any;" in server
    health = locations(server)["= /health/"]
    assert "auth_basic off;" in health and "allow all;" in health


def test_default_upstreams(project: tuple[Path, ProjectConfig]) -> None:
    _, config = project
    assert default_upstream_servers(config, "production") == ["backend:8000"]
    assert default_upstream_servers(config, "dev") == ["127.0.0.1:8000"]


def test_parse_nginx_version() -> None:
    assert parse_nginx_version("nginx version: nginx/1.22.1") == (1, 22, 1)
    assert parse_nginx_version("1.27") == (1, 27, 0)
    assert parse_nginx_version("stable-alpine") is None


# ---------------------------------------------------------------- htpasswd


def test_sha512_crypt_matches_the_reference_vectors() -> None:
    # From Drepper's "Unix crypt using SHA-256 and SHA-512" specification.
    assert sha512_crypt("Hello world!", "saltstring") == (
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
    )
    assert sha512_crypt("Hello world!", "saltstringsaltstring", rounds=10000) == (
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/"
        "YTBmSK6H9qs/y3RnOaw5v."
    )
    long = "a" * 150  # longer than one SHA-512 block
    hashed = sha512_crypt(long)
    assert verify_sha512_crypt(long, hashed)
    assert not verify_sha512_crypt("b" * 150, hashed)
    assert not verify_sha512_crypt("x", "not a hash")


def test_htpasswd_line_uses_a_fresh_salt() -> None:
    a, b = htpasswd_line("u", "pw"), htpasswd_line("u", "pw")
    assert a != b and a.startswith("u:$6$") and a.endswith("\n")
    assert verify_sha512_crypt("pw", a.split(":", 1)[1].strip())


def test_write_site_creates_htpasswd_and_keeps_the_password_private(project: tuple[Path, ProjectConfig]) -> None:
    root, _ = project
    opts = options(project, "staging")
    out = root / "deploy" / "nginx" / "staging"
    site = write_site(root, opts, out, ["127.0.0.1:9000"])
    assert site.basic_auth is not None
    pw_file = password_path(root, "staging")
    assert site.basic_auth.password_file == pw_file and site.basic_auth.created
    assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
    password = pw_file.read_text().strip()
    assert len(password) >= 24
    line = (out / "htpasswd").read_text()
    # nginx workers (not root) read it on every request: 0600 root-owned answers 500.
    assert stat.S_IMODE((out / "htpasswd").stat().st_mode) == 0o644
    assert line.startswith("practika:$6$") and password not in line
    assert verify_sha512_crypt(password, line.split(":", 1)[1].strip())
    for path in out.iterdir():
        assert password not in path.read_text(), path
    # Regenerating reuses the password and leaves a matching htpasswd untouched.
    again = write_site(root, opts, out, ["127.0.0.1:9000"])
    assert again.basic_auth is not None and not again.basic_auth.created
    assert (out / "htpasswd").read_text() == line
    assert pw_file.read_text().strip() == password


# ---------------------------------------------------------------- CLI


def cli() -> typer.Typer:
    from stageflow.cli.config_gen import register

    app = typer.Typer()
    register(app)
    return app


def test_cli_nginx_defaults_to_production(project: tuple[Path, ProjectConfig]) -> None:
    root, _ = project
    result = CliRunner().invoke(cli(), ["nginx", "--root", str(root)])
    assert result.exit_code == 0, result.output
    out = root / "deploy" / "nginx" / "production"
    assert (out / "practika-production.conf").is_file()
    assert "backend:8000" in (out / "upstream-production.conf").read_text()
    # The compose image is nginx:1.27, so the new http2 syntax is used.
    assert "http2 on;" in (out / "practika-production.conf").read_text()


def test_cli_nginx_staging_reports_where_the_password_is(project: tuple[Path, ProjectConfig], tmp_path: Path) -> None:
    root, _ = project
    out = tmp_path / "out"
    result = CliRunner().invoke(cli(), ["nginx", "staging", "--root", str(root), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "staging" / "htpasswd").is_file()
    password = password_path(root, "staging").read_text().strip()
    assert password not in result.output
    assert "user 'practika'" in result.output and "basic-auth-staging.txt" in result.output


def test_cli_nginx_all_and_bad_names(project: tuple[Path, ProjectConfig]) -> None:
    root, _ = project
    result = CliRunner().invoke(cli(), ["nginx", "--all", "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (root / "deploy" / "nginx").iterdir()} == {"dev", "staging", "production"}
    bad = CliRunner().invoke(cli(), ["nginx", "qa", "--root", str(root)])
    assert isinstance(bad.exception, UsageError)
    both = CliRunner().invoke(cli(), ["nginx", "prod", "--all", "--root", str(root)])
    assert isinstance(both.exception, UsageError)


# ---------------------------------------------------------------- the local runtime's private proxy

#: What a private proxy changes; everything else is `config nginx`'s own resolution of the settings.
LOCAL_BITS = {"tls", "http_port", "https_port", "public_https_port", "include_dir", "cert", "key", "chain",
              "listen_address", "listen_ipv6", "static_root", "media_root", "http_redirect", "probe_header"}


def private(root: Path, env: str) -> Any:
    from stageflow.generate.nginx import PrivateProxy

    d = root / ".stageflow" / "nginx" / env
    return PrivateProxy(d, "127.0.0.1", root / "cert.pem", root / "key.pem")


@pytest.mark.parametrize("env", ["dev", "staging", "production"])
def test_a_private_proxy_serves_the_site_config_nginx_writes(project: tuple[Path, ProjectConfig], env: str) -> None:
    root, config = project
    public = site_options(config, env, root=root)
    served = site_options(config, env, root=root, private=private(root, env))
    changed = {f for f in public.__dataclass_fields__ if getattr(public, f) != getattr(served, f)}
    assert changed <= LOCAL_BITS, changed - LOCAL_BITS
    assert served.include_dir == str(root / ".stageflow" / "nginx" / env)
    assert (served.http_port, served.main_port) == (config.environments[env].url_port,) * 2
    assert served.listen_address == "127.0.0.1" and served.probe_header and not served.http_redirect
    # One renderer: the served text is `config nginx`'s text with the local bits put in.
    like = dataclasses.replace(public, **{f: getattr(served, f) for f in LOCAL_BITS})
    assert render_site(served, ["127.0.0.1:9"]) == render_site(like, ["127.0.0.1:9"])
    text = site_text(served)
    assert "X-Stageflow-Upstream $stageflow_upstream" in text and "listen 127.0.0.1:" in text
    assert "return 301" not in text  # one port: no plain-HTTP redirect server
    headers = render_site(served, ["x:1"])[HEADERS_SNIPPET]
    assert headers == render_site(dataclasses.replace(public, tls=served.tls), ["x:1"])[HEADERS_SNIPPET]
    assert ("Strict-Transport-Security" in headers) == (env == "production")


def test_a_private_proxy_binds_ipv6_in_brackets_and_refuses_what_nginx_cannot_take(tmp_path: Path) -> None:
    from stageflow.generate.nginx import PrivateProxy

    root = write_with_proxy(tmp_path / "app", "dev", {})
    config = load_project(root)
    opts = site_options(config, "dev", root=root, private=PrivateProxy(root / "n", "::1"))
    assert "listen [::1]:8001;" in site_text(opts)
    with pytest.raises(ConfigError, match="the app's path holds characters"):
        site_options(config, "dev", root=root, private=PrivateProxy(Path("/srv/my app/n"), "127.0.0.1"))
    with pytest.raises(ConfigError, match="TLS_CERT_FILE"):
        site_options(config, "production", root=root,
                     private=PrivateProxy(root / "n", "127.0.0.1", Path("/x/c{ert.pem"), root / "k.pem"))
    root = write_with_proxy(tmp_path / "b", "production", {"tls": False})
    with pytest.raises(ConfigError, match=r"environments\.production\.proxy\.tls: is false but the URL is https"):
        site_options(load_project(root), "production", root=root, private=private(root, "production"))


def test_rate_limits_are_per_environment_settings(tmp_path: Path) -> None:
    root = write_with_proxy(tmp_path / "app", "staging",
                            {"api_rate": "500r/s", "api_burst": 1000, "login_rate": "30r/m", "login_burst": 0})
    text = site_text(site_options(load_project(root), "staging", root=root))
    assert "rate=500r/s;" in text and "rate=30r/m;" in text
    assert "burst=1000 nodelay" in text and "burst=0 nodelay" in text
    for bad in ("fast", "10r/h", "0r/s", "10r/s; allow all"):
        root = write_with_proxy(tmp_path / f"bad{len(bad)}", "staging", {"api_rate": bad})
        with pytest.raises(ConfigError, match=r"environments\.staging\.proxy\.api_rate: .* is not a request rate"):
            site_options(load_project(root), "staging", root=root)


def test_the_private_main_config_includes_the_site_and_logs_what_the_monitor_reads(tmp_path: Path) -> None:
    from stageflow.generate.nginx import render_main
    from stageflow.monitor.checks.logs import scan_access_log

    root = write_with_proxy(tmp_path / "app", "dev", {})
    opts = site_options(load_project(root), "dev", root=root, private=private(root, "dev"))
    token = "0123456789abcdef" * 2
    main = render_main(opts, probe_token=token, worker=("nobody", "nogroup"))
    d = opts.include_dir
    assert f"include {d}/practika-dev.conf;" in main and f"pid {d}/nginx.pid;" in main
    assert "user nobody nogroup;" in main and f'"{token}" $upstream_addr;' in main
    assert "rt=$request_time" in main and f"access_log {d}/access.log stageflow;" in main
    line = ('127.0.0.1 - - [01/Dec/2026:10:00:00 +0000] "GET /x/ HTTP/1.1" 502 12 "-" "curl/8" rt=0.250')
    scan = scan_access_log(line + "\n")
    assert scan.requests == 1 and scan.errors_5xx == 1 and scan.times_ms == [250.0]
    assert "\nuser " not in render_main(opts, probe_token=token)
    from stageflow.errors import OperationError

    for damaged in ("x" * 32, token + "\n", token[:-1] + '"'):
        with pytest.raises(OperationError, match="probe token is damaged"):
            render_main(opts, probe_token=damaged)


def test_the_local_runtime_writes_exactly_what_the_renderer_renders(tmp_path: Path) -> None:
    """`config nginx` and a local deploy share site_options + render_site; the runtime adds nginx.conf only."""
    from stageflow.config.loader import load_env_context
    from stageflow.generate.nginx import PrivateProxy
    from stageflow.runner import Runner
    from stageflow.runtimes.local import LocalRuntime

    root = write_with_proxy(tmp_path / "app", "staging", {"api_rate": "50r/s"})
    ctx = load_env_context(root, "staging", {})
    rt = LocalRuntime(ctx, Runner())
    rt._write_proxy_config(18002)
    opts = site_options(ctx.config, "staging", root=root, nginx_version=rt._nginx_version(),
                        private=PrivateProxy(rt.nginx_dir, "127.0.0.1"))
    expected = render_site(opts, ["127.0.0.1:18002"])
    written = {p.name: p.read_text() for p in rt.nginx_dir.iterdir() if p.is_file()}
    assert set(written) == {*expected, "nginx.conf", "htpasswd", "probe.token"}  # staging: basic auth on
    assert {name: written[name] for name in expected} == expected
    assert "rate=50r/s" in written["practika-staging.conf"]
    for name in expected:
        assert stat.S_IMODE((rt.nginx_dir / name).stat().st_mode) == 0o600
    # The password is the one `config nginx staging` uses: one per environment, 0600, never printed.
    assert verify_sha512_crypt(password_path(root, "staging").read_text().strip(),
                               written["htpasswd"].split(":", 1)[1].strip())
