"""Generate ``docker-compose.<env>.yml`` for one environment.

The document is built as Python data and dumped with ``yaml.safe_dump``: no text template can then
produce invalid YAML or let a value break out of its field. Every string is escaped for Compose's
own ``${VAR}`` interpolation, so a ``$`` in a command reaches the container unchanged.

Shape (Practika: web service ``backend`` on port 8000, ``worker``, PostgreSQL, Redis):

* ``backend`` – built from ``services.backend.build`` with ``args: {BASE_IMAGE: ...}``; HTTP
  healthcheck (a GET of the health path over a socket, every 2 s); replicas from the environment.
* other services (``worker``) – same hardening; ``services.<name>.healthcheck`` (a shell command)
  as healthcheck, else a liveness check of the service's process.
* ``db`` (``database.engine: postgres``), ``redis`` (``cache.engine: redis``) – official images,
  only on the ``internal`` network (``internal: true``), never a published port.
* ``nginx`` – the generated reverse proxy (``stageflow config nginx``), the only published ports;
  left out in the dev profile, where the web service is published on loopback instead.

``environments.<env>.images`` overrides images per environment (keys: a service name, ``base``,
``db``, ``redis``, ``nginx``). An env file encrypted at rest is named through the plain copy the
compose runtime writes only while it creates containers (``SECRETS_ENV_FILE``, optional).

Every service: healthcheck, ``depends_on`` with ``condition: service_healthy``, restart policy,
``deploy.resources.limits``, json-file log rotation, ``no-new-privileges``, ``cap_drop: [ALL]`` plus
the few capabilities an image's entrypoint needs, ``read_only`` root with tmpfs for scratch paths,
and for the app a non-root user. The dev profile (``environments.<env>.hot_reload``, on by default
for an environment named dev, development or local) adds a source bind mount and hot reload.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stageflow.config.models import ProjectConfig, Service
from stageflow.errors import ConfigError, OperationError
from stageflow.fsutil import inside, write_file

DEFAULT_IMAGES: dict[str, str] = {
    "base": "python:3.12-slim",
    "db": "postgres:16",
    "redis": "redis:7",
    "nginx": "nginx:1.27",
}
APP_DIR = "/app"
# A uid/gid that exists in no base image and maps to no host account: the app can read its files
# (installed world-readable) but owns nothing it could rewrite.
APP_USER = "10001:10001"
DEV_ENV_NAMES = frozenset({"dev", "development", "local"})
LOGGING: dict[str, Any] = {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}
SECURITY: dict[str, Any] = {"security_opt": ["no-new-privileges:true"], "cap_drop": ["ALL"]}
# What the official images' entrypoints do as root before dropping to their own user:
# postgres chowns/chmods PGDATA and the socket dir (CHOWN, DAC_OVERRIDE, FOWNER) then gosu (SETUID,
# SETGID); redis chowns /data then gosu; the nginx master binds 80/443 (NET_BIND_SERVICE), creates
# and chowns its temp dirs for the workers, then setuid()s them.
CAPS: dict[str, list[str]] = {
    "db": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"],
    "redis": ["CHOWN", "SETGID", "SETUID"],
    "nginx": ["CHOWN", "DAC_OVERRIDE", "SETGID", "SETUID", "NET_BIND_SERVICE"],
}
LIMITS: dict[str, tuple[str, str]] = {
    "web": ("1.0", "512M"),
    "service": ("1.0", "512M"),
    "db": ("1.0", "1G"),
    "redis": ("0.5", "256M"),
    "nginx": ("0.5", "128M"),
}
#: What the compose runtime computes for the app (DATABASE_URL and REDIS_URL naming the stack's own
#: services, stageflow.yml's ``variables``), 0600; optional so the file also runs before any deploy.
RUNTIME_ENV_FILE = ".stageflow/compose/{env}.env"
#: An encrypted env file's plain copy (0600): the compose runtime writes it for the ``docker compose``
#: calls that create containers and removes it right after, so the file names it as optional.
SECRETS_ENV_FILE = ".stageflow/compose/{env}.secrets.env"
EDGE, INTERNAL = "edge", "internal"
CONTAINER_HOST = "0.0.0.0"


def compose_filename(config: ProjectConfig, env: str) -> str:
    """``environments.<env>.compose_file``: by default ``docker-compose.prod.yml`` for the production
    environment (the seed's name), ``docker-compose.<env>.yml`` otherwise (:meth:`ProjectConfig.compose_file`)."""
    return config.compose_file(env)


def image_overrides(config: ProjectConfig, env: str) -> dict[str, str]:
    """Per-environment images: ``environments.<env>.images``.

    Keys: a service name, ``base`` (the ``BASE_IMAGE`` build argument), ``db``, ``redis``, ``nginx``.
    Each must be an image reference (it lands in the generated file and on docker's command line).
    """
    from stageflow.contexts import image_ref

    return {k: image_ref(v, f"environments.{env}.images.{k}") for k, v in config.environments[env].images.items()}


def env_file_encrypted(root: Path, config: ProjectConfig, env: str) -> bool:
    """Whether ``env``'s env file is encrypted at rest (Compose cannot read it as it is)."""
    from stageflow.config.envfile import MAX_ENV_FILE, is_encrypted_text
    from stageflow.config.loader import env_file_of
    from stageflow.fsutil import read_file

    try:
        data = read_file(env_file_of(root, config, env), root=root, limit=MAX_ENV_FILE)
    except OSError:
        return False  # unreadable: the loader says why when a command reads it
    return data is not None and is_encrypted_text(data.decode("utf-8", "replace"))


def is_dev(config: ProjectConfig, env: str) -> bool:
    """Whether ``env`` gets the dev profile (source bind mount, hot reload, no proxy).

    ``environments.<env>.hot_reload`` decides; unset, the environments named dev/development/local get
    it, unless they are production- or staging-grade (those always run the built image behind nginx).
    """
    flag = config.environments[env].hot_reload
    if flag is not None:
        return flag
    return env in DEV_ENV_NAMES and not config.is_production(env) and not config.is_staging(env)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _escape(value: Any) -> Any:
    """Escape ``$`` everywhere: nothing generated relies on Compose interpolation."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


def _hardening(kind: str, *, dev: bool, replicas: int | None = None) -> dict[str, Any]:
    cpus, memory = LIMITS[kind]
    deploy: dict[str, Any] = {"resources": {"limits": {"cpus": cpus, "memory": memory}}}
    if replicas is not None:
        deploy = {"replicas": replicas, **deploy}
    return {
        # Dev restarts by hand; elsewhere a crashed or rebooted service comes back by itself.
        "restart": "no" if dev else "unless-stopped",
        "logging": LOGGING,
        **SECURITY,
        "deploy": deploy,
    }


def _web_healthcheck(service: Service) -> dict[str, Any]:
    health = service.health
    assert health is not None and service.port is not None  # the web service always has both
    request = f"GET {health.path} HTTP/1.0\r\nHost: 127.0.0.1:{service.port}\r\nUser-Agent: docker-healthcheck\r\n\r\n"
    # One GET over a socket, the status line compared with `expect`: the same gate as stageflow's
    # own probe. `-I -S` and no urllib keep each run at ~20 ms of CPU (urllib: ~55 ms), which is
    # what lets Docker check every 2 s.
    script = (
        "import socket, sys\n"
        "head = b''\n"
        "try:\n"
        f"    s = socket.create_connection(('127.0.0.1', {service.port}), timeout={health.timeout:g})\n"
        f"    s.sendall({request.encode()!r})\n"
        "    while b'\\r\\n' not in head and len(head) < 4096:\n"
        "        chunk = s.recv(1024)\n"
        "        if not chunk:\n"
        "            break\n"
        "        head += chunk\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
        f"sys.exit(0 if head.split(b'\\r\\n', 1)[0].split()[1:2] == [b'{health.expect}'] else 1)\n"
    )
    return {
        "test": ["CMD", "python", "-I", "-S", "-c", script],
        # Docker runs its first check one interval after the start, and the compose runtime waits for
        # "healthy" before any traffic moves (engines before 25 know no start_interval): 2 s keeps a
        # deploy or a rollback short, for one cheap probe (plus Docker's exec) every 2 s.
        "interval": "2s",
        "timeout": _seconds(health.timeout + 1),
        "retries": 3,
        "start_period": _seconds(health.deadline),
    }


def _service_healthcheck(service: Service) -> dict[str, Any]:
    if service.healthcheck and service.healthcheck.strip():
        test: list[str] = ["CMD-SHELL", service.healthcheck]
    else:
        # No port to probe: healthy while PID 1 (the service's own process) is neither a zombie nor
        # stopped. Set services.<name>.healthcheck for a real check (e.g. a heartbeat file).
        test = [
            "CMD",
            "python",
            "-c",
            "import sys; sys.exit(open('/proc/1/stat').read().rsplit(')', 1)[1].split()[0] in 'ZTt')",
        ]
    return {"test": test, "interval": "30s", "timeout": "5s", "retries": 3, "start_period": "30s"}


def _command(service: Service, *, dev: bool) -> str | None:
    if not service.command:
        return None
    # Inside a container the server must listen on every interface of its network namespace:
    # nginx and the health check reach it over the compose network, not over loopback.
    command = service.command.replace("{port}", str(service.port or "")).replace("{host}", CONTAINER_HOST)
    if dev and command.split()[0] == "gunicorn" and "--reload" not in command.split():
        command += " --reload"
    return command


def _rel(path: Path, base: Path) -> str:
    """``path`` relative to the compose file's directory, as Compose wants bind sources: ``./x``."""
    rel = Path(os.path.relpath(path, base)).as_posix()
    return rel if rel.startswith(".") else f"./{rel}"


#: The volumes that hold the nginx site on a remote engine (see :func:`is_remote_engine`).
NGINX_SITE_VOLUME = "nginx-site"
NGINX_INCLUDE_VOLUME = "nginx-include"


def is_remote_engine(docker_host: str | None) -> bool:
    """True when ``docker_host`` names an engine elsewhere (``ssh://``, ``tcp://``), not this machine's socket."""
    return bool(docker_host) and not str(docker_host).startswith("unix://")


def build_compose(
    config: ProjectConfig,
    env: str,
    *,
    root: Path,
    out_dir: Path | None = None,
    nginx_dir: Path | None = None,
) -> dict[str, Any]:
    """The Compose document for ``env`` as plain data (see the module docstring for its shape).

    Relative paths (build contexts, env file, bind mounts) are written relative to ``out_dir``, the
    directory the file will live in (the app root by default). ``nginx_dir`` is where
    ``stageflow config nginx`` writes this environment's proxy (``deploy/nginx/<env>``).
    """
    from stageflow.generate.nginx import site_filename, site_options

    if env not in config.environments:
        raise ConfigError(f"unknown environment {env!r}", hint=f"known: {', '.join(config.environments)}")
    environment = config.environments[env]
    out_dir = out_dir or root
    nginx_dir = nginx_dir or root / "deploy" / "nginx" / env
    dev = is_dev(config, env)
    overrides = image_overrides(config, env)
    from stageflow.config.loader import env_file_of

    env_file: str | dict[str, Any] = _rel(env_file_of(root, config, env), out_dir)
    if env_file_encrypted(root, config, env):
        # Compose would read the ciphertext: containers get the plain copy the runtime writes for
        # the moment it creates them, and the file names no secret.
        env_file = {"path": _rel(root / SECRETS_ENV_FILE.format(env=env), out_dir), "required": False}
    web_name, _ = config.web_service
    db = config.database_for(env)
    fill = {"env": env, "project": config.project}
    cache = config.cache if config.cache is not None and config.cache.engine == "redis" else None

    services: dict[str, Any] = {}
    volumes: dict[str, Any] = {}
    infra_deps: dict[str, Any] = {}
    if db.engine == "postgres":
        db_name, db_user = db.name.format(**fill), db.user.format(**fill)
        services["db"] = {
            "image": overrides.get("db", db.image),
            "env_file": [env_file],  # POSTGRES_PASSWORD comes from the environment file
            "environment": {"POSTGRES_DB": db_name, "POSTGRES_USER": db_user},
            "volumes": ["pgdata:/var/lib/postgresql/data"],
            # -h 127.0.0.1: the entrypoint's init-time server listens on the socket only, so
            # dependents wait for the real server instead of starting against the temporary one.
            "healthcheck": {
                "test": ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", db_user, "-d", db_name],
                "interval": "5s",
                "timeout": "5s",
                "retries": 10,
                "start_period": "30s",
            },
            "read_only": True,
            "tmpfs": ["/var/run/postgresql", "/tmp"],
            "cap_add": CAPS["db"],
            "stop_grace_period": "30s",
            "networks": [INTERNAL],
            **_hardening("db", dev=dev),
        }
        volumes["pgdata"] = {}
        infra_deps["db"] = {"condition": "service_healthy"}
    if cache is not None:
        services["redis"] = {
            "image": overrides.get("redis", cache.image),
            "volumes": ["redisdata:/data"],
            # redis-cli exits 0 on error replies (e.g. NOAUTH), so look for the PONG itself.
            "healthcheck": {
                "test": ["CMD-SHELL", "redis-cli ping | grep -q PONG"],
                "interval": "5s",
                "timeout": "5s",
                "retries": 10,
                "start_period": "10s",
            },
            "read_only": True,
            "tmpfs": ["/tmp"],
            "cap_add": CAPS["redis"],
            "networks": [INTERNAL],
            **_hardening("redis", dev=dev),
        }
        volumes["redisdata"] = {}
        infra_deps["redis"] = {"condition": "service_healthy"}

    app_volumes = [f"static:{APP_DIR}/staticfiles", f"media:{APP_DIR}/media"]
    volumes["static"] = {}
    volumes["media"] = {}
    if db.engine == "sqlite" and not Path(db.path).is_absolute():
        # SQLite needs a writable directory under the read-only root.
        data_dir = posixpath.dirname(db.path.format(**fill)) or "."
        app_volumes.append(f"sqlite:{posixpath.normpath(posixpath.join(APP_DIR, data_dir))}")
        volumes["sqlite"] = {}

    for name, service in config.services.items():
        is_web = name == web_name
        spec: dict[str, Any] = {}
        if service.build is not None:
            spec["build"] = {
                "context": _rel(root / service.build, out_dir),
                "args": {"BASE_IMAGE": overrides.get("base", DEFAULT_IMAGES["base"])},
            }
        spec["image"] = overrides.get(name) or service.image or f"{config.project}-{name}:{env}"
        command = _command(service, dev=dev)
        if command:
            spec["command"] = command
        spec["user"] = APP_USER
        spec["env_file"] = [env_file, {"path": _rel(root / RUNTIME_ENV_FILE.format(env=env), out_dir),
                                       "required": False}]
        spec["environment"] = {"STAGEFLOW_ENV": env, "PYTHONUNBUFFERED": "1"}
        if dev:
            spec["environment"]["PYTHONDONTWRITEBYTECODE"] = "1"
        spec["volumes"] = list(app_volumes)
        if dev and service.build is not None:
            # Dev profile: the working tree replaces the image's copy, and the server reloads.
            spec["volumes"].insert(0, f"{_rel(root / service.build, out_dir)}:{APP_DIR}")
            spec["working_dir"] = APP_DIR
        spec["read_only"] = True
        spec["tmpfs"] = ["/tmp"]
        if is_web:
            spec["expose"] = [str(service.port)]
            if dev:
                host = urlsplit(environment.url).hostname or "127.0.0.1"
                bind = "127.0.0.1" if host in ("127.0.0.1", "localhost") else "0.0.0.0"
                spec["ports"] = [f"{bind}:{environment.url_port}:{service.port}"]
            spec["healthcheck"] = _web_healthcheck(service)
        else:
            spec["healthcheck"] = _service_healthcheck(service)
        if infra_deps:
            spec["depends_on"] = dict(infra_deps)
        # Web and workers reach the database on `internal` and the outside world on `edge`.
        spec["networks"] = [INTERNAL, EDGE]
        spec["stop_grace_period"] = _seconds(environment.drain + 10) if is_web else "30s"
        replicas = environment.replicas if is_web else service.replicas
        spec.update(_hardening("web" if is_web else "service", dev=dev, replicas=1 if dev else replicas))
        services[name] = spec

    if not dev:
        site = site_options(config, env, root=root)
        main_port, http_port = site.main_port, site.http_port
        host = urlsplit(environment.url).hostname or ""
        bind = "127.0.0.1:" if host in ("127.0.0.1", "localhost") else ""
        ports = [f"{bind}{http_port}:{http_port}"]
        if site.tls:
            ports.append(f"{bind}{main_port}:{main_port}")
        if is_remote_engine(environment.docker_host):
            # A remote engine would resolve a bind mount's path on its own host, where this app's
            # deploy/nginx/<env>/ is not: the site lives in two volumes the runtime fills through the
            # engine (docker cp), and what the upstream names is read back from there.
            nginx_volumes = [f"{NGINX_SITE_VOLUME}:/etc/nginx/conf.d:ro",
                             f"{NGINX_INCLUDE_VOLUME}:{site.include_dir}:ro"]
            volumes[NGINX_SITE_VOLUME] = {}
            volumes[NGINX_INCLUDE_VOLUME] = {}
        else:
            nginx_volumes = [
                f"{_rel(nginx_dir, out_dir)}:{site.include_dir}:ro",
                f"{_rel(nginx_dir / site_filename(config.project, env), out_dir)}:/etc/nginx/conf.d/default.conf:ro",
            ]
        if site.tls:
            cert_dirs = sorted({posixpath.dirname(site.cert), posixpath.dirname(site.key)})
            nginx_volumes += [f"{d}:{d}:ro" for d in cert_dirs]
        if site.static_root == "/srv/static":
            nginx_volumes.append("static:/srv/static:ro")
        if site.media_root == "/srv/media":
            nginx_volumes.append("media:/srv/media:ro")
        services["nginx"] = {
            "image": overrides.get("nginx", DEFAULT_IMAGES["nginx"]),
            "ports": ports,
            "volumes": nginx_volumes,
            # A real TCP connect to the port that serves the site (the image ships bash, not curl).
            "healthcheck": {
                "test": ["CMD", "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{main_port}"],
                "interval": "10s",
                "timeout": "5s",
                "retries": 3,
                "start_period": "10s",
            },
            "depends_on": {web_name: {"condition": "service_healthy"}},
            "read_only": True,
            "tmpfs": ["/var/cache/nginx", "/var/run", "/tmp"],
            "cap_add": CAPS["nginx"],
            "networks": [EDGE],
            **_hardening("nginx", dev=dev),
        }

    # Readers look for the app first: app services in stageflow.yml order, then the infrastructure.
    ordered = {name: services[name] for name in config.services}
    ordered.update({k: v for k, v in services.items() if k not in ordered})
    doc: dict[str, Any] = {
        "name": f"{config.project}-{env}",
        "x-stageflow": {"project": config.project, "environment": env, "generated-by": "stageflow config compose"},
        "services": ordered,
        "networks": {EDGE: {}, INTERNAL: {"internal": True}},
        "volumes": volumes,
    }
    return _escape(doc)  # type: ignore[no-any-return]


def render_compose(doc: Mapping[str, Any], env: str) -> str:
    """Dump ``doc`` as YAML under a header naming the command that regenerates it."""
    from stageflow.generate.yamltext import dump_yaml

    header = (
        f"# Generated by `stageflow config compose {env}` from stageflow.yml: edit that file and\n"
        "# regenerate rather than editing this one.\n"
    )
    body = dump_yaml(dict(doc), width=4096)
    return header + body


def write_compose(config: ProjectConfig, env: str, *, root: Path, out_dir: Path | None = None) -> Path:
    """Build, render and write ``env``'s Compose file; return its path."""
    out_dir = out_dir or root
    doc = build_compose(config, env, root=root, out_dir=out_dir)
    path = out_dir / compose_filename(config, env)
    try:
        write_file(path, render_compose(doc, env), root=root if inside(root, path) else None, mode=0o644,
                   dir_mode=0o755)
    except OSError as exc:
        raise OperationError(
            f"cannot write {path}: {exc.strerror}", hint="choose a writable --output directory"
        ) from exc
    return path
