"""The Docker Engine an environment runs on: the local one, or ``docker_host`` (``ssh://user@host``…).

Every docker call of the environment gets ``DOCKER_HOST``. For an ``ssh://`` engine the docker CLI
runs ``ssh`` itself (its connection helper) and has no option for ssh settings, so the docker CLI
finds a shim named ``ssh`` first on its ``PATH``: a fixed script that runs the real ``ssh`` with
``-F`` and a config stageflow writes for the environment (``.stageflow/ssh/<env>.config``). That
config says, in this order (ssh keeps the first value it reads):

1. ``BatchMode yes``: a deploy never waits at a password or host-key prompt; it fails with a reason;
2. ``environments.<env>.ssh``: ``identity``, ``known_hosts`` (then ``StrictHostKeyChecking yes``),
   ``options`` (ssh_config keywords; none that runs a command);
3. the operator's own ``~/.ssh/config``: host aliases, jump hosts, keys work as for a plain ``ssh``;
4. stageflow's defaults: a connect timeout, keep-alives, and one shared connection per host for a
   minute (``ControlMaster``), so a deploy's hundred docker calls do not each pay a handshake;
5. the system's ``/etc/ssh/ssh_config``.

Values reach the shim as environment variables (data), never as script text. The same config
carries the health probes of a remote engine: ``ssh -W container:port`` opens a TCP stream *from the
engine's host* to a new container, and the probe speaks the same HTTP/1.0 GET through it as it
does to a local container, so no image needs an HTTP client.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from stageflow.errors import ConfigError, OperationError

if TYPE_CHECKING:
    from stageflow.config.loader import EnvContext
    from stageflow.deploy.health import Probe, Prober
    from stageflow.deploy.lock import LockInfo
    from stageflow.runner import Runner

SHIM = """#!/bin/sh
# Written by stageflow: the ssh the docker CLI runs for an ssh:// DOCKER_HOST, with the
# environment's ssh config (paths come from the environment, never from this text).
exec "$STAGEFLOW_SSH_BIN" -F "$STAGEFLOW_SSH_CONFIG" "$@"
"""
#: A Unix socket path has at most 107 bytes; ssh adds "/" + the 40-character %C hash + a 17-character
#: temporary suffix while it sets the master up, so the directory may have 49.
_CONTROL_DIR_MAX = 49


@dataclass(frozen=True)
class SshTarget:
    """``ssh://[user@]host[:port]`` taken apart."""

    user: str | None
    host: str
    port: int | None

    def args(self) -> list[str]:
        """ssh arguments naming the target (the host last, after ``--``)."""
        out = []
        if self.user:
            out += ["-l", self.user]
        if self.port:
            out += ["-p", str(self.port)]
        return [*out, "--", self.host]

    def __str__(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"


def ssh_target(docker_host: str | None) -> SshTarget | None:
    """The ssh target of an ``ssh://`` docker host, else None."""
    if not docker_host or not docker_host.startswith("ssh://"):
        return None
    parts = urlsplit(docker_host)
    return SshTarget(parts.username, parts.hostname or "", parts.port)


def unreachable(text: str) -> str | None:
    """ssh's own words when the docker CLI could not reach an ``ssh://`` engine at all, else None."""
    if "error during connect" not in text:
        return None
    _, found, reason = text.partition("stderr=")
    return " ".join((reason if found else text).split())[:200] or "no reason given"


def is_remote(docker_host: str | None) -> bool:
    """True when the engine is elsewhere than this machine's socket (``ssh://``, ``tcp://``)."""
    from stageflow.generate.compose import is_remote_engine

    return is_remote_engine(docker_host)


class DockerHost:
    """The engine of one environment: the environment variables every docker call needs, and probes."""

    def __init__(self, ctx: EnvContext) -> None:
        self.ctx = ctx
        self.url = ctx.env.docker_host
        self.ssh = ssh_target(self.url)
        self.remote = is_remote(self.url)
        self._env: dict[str, str] | None = None

    @property
    def where(self) -> str:
        """For messages: ``the local engine`` or ``ssh://deploy@host``."""
        return self.url or "the local engine"

    @property
    def ssh_dir(self) -> Path:
        """``.stageflow/ssh``: the shim and the per-environment configs (private)."""
        return self.ctx.state_dir / "ssh"

    @property
    def config_path(self) -> Path:
        """The ssh config of this environment."""
        return self.ssh_dir / f"{self.ctx.name}.config"

    def env(self) -> dict[str, str]:
        """``DOCKER_HOST`` and, for ``ssh://``, the shim's ``PATH`` and settings (files written on first use)."""
        if self._env is None:
            env: dict[str, str] = {}
            if self.url:
                env["DOCKER_HOST"] = self.url
            if self.ssh is not None:
                real = shutil.which("ssh")
                # Without ssh the docker CLI fails on its own; pre-flight says what to install.
                if real is not None:
                    bindir = self._write_files()
                    env.update({"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
                                "STAGEFLOW_SSH_BIN": real, "STAGEFLOW_SSH_CONFIG": str(self.config_path)})
            self._env = env
        return dict(self._env)

    @property
    def hint(self) -> str:
        """What to check when the engine does not answer."""
        if self.ssh is None:
            return "start dockerd (scripts/docker-env.sh does, as root) or fix docker_host"
        port = f"-p {self.ssh.port} " if self.ssh.port else ""
        user = f"{self.ssh.user}@" if self.ssh.user else ""
        return (f"check that 'ssh {port}{user}{self.ssh.host} docker version' works from here (keys, known hosts: "
                f"environments.{self.ctx.name}.ssh; your ~/.ssh/config applies too)")

    def ssh_argv(self, *args: str) -> list[str]:
        """``ssh -F <config> ARGS… [-l user] [-p port] -- host``: the engine's host, as docker reaches it."""
        assert self.ssh is not None
        env = self.env()
        if "STAGEFLOW_SSH_BIN" not in env:
            raise OperationError(f"environments.{self.ctx.name}.docker_host is {self.url}, but ssh is not installed "
                                 "here", hint="install the OpenSSH client (Debian: openssh-client)")
        return [env["STAGEFLOW_SSH_BIN"], "-F", env["STAGEFLOW_SSH_CONFIG"], *args, *self.ssh.args()]

    def render_config(self) -> str:
        """The ssh config of this environment (see the module doc for the order)."""
        from stageflow.fsutil import confine

        env = self.ctx.name
        settings = self.ctx.env.ssh
        lines = [f"# Written by stageflow for environments.{env} (regenerated by every command); edit",
                 "# stageflow.yml (environments.<env>.ssh) or your ~/.ssh/config instead.",
                 "Host *", "  BatchMode yes"]

        def path(value: str, key: str) -> str:
            if value.startswith("~"):
                return str(Path(value).expanduser())
            if os.path.isabs(value):
                return value
            return str(confine(self.ctx.root, value, f"environments.{env}.ssh.{key}"))

        if settings is not None:
            if settings.identity:
                lines += [f'  IdentityFile "{path(settings.identity, "identity")}"', "  IdentitiesOnly yes"]
            if settings.known_hosts:
                lines += [f'  UserKnownHostsFile "{path(settings.known_hosts, "known_hosts")}"',
                          "  StrictHostKeyChecking yes"]
            for key, value in settings.options.items():
                text = ("yes" if value else "no") if isinstance(value, bool) else str(value)
                lines.append(f"  {key} {text}")
        lines += ["Match all", "Include ~/.ssh/config", "Host *", "  ConnectTimeout 15",
                  "  ServerAliveInterval 15", "  ServerAliveCountMax 3"]
        control = self._control_dir()
        if control is not None:
            lines += ["  ControlMaster auto", f'  ControlPath "{control}/%C"', "  ControlPersist 60"]
        lines += ["Match all", "Include /etc/ssh/ssh_config", ""]
        return "\n".join(lines)

    def _control_dir(self) -> Path | None:
        """Where the shared connections' sockets go: ``.stageflow/ssh/cm`` when its path is short enough
        for a socket, else ``$XDG_RUNTIME_DIR/stageflow-ssh`` (a private directory of this user); None:
        no shared connection (each docker call opens its own)."""
        own = self.ssh_dir / "cm"
        if len(str(own)) <= _CONTROL_DIR_MAX:
            return own
        runtime = os.environ.get("XDG_RUNTIME_DIR", "")
        if not runtime or not os.path.isabs(runtime):
            return None
        try:
            st = os.lstat(runtime)
        except OSError:
            return None
        import stat

        # Only a directory that is ours and nobody else's: another user must not see or plant sockets.
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077:
            return None
        shared = Path(runtime) / "stageflow-ssh"
        return shared if len(str(shared)) <= _CONTROL_DIR_MAX else None

    def _write_files(self) -> Path:
        """The shim (0700) and this environment's config (0600), rewritten only when they changed."""
        from stageflow.fsutil import make_dirs, read_file, write_file

        root = self.ctx.root
        bindir = self.ssh_dir / "bin"
        for path, text, mode in ((bindir / "ssh", SHIM, 0o700), (self.config_path, self.render_config(), 0o600)):
            try:
                current = read_file(path, root=root, limit=65536)
            except ConfigError:
                current = None
            if current != text.encode():
                write_file(path, text, root=root, mode=mode)
        control = self._control_dir()
        if control is not None:
            make_dirs(control, root=root if control.is_relative_to(root) else None)
        return bindir

    def tunnel_prober(self, runner: Runner) -> Prober:
        """A prober that sends the health GET through ``ssh -W host:port`` from the engine's host."""
        from stageflow.deploy.health import Probe, classify_response, http_request

        def probe(url: str, expect: int, timeout: float) -> Probe:
            parts = urlsplit(url)
            r = runner.exchange(self.ssh_argv("-W", f"{parts.hostname}:{parts.port or 80}"), http_request(url),
                                timeout=timeout)
            if r.returncode == -1 and not r.stdout:
                return Probe(False, f"timeout after {timeout:.1f}s (through ssh to {self.ssh})", r.seconds)
            if not r.stdout:
                err = " ".join(r.stderr.split())[:200]
                if "refused" in err.lower():
                    return Probe(False, "connection refused", r.seconds)
                return Probe(False, f"no answer through ssh to {self.ssh}: {err or f'exit {r.returncode}'}",
                             r.seconds)
            return classify_response(r.stdout.encode(), expect, r.seconds)

        return probe



#: The image of lock containers: an empty file system, imported once per engine (no registry needed).
LOCK_IMAGE = "stageflow/lock:1"
_LOCK_LABEL = "io.stageflow.lock"
_HEARTBEAT = "stageflow-heartbeat"


def ensure_empty_image(runner: Runner, where: str, hint: str = "") -> None:
    """``stageflow/lock:1`` on the engine: an empty file system for containers that are only ever
    created (the lock, the site carrier), imported from an empty tar (no registry needed)."""
    if runner.run(["docker", "image", "inspect", "-f", "{{.Id}}", LOCK_IMAGE], timeout=60).ok:
        return
    import tarfile

    with tempfile.TemporaryDirectory(prefix="stageflow-lock-") as tmp:
        empty = Path(tmp) / "empty.tar"
        with tarfile.open(empty, "w"):
            pass
        r = runner.run(["docker", "import", "--change", f"LABEL {_LOCK_LABEL}-image=1", "-", LOCK_IMAGE],
                       stdin_path=empty, timeout=120, what="docker import (stageflow/lock:1)")
    if not r.ok:
        why = unreachable(r.stderr)
        raise OperationError(f"{where} does not answer over ssh: {why}" if why else
                             f"cannot create the image {LOCK_IMAGE} on {where}: {r.brief(200)}", hint=hint or None)


def _tar(files: Mapping[str, bytes]) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            entry = tarfile.TarInfo(name)
            entry.size, entry.mode = len(data), 0o644
            tar.addfile(entry, io.BytesIO(data))
    return buf.getvalue()


def _untar_one(raw: bytes, name: str) -> bytes | None:
    import io
    import tarfile

    try:
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            member = tar.extractfile(name)
            return member.read(1 << 20) if member else None
    except (tarfile.TarError, OSError, KeyError):
        return None


class VolumeCarrier:
    """Files into and out of named volumes of a remote engine, which cannot bind-mount this machine's.

    A container created (never started) from the empty image with the volumes mounted read-write;
    ``docker cp`` works on it through the engine's API, over ssh like every other call. The volumes
    are created first with the Compose project's labels, so Compose takes them as its own.
    """

    def __init__(self, runner: Runner, name: str, project: str, mounts: Mapping[str, str], where: str) -> None:
        self.runner, self.name, self.project, self.mounts, self.where = runner, name, project, mounts, where

    def ensure(self) -> None:
        """The volumes and the carrier exist (created once; a concurrent create is fine)."""
        if self.runner.run(["docker", "inspect", "--type", "container", "-f", "{{.Id}}", self.name], timeout=60).ok:
            return
        ensure_empty_image(self.runner, self.where)
        argv = ["docker", "create", "--name", self.name, "--network", "none", "--label", f"{_LOCK_LABEL}-carrier=1"]
        for volume, path in self.mounts.items():
            self.runner.run(["docker", "volume", "create", "--label", f"com.docker.compose.project={self.project}",
                             "--label", f"com.docker.compose.volume={volume}", f"{self.project}_{volume}"],
                            timeout=60, check=True, what="docker volume create")
            argv += ["-v", f"{self.project}_{volume}:{path}"]
        r = self.runner.run([*argv, LOCK_IMAGE, "/carrier"], timeout=60, what="docker create (site carrier)")
        if not r.ok and "already in use" not in r.stderr:
            raise OperationError(f"cannot create {self.name} on {self.where}: {r.brief(200)}")

    def put(self, files: Mapping[str, bytes]) -> None:
        """Write ``files`` (paths relative to ``/``) into the volumes."""
        with tempfile.NamedTemporaryFile(prefix="stageflow-site-", suffix=".tar") as fh:
            fh.write(_tar(files))
            fh.flush()
            self.runner.run(["docker", "cp", "-", f"{self.name}:/"], stdin_path=Path(fh.name), timeout=120, check=True,
                            what="docker cp (nginx site to the engine)")

    def get(self, path: str) -> bytes | None:
        """The file at ``path`` in the volumes, or None (no carrier yet, no such file)."""
        r = self.runner.run(["docker", "cp", f"{self.name}:{path}", "-"], timeout=60, what="docker cp (read back)")
        return _untar_one(r.stdout.encode(), path.rsplit("/", 1)[-1]) if r.ok else None

    def remove(self) -> None:
        """The carrier goes (the volumes stay, like the database's)."""
        self.runner.run(["docker", "rm", "-f", self.name], timeout=60)


class EngineLock:
    """The environment's lock as a container on the engine: ``<project>-<env>-stageflow-lock``.

    Creating a container with a fixed name is atomic on the engine (a second create is a conflict),
    so whoever creates it holds the lock. It is only ever created, never started: labels record the
    holder (owner, host, pid, command, start, lease); heartbeats are a small file copied into it
    (``docker cp``), as labels cannot change. The token is the container ID, so removing a stale
    record never removes a newer one that took its name.
    """

    def __init__(self, runner: Runner, stack: str, env: str, where: str, hint: str = "") -> None:
        self.runner, self.env, self.hint = runner, env, hint
        self.name = f"{stack}-stageflow-lock"  # the Compose project is <project>-<env>
        self.where = f"the Docker Engine at {where}" if "://" in where else where

    def _docker(self, *args: str, stdin: Path | None = None, timeout: float = 60) -> tuple[bool, str, str]:
        r = self.runner.run(["docker", *args], stdin_path=stdin, timeout=timeout, what=f"docker {args[0]} (lock)")
        why = None if r.ok else unreachable(r.stderr)
        if why is not None:
            raise OperationError(f"{self.where} does not answer over ssh: {why}", hint=self.hint)
        return r.ok, r.stdout, r.stderr

    def _ensure_image(self) -> None:
        ensure_empty_image(self.runner, self.where, self.hint)

    def create(self, info: LockInfo) -> str | None:
        """``docker create --name …``: the container ID, or None when the name is taken (someone holds it)."""
        self._ensure_image()
        labels = {"env": info.env, "owner": info.owner, "host": info.host, "pid": str(info.pid),
                  "command": info.command, "started_at": info.started_at, "lease": str(info.lease_seconds)}
        argv = ["create", "--name", self.name, "--network", "none", "--label", f"{_LOCK_LABEL}={info.env}"]
        for key, value in labels.items():
            argv += ["--label", f"{_LOCK_LABEL}.{key}={value}"]
        ok, out, err = self._docker(*argv, LOCK_IMAGE, "/stageflow-lock")
        if ok:
            return out.strip() or None
        if "conflict" in err.lower() or "already in use" in err.lower():
            return None
        raise OperationError(f"cannot take the lock on {self.where}: {' '.join(err.split())[:200]}")

    def read(self) -> tuple[LockInfo, str] | None:
        """The holder the container's labels name, its last heartbeat, and its ID; None without one."""
        import json

        from stageflow.deploy.lock import LockInfo

        ok, out, _ = self._docker("inspect", "--type", "container", self.name)
        if not ok:
            return None
        try:
            data = json.loads(out)[0]
            cid = str(data["Id"])
            labels = data.get("Config", {}).get("Labels") or {}
        except (ValueError, LookupError, TypeError, AttributeError):
            return None

        def label(key: str) -> str:
            return str(labels.get(f"{_LOCK_LABEL}.{key}", ""))

        started = label("started_at")
        pid, lease = label("pid"), label("lease")
        try:
            lease_value: float | str = float(lease)
        except ValueError:
            lease_value = lease
        # Decoded like a row of state.db: a label that makes no sense gives a record marked damaged,
        # which vouches for no live holder (taken over, never held forever).
        info = LockInfo.read(_Row({"env": label("env") or self.env, "owner": label("owner") or "?",
                              "pid": int(pid) if pid.isdigit() else pid, "host": label("host") or "?",
                              "command": label("command"), "started_at": started,
                              "heartbeat_at": self._heartbeat(cid) or started, "lease_seconds": lease_value}))
        return info, cid

    def _heartbeat(self, cid: str) -> str | None:
        r = self.runner.run(["docker", "cp", f"{cid}:/{_HEARTBEAT}", "-"], timeout=60, what="docker cp (lock)")
        data = _untar_one(r.stdout.encode(), _HEARTBEAT) if r.ok else None
        return data[:200].decode("ascii", "replace").strip() or None if data else None

    def beat(self, token: str, at: str) -> None:
        """Copy the heartbeat time into the container (a tar of one small file on standard input)."""
        with tempfile.NamedTemporaryFile(prefix="stageflow-beat-", suffix=".tar") as fh:
            fh.write(_tar({_HEARTBEAT: at.encode("ascii", "replace")}))
            fh.flush()
            self._docker("cp", "-", f"{token}:/", stdin=Path(fh.name))

    def remove(self, token: str | None) -> None:
        """``docker rm`` of that very container (by ID), or of whichever holds the name."""
        self._docker("rm", "-f", token or self.name)


class _Row(dict[str, object]):
    """Labels shaped like a row of ``state.db`` (``keys()`` a list, as ``sqlite3.Row`` has it)."""

    def keys(self) -> list[str]:  # type: ignore[override]
        """The column names."""
        return list(super().keys())
