"""The local runtime: services as supervised background processes, nginx for blue/green cutovers.

Layout under ``.stageflow/``::

    run/<env>/<service>-<color>.json   pid file (pid + create time guards against pid reuse)
    run/<env>/logs/<service>-<color>.log
    nginx/<env>/nginx.conf, upstream-<env>.conf, nginx.pid
    venvs/<env>/<requirements hash>/

Every process we start carries ``STAGEFLOW_INSTANCE=<root>::<env>::<color>`` in its environment,
which is how orphans of a killed deploy are found and stopped.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

from stageflow.commands import nginx as nginx_cmd
from stageflow.config.loader import EnvContext, with_release
from stageflow.contexts import host_port, nginx_token
from stageflow.deploy.release import file_hash
from stageflow.errors import ConfigError, OperationError, StageflowError
from stageflow.fsutil import allow_traverse, create_private, inside, make_dirs, open_append, read_file, write_file
from stageflow.generate.upstream import upstream_filename
from stageflow.masking import masker
from stageflow.procs import NO_PROCFS, is_ours, proc_stat, running
from stageflow.runner import Runner
from stageflow.runtimes.base import Placement, RuntimeStatus

if TYPE_CHECKING:
    from stageflow.deploy.backup import DatabaseTarget
    from stageflow.deploy.health import Prober
    from stageflow.deploy.preflight import Check
    from stageflow.generate.nginx import SiteOptions
    from stageflow.state.store import Store

if TYPE_CHECKING:
    import psutil

    from stageflow.monitor.resources import ServiceStats

COLORS = ("blue", "green")
_BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME", "SYSTEMROOT")


def other_color(color: str | None) -> str:
    """The color a new release starts on."""
    return "green" if color == "blue" else "blue"


@dataclass(frozen=True)
class ProcInfo:
    """A started service process."""

    service: str
    color: str
    pid: int
    create_time: float
    release: str
    port: int | None
    #: Start time in clock ticks since boot (Linux ``/proc/PID/stat``): a pid-reuse check without psutil.
    start_ticks: int | None = None


@dataclass(frozen=True)
class PreparedVenv:
    """A release's virtualenv and whether this deploy built it (else it was reused)."""

    path: Path
    built: bool
    seconds: float

    def describe(self) -> str:
        """``venv 1a2b… built in 8.1s`` or ``venv 1a2b… reused``: what the release step says."""
        return f"venv {self.path.name} " + (f"built in {self.seconds:.1f}s" if self.built else "reused")


class LocalRuntime:
    """Runs one environment's services on this machine."""

    name: ClassVar[str] = "local"

    def __init__(self, ctx: EnvContext, runner: Runner, store: Store | None = None) -> None:
        del store  # the local runtime keeps its records in pid files next to the processes
        self.ctx = ctx
        self.runner = runner
        self.env = ctx.name
        sd = ctx.state_dir
        self.run_dir = sd / "run" / self.env
        self.log_dir = self.run_dir / "logs"
        self.nginx_dir = sd / "nginx" / self.env
        venvs = Path(ctx.config.releases.venv_dir.format(env=self.env, project=ctx.config.project))
        self.venv_root = venvs if venvs.is_absolute() else ctx.root / venvs
        self.instance_prefix = f"{ctx.root}::{self.env}::"
        self._version: tuple[int, int, int] | None = None
        self._version_asked = False

    # ports and nginx ---------------------------------------------------------------------------
    @property
    def nginx_binary(self) -> str | None:
        """The nginx binary when the proxy is in use, else None (stop-then-start deploys)."""
        cfg = self.ctx.config.nginx
        if cfg.enabled == "off":
            return None
        if cfg.binary != "nginx":
            return _executable(cfg.binary, self.ctx.root)
        found = shutil.which(cfg.binary) or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/sbin")
        if found is None and cfg.enabled == "on":
            raise OperationError(f"nginx.enabled is 'on' but {cfg.binary} was not found", hint="apt-get install nginx")
        return found

    @property
    def listen_host(self) -> str:
        """The address services and the proxy bind to (loopback unless the URL names an IP)."""
        host = urlsplit(self.ctx.env.url).hostname or "127.0.0.1"
        try:
            ipaddress.ip_address(host)
            return host
        except ValueError:
            return "127.0.0.1"

    def app_port(self, color: str) -> int:
        """The port a color's web process listens on."""
        env = self.ctx.env
        if self.nginx_binary is None:
            return env.url_port
        if env.app_ports:
            return env.app_ports[COLORS.index(color)]
        port = env.url_port + (10000 if color == "blue" else 20000)
        if port > 65535:
            raise OperationError(
                f"cannot derive app ports from {env.url}",
                hint=f"set environments.{self.env}.app_ports: [PORT_A, PORT_B]",
            )
        return port

    @property
    def https(self) -> bool:
        """True when the env's URL is https: the proxy terminates TLS."""
        return urlsplit(self.ctx.env.url).scheme == "https"

    def tls_paths(self) -> tuple[Path, Path]:
        """Certificate and key the proxy serves: TLS_CERT_FILE/TLS_KEY_FILE, else the self-signed pair.

        Creates nothing: probes trust exactly the certificate being served. A self-signed pair is
        only for loopback URLs (a local rehearsal of production); a real host must name its own.
        """
        cert, key = self.ctx.app_vars.get("TLS_CERT_FILE", ""), self.ctx.app_vars.get("TLS_KEY_FILE", "")
        if cert and key:
            # Both land in nginx.conf: a newline and `return 200 …;` must not become directives.
            return (_abs(self.ctx.root, nginx_token(cert, "TLS_CERT_FILE")),
                    _abs(self.ctx.root, nginx_token(key, "TLS_KEY_FILE")))
        host = urlsplit(self.ctx.env.url).hostname or "127.0.0.1"
        if not _is_loopback(host):
            raise OperationError(
                f"{self.ctx.env.url} is https but no certificate is configured",
                hint=f"set TLS_CERT_FILE and TLS_KEY_FILE in {self.ctx.env_file.name}",
            )
        d = self.ctx.state_dir / "tls" / self.env
        return d / "cert.pem", d / "key.pem"

    def tls_files(self) -> tuple[Path, Path]:
        """:meth:`tls_paths`, (re)making the self-signed pair first when it is missing or near expiry."""
        cert_p, key_p = self.tls_paths()
        if cert_p.parent == self.ctx.state_dir / "tls" / self.env and not _cert_fresh(cert_p):
            _self_signed(cert_p, key_p, urlsplit(self.ctx.env.url).hostname or "127.0.0.1", self.ctx.root)
        return cert_p, key_p

    def _nginx_conf(self) -> Path:
        return self.nginx_dir / "nginx.conf"

    def _site_options(self) -> SiteOptions:
        """The site ``config nginx`` writes for this env, as this env's private nginx serves it."""
        from stageflow.generate.nginx import PrivateProxy, site_options

        cert = key = None
        if self.https:
            cert, key = self.tls_files()
        private = PrivateProxy(self.nginx_dir, self.listen_host, cert, key)
        return site_options(self.ctx.config, self.env, root=self.ctx.root, nginx_version=self._nginx_version(),
                            private=private)

    def _nginx_version(self) -> tuple[int, int, int] | None:
        """``nginx -v`` of the binary in use (the site's http2 syntax depends on it); asked once."""
        if not self._version_asked:
            from stageflow.generate.nginx import parse_nginx_version

            binary = self.nginx_binary
            result = self.runner.run([binary, "-v"], what="nginx -v", timeout=10) if binary else None
            self._version = parse_nginx_version(result.stderr or result.stdout) if result and result.ok else None
            self._version_asked = True
        return self._version

    def _worker_account(self) -> tuple[str, str] | None:
        """Who nginx's workers run as when stageflow is root (else None: stageflow's own user).

        ``nobody``, who reads only htpasswd and the temp directories, when it can reach the app;
        root when a parent directory keeps other users out (the pre-flight check says which): the
        app's own processes run as root then anyway, and basic auth must not answer 500.
        """
        if os.geteuid() != 0:
            return None
        return ("root", "root") if self._shut_out() is not None else ("nobody", "nogroup")

    def _shut_out(self) -> Path | None:
        """The first directory from the app root up that other users cannot traverse, if any."""
        import stat

        for d in (self.ctx.root, *self.ctx.root.parents):
            try:
                if not os.stat(d).st_mode & stat.S_IXOTH:
                    return d
            except OSError:
                return d
        return None

    def _write_proxy_config(self, port: int) -> None:
        """The site (the very files ``config nginx`` renders), its upstream on ``port``, and nginx.conf."""
        from stageflow.generate.nginx import render_main, write_site

        opts = self._site_options()
        root = self.ctx.root
        write_site(root, opts, self.nginx_dir, [host_port(self.listen_host, port)], mode=0o600)
        mime = Path("/etc/nginx/mime.types")  # the system's own file, for static files the site may serve
        main = render_main(opts, probe_token=self.probe_token(), worker=self._worker_account(),
                           mime_types=mime if mime.is_file() else None)
        _atomic_write(self._nginx_conf(), main, root)

    def probe_token(self) -> str:
        """This env's probe token (made once, 0600): the key to nginx's upstream header."""
        path = self.nginx_dir / "probe.token"
        try:
            token = path.read_text().strip()
            # It lands in nginx.conf: exactly what token_hex makes, or a new one.
            if len(token) == 32 and all(c in "0123456789abcdef" for c in token):
                return token
        except FileNotFoundError:
            pass
        import secrets

        token = secrets.token_hex(16)
        write_file(path, token, root=self.ctx.root, mode=0o600)
        return token

    def probe_headers(self) -> dict[str, str]:
        """Headers that make nginx say which upstream answered (none before a token exists)."""
        try:
            return {"X-Stageflow-Probe": (self.nginx_dir / "probe.token").read_text().strip()}
        except FileNotFoundError:
            return {}

    def release_on_port(self, port: int | None) -> tuple[str, str] | None:
        """(color, release) of the live web process listening on ``port``, if any."""
        name, _ = self.ctx.config.web_service
        for color in COLORS:
            if port is not None and self.app_port(color) == port:
                info = self._read_pidfile(name, color)
                if info is not None and _alive(info):
                    return color, info.release
        return None

    def serving_color(self) -> tuple[str, str] | None:
        """(color, release) of the live web process the running proxy routes to; None when unknown."""
        if self.nginx_binary is None or not self.nginx_running():
            return None
        return self.release_on_port(self.proxied_port())

    def proxied_port(self) -> int | None:
        """The port the upstream file currently points at, or None."""
        up = self.nginx_dir / upstream_filename(self.env)
        try:
            for line in up.read_text().splitlines():
                line = line.strip()
                if line.startswith("server "):
                    return int(line.split()[1].rsplit(":", 1)[1].rstrip(";"))
        except (FileNotFoundError, ValueError, IndexError):
            return None
        return None

    def nginx_running(self) -> bool:
        """True when this environment's nginx master is alive."""
        return self._nginx_master() is not None

    def _nginx_master(self) -> int | None:
        """The pid in ``nginx.pid`` if it is this env's nginx master (command line names our config,
        working directory is our nginx directory), else None: a stale, damaged or planted pid file
        never gets a signal sent to whatever process holds that pid now."""
        pid = _pid_from_file(self.nginx_dir / "nginx.pid", self.ctx.root)
        if pid is None or not is_ours(pid, argv_has=str(self._nginx_conf()), cwd_in=str(self.nginx_dir)):
            return None
        return pid

    def _signal_master(self, sig: signal.Signals, what: str) -> None:
        # Signalled here rather than with `nginx -s`, which would signal whatever pid the file holds.
        pid = self._nginx_master()
        if pid is None:
            return
        self.runner.signal(pid, sig, what=what)

    def orphan_proxy_workers(self) -> list[int]:
        """Workers of this env's nginx whose master died (``kill -9``, the OOM killer).

        They keep the port and go on serving the last upstream, so a new master could not bind it.
        They are recognised by their working directory, which is this env's nginx directory.
        """
        if self.nginx_running():
            return []
        import psutil

        here = str(self.nginx_dir)
        found = []
        for p in psutil.process_iter(["name", "cwd"]):
            if p.info["name"] == "nginx" and p.info["cwd"] == here:
                found.append(p.pid)
        return found

    def stop_orphan_proxy_workers(self) -> int:
        """QUIT the orphaned workers (they finish their requests), KILL what is left after 5 s."""
        pids = self.orphan_proxy_workers()
        for pid in pids:
            self.runner.signal(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(running(pid) for pid in pids):
            time.sleep(0.02)
        for pid in pids:
            if running(pid):
                self.runner.signal(pid, signal.SIGKILL)
        return len(pids)

    def point_proxy(self, port: int) -> str:
        """Cutover: point the upstream file at ``port``, ``nginx -t``, then reload (or start); says which.

        The site around it is rendered again by the renderer ``config nginx`` uses (the same text
        unless stageflow.yml changed). Starting also replaces the orphaned workers of a dead nginx
        master, and says so.
        """
        binary = self.nginx_binary
        if binary is None:
            raise OperationError("point_proxy needs nginx")
        root = self.ctx.root
        make_dirs(self.nginx_dir / "tmp", root=root)
        if os.geteuid() == 0:
            allow_traverse(self.nginx_dir / "tmp", root=root)  # its workers run as nobody
        for log in ("access.log", "error.log"):  # nginx would create them world-readable
            create_private(self.nginx_dir / log, root=root)
        conf = self._nginx_conf()
        up = self.nginx_dir / upstream_filename(self.env)
        old = read_file(up, root=root, limit=1 << 16)
        old_up = old.decode("utf-8", "replace") if old is not None else None
        self._write_proxy_config(port)
        test = self.runner.run(nginx_cmd.test_config(binary, self.nginx_dir, conf), what="nginx -t")
        if not test.ok:
            if old_up is not None:
                _atomic_write(up, old_up, root)
            raise OperationError(f"nginx -t rejected the new configuration: {test.brief()}")
        if self.nginx_running():
            old_workers = self._nginx_workers()
            self._signal_master(signal.SIGHUP, "nginx reload")
            self._wait_reloaded(old_workers)
            return "reloaded"
        orphans = self.stop_orphan_proxy_workers()
        # The working directory identifies this env's workers should their master ever die.
        self.runner.run(nginx_cmd.start(binary, self.nginx_dir, conf), cwd=self.nginx_dir, check=True,
                        what="nginx start")
        return f"started; replaced {orphans} orphaned worker(s) of a dead master" if orphans else "started"

    def _nginx_workers(self) -> set[int]:
        import psutil

        pid = self._nginx_master()
        try:
            return {p.pid for p in psutil.Process(pid).children()} if pid else set()
        except psutil.NoSuchProcess:
            return set()

    def _wait_reloaded(self, old_workers: set[int], timeout: float = 10.0) -> None:
        # A reload returns before the new workers serve; wait until the old generation has finished
        # its requests and exited, so stopping the old release cannot race requests routed to it.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self._nginx_workers()
            if now and not (now & old_workers):
                return
            time.sleep(0.02)

    def stop_proxy(self) -> None:
        """Stop this environment's nginx (``down``)."""
        binary = self.nginx_binary
        master = self._nginx_master() if binary else None
        if master is not None:
            self._signal_master(signal.SIGQUIT, "nginx quit")
            deadline = time.monotonic() + 10
            while running(master) and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            self.stop_orphan_proxy_workers()

    # virtual environments ----------------------------------------------------------------------
    def ensure_venv(self, release_dir: Path, requirements: str) -> Path | None:
        """The venv for this release's requirements (see :meth:`prepare_venv`); None without a file."""
        prepared = self.prepare_venv(release_dir, requirements)
        return prepared.path if prepared else None

    def prepare_venv(self, release_dir: Path, requirements: str) -> PreparedVenv | None:
        """The content-addressed venv for this release's requirements: reused when one with the same
        requirements hash exists (any environment's), else built. None without a requirements file.

        Environments share it, so a promotion builds it once: it is made read-only once complete (the
        app cannot change what another environment runs), and built under a file lock so two deploys
        needing the same one build it once.
        """
        import fcntl

        req = release_dir / requirements
        digest = file_hash(req)
        if digest is None:
            return None
        venv = self.venv_root / digest[:16]
        marker = venv / ".stageflow-complete"
        if marker.exists():
            return PreparedVenv(venv, False, 0.0)
        root = self.ctx.root if inside(self.ctx.root, self.venv_root) else None
        make_dirs(self.venv_root, root=root)
        started = time.monotonic()
        lock_fd = open_append(self.venv_root / f".{digest[:16]}.lock", root=root)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)  # another deploy may be building this very venv
            if marker.exists():
                return PreparedVenv(venv, False, 0.0)
            if venv.exists():
                _make_writable(venv)  # a build interrupted half-way
                shutil.rmtree(venv)
            base = getattr(sys, "_base_executable", sys.executable)
            self.runner.run([base, "-m", "venv", str(venv)], check=True, what="create venv", timeout=300)
            self.runner.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 "-r", str(req)],
                check=True, what=f"pip install -r {requirements}", timeout=900,
            )
            self.runner.run([str(venv / "bin" / "python"), "-m", "compileall", "-q", str(venv)],
                            what="compile the venv", timeout=300)
            _make_read_only(venv)
            write_file(marker, digest, root=root)
        finally:
            os.close(lock_fd)
        return PreparedVenv(venv, True, time.monotonic() - started)

    # processes ---------------------------------------------------------------------------------
    def process_env(self, release: str, color: str, port: int, venv: Path | None) -> dict[str, str]:
        """The environment a service process gets: a clean base plus the app's variables."""
        env = {k: os.environ[k] for k in _BASE_ENV_KEYS if k in os.environ}
        env.update(with_release(self.ctx.app_vars, release))
        if venv is not None:
            env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
            env["VIRTUAL_ENV"] = str(venv)
        env.update({
            "PORT": str(port),
            "APP_VERSION": release,
            "STAGEFLOW_ENV": self.env,
            "STAGEFLOW_RELEASE": release,
            "STAGEFLOW_INSTANCE": f"{self.instance_prefix}{color}",
            "PYTHONUNBUFFERED": "1",
        })
        return env

    def _release_pidfile(self) -> Path:
        return self.run_dir / "release.json"

    def run_release_command(self, release_dir: Path, release: str, venv: Path | None, timeout: float) -> str | None:
        """Run the web service's ``release`` command (migrations) once; return it or None.

        It runs like a service: its own process group, tagged ``STAGEFLOW_INSTANCE=…::release``,
        its pid and start time in ``run/<env>/release.json``. A deploy killed meanwhile leaves it
        running; the next deploy finds it there (:meth:`settle_release_command`) before it starts
        another, so two release commands of one environment never run at once.
        """
        import psutil

        from stageflow.runner import Result

        _, svc = self.ctx.config.web_service
        if not svc.release:
            return None
        make_dirs(self.log_dir, root=self.ctx.root)
        env = self.process_env(release, "release", 0, venv)
        argv = ["/bin/sh", "-c", svc.release]
        started = time.monotonic()
        # Raw output goes to a private file while it runs (a pipe would die with a killed deploy and
        # take the migration with it); it reaches release.log masked, like everything stageflow keeps.
        raw = self._release_output()
        raw.unlink(missing_ok=True)
        with os.fdopen(open_append(raw, root=self.ctx.root), "ab") as out:
            # Exactly the app's environment (process_env), nothing of stageflow's own.
            proc = self.runner.spawn(argv, cwd=release_dir, env=env, stdout=out,
                                     what=f"release command of {release}")
        pidfile = self._release_pidfile()
        info = ProcInfo("release", "release", proc.pid, psutil.Process(proc.pid).create_time(), release, None,
                        proc_stat(proc.pid)[1])
        _atomic_write(pidfile, json.dumps(info.__dict__), self.ctx.root)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _terminate_group(self.runner, proc.pid, 5.0)
            proc.wait()
            self._keep_release_output(release)
            raise OperationError(f"release command '{svc.release}' timed out after {timeout:.0f}s") from None
        finally:
            if proc.returncode is not None:
                pidfile.unlink(missing_ok=True)
        text = self._keep_release_output(release)
        if code != 0:
            brief = Result(tuple(argv), code, text, "", time.monotonic() - started).brief()
            raise OperationError(f"release command '{svc.release}' failed: {brief}")
        return svc.release

    def _release_output(self) -> Path:
        return self.run_dir / "release.out"

    def _keep_release_output(self, release: str) -> str:
        """Move the finished release command's raw output into ``logs/release.log``, masked; return it."""
        raw = self._release_output()
        data = read_file(raw, root=self.ctx.root, limit=64 << 20)
        text = masker.mask(data.decode("utf-8", "replace")) if data else ""
        with os.fdopen(open_append(self.log_dir / "release.log", root=self.ctx.root), "ab") as log:
            log.write(f"--- {release}: release command ---\n{text}".encode())
        raw.unlink(missing_ok=True)
        return text

    def release_command_running(self) -> ProcInfo | None:
        """The release command an interrupted deploy left running (pid and start time verified)."""
        info = _load_info(self._release_pidfile(), self.ctx.root)
        return info if info is not None and _alive(info) else None

    def settle_release_command(self, wait: float) -> str | None:
        """Let a release command left by a killed deploy finish (up to ``wait`` s), then stop its group.

        Returns what happened, or None when there was none. Waiting first: a migration stopped
        half-way is worse than one allowed to finish.
        """
        info = self.release_command_running()
        if info is None:
            self._release_pidfile().unlink(missing_ok=True)  # a dead one's record
            if self._release_output().exists():
                self._keep_release_output("(an interrupted deploy)")
            return None
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _alive(info):
            time.sleep(0.1)
        if _alive(info) and is_ours(info.pid, start_ticks=info.start_ticks, cwd_in=str(self.ctx.root)):
            _terminate_group(self.runner, info.pid, 5.0)
            outcome = f"stopped it after waiting {wait:.0f}s"
        else:
            outcome = "waited for it to finish"
        self._release_pidfile().unlink(missing_ok=True)
        self._keep_release_output(info.release)
        return (f"the release command of an interrupted deploy (pid {info.pid}, release {info.release}) "
                f"was still running: {outcome}")

    def _pidfile(self, service: str, color: str) -> Path:
        return self.run_dir / f"{service}-{color}.json"

    def start_color(self, release_dir: Path, release: str, color: str, venv: Path | None) -> list[ProcInfo]:
        """Start every service of ``release`` as ``color``."""
        import psutil

        make_dirs(self.log_dir, root=self.ctx.root)
        port = self.app_port(color)
        started: list[ProcInfo] = []
        for name, svc in self.ctx.config.services.items():
            if not svc.command:
                continue
            # {host} of an IPv6 address comes in brackets: `--bind {host}:{port}` must stay one address.
            host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
            cmd = svc.command.replace("{port}", str(port)).replace("{host}", host)
            log_path = self.log_dir / f"{name}-{color}.log"
            with os.fdopen(open_append(log_path, root=self.ctx.root), "ab") as log:
                log.write(f"--- {release} starting as {color} ---\n".encode())
                log.flush()
                # Under a supervisor that restarts the service if it dies after starting well.
                # -I: the app's variables (PYTHONPATH…) must not reach stageflow's own interpreter.
                record = self._restarts_file(name, color)
                record.unlink(missing_ok=True)
                proc = self.runner.spawn(
                    [sys.executable, "-I", "-m", "stageflow.runtimes.supervise", "--record", str(record), "--",
                     "/bin/sh", "-c", f"exec {cmd}"], cwd=release_dir,
                    env=self.process_env(release, color, port, venv), stdout=log, what=f"{name} ({color})",
                )
            info = ProcInfo(
                name, color, proc.pid, psutil.Process(proc.pid).create_time(), release,
                port if svc.port is not None else None, proc_stat(proc.pid)[1],
            )
            _atomic_write(self._pidfile(name, color), json.dumps(info.__dict__), self.ctx.root)
            started.append(info)
        return started

    def _restarts_file(self, service: str, color: str) -> Path:
        return self.run_dir / f"{service}-{color}.restarts.json"

    def restarts(self, color: str) -> dict[str, dict[str, object]]:
        """What the supervisors of ``color`` recorded, by service: restart count, last exit, gave up."""
        found: dict[str, dict[str, object]] = {}
        for name in self.ctx.config.services:
            try:
                doc = json.loads(read_file(self._restarts_file(name, color), root=self.ctx.root,
                                           limit=1 << 16) or b"null")
            except (StageflowError, ValueError):
                continue
            if isinstance(doc, dict):  # written by our supervisor; anything else is damage
                found[name] = doc
        return found

    def all_processes(self) -> list[ProcInfo]:
        """Live processes of every color: what really runs, whatever the record says."""
        return [p for color in COLORS for p in self.processes(color)]

    def processes(self, color: str) -> list[ProcInfo]:
        """Live processes recorded for ``color``."""
        out = []
        for name in self.ctx.config.services:
            info = self._read_pidfile(name, color)
            if info and _alive(info):
                out.append(info)
        return out

    def service_stats(self, window: float = 0.5) -> list[ServiceStats]:
        """CPU (percent of one core over ``window``) and memory of each live service, its children included.

        Implements the monitor's ``ResourceSource``; the supervisor and the processes it started count.
        """
        import psutil

        from stageflow.monitor.resources import ServiceStats

        def tree(info: ProcInfo) -> list[psutil.Process]:
            try:
                root = psutil.Process(info.pid)
                return [root, *root.children(recursive=True)]
            except psutil.Error:
                return []

        def cpu_seconds(procs: list[psutil.Process]) -> float:
            total = 0.0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
            return total

        found = [(info, tree(info)) for c in COLORS for info in self.processes(c)]
        before = [cpu_seconds(procs) for _, procs in found]
        start = time.monotonic()
        time.sleep(window)
        took = max(time.monotonic() - start, 1e-3)
        host_memory = psutil.virtual_memory().total
        out: dict[str, ServiceStats] = {}
        for (info, procs), cpu0 in zip(found, before, strict=True):
            rss = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    rss += p.memory_info().rss
            cpu = max(0.0, cpu_seconds(procs) - cpu0) / took * 100
            prev = out.get(info.service)
            if prev is not None:  # both colors alive mid-deploy: one figure per service
                cpu, rss = cpu + prev.cpu_percent, rss + prev.rss_bytes
            out[info.service] = ServiceStats(info.service, len(procs) + (prev.processes if prev else 0), cpu, rss,
                                             rss / host_memory * 100)
        return list(out.values())

    def _read_pidfile(self, service: str, color: str) -> ProcInfo | None:
        return _load_info(self._pidfile(service, color), self.ctx.root)

    def _pidfile_damaged(self, color: str) -> bool:
        """True when a pid file of ``color`` exists but cannot be trusted: its processes are kept."""
        for name in self.ctx.config.services:
            try:
                raw = read_file(self._pidfile(name, color), root=self.ctx.root, limit=1 << 16)
            except StageflowError:
                return True
            if raw is not None and _parse_pidfile(raw) is None:
                return True
        return False

    def _ours(self, info: ProcInfo) -> bool:
        """The pid file's process is a supervisor stageflow started for this app (checked before a signal)."""
        return _alive(info) and is_ours(info.pid, start_ticks=info.start_ticks,
                                        argv_has="stageflow.runtimes.supervise", cwd_in=str(self.ctx.root))

    def exited_color(self, color: str) -> str | None:
        """Describe a web process of ``color`` that already died (fast health failure), else None."""
        name, _ = self.ctx.config.web_service
        info = self._read_pidfile(name, color)
        if info is None or _alive(info):
            return None
        tail = self.log_tail(name, color, 3)
        return f"the {name} process exited" + (f"; last log lines: {tail}" if tail else "")

    def log_tail(self, service: str, color: str, lines: int = 5) -> str:
        """Last lines of a service log, joined with ' | '."""
        try:
            text = (self.log_dir / f"{service}-{color}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())

    def stop_color(self, color: str, drain: float = 10.0) -> int:
        """Stop every service of ``color``: TERM (graceful drain), then KILL. Returns how many stopped.

        A pid file that does not name our supervisor is never acted on; the processes it should have
        named are still found by the instance tag in their environment, so a damaged or planted pid
        file cannot leave this color's processes running unowned.
        """
        count = 0
        for name in self.ctx.config.services:
            info = self._read_pidfile(name, color)
            if info and self._ours(info):
                _terminate_group(self.runner, info.pid, drain)
                count += 1
            self._pidfile(name, color).unlink(missing_ok=True)
            self._restarts_file(name, color).unlink(missing_ok=True)
        for proc, tagged_color, _ in self._tagged():
            if tagged_color == color and self._kill_tagged(proc):
                count += 1
        return count

    def _tagged(self) -> Iterator[tuple[psutil.Process, str, dict[str, str]]]:
        """Live processes whose environment carries this env's instance tag: (process, color, environ)."""
        import psutil

        for proc in psutil.process_iter(["pid"]):
            try:
                environ = proc.environ()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
                continue
            tag = environ.get("STAGEFLOW_INSTANCE", "")
            if tag.startswith(self.instance_prefix):
                yield proc, tag[len(self.instance_prefix):], environ

    def _kill_tagged(self, proc: psutil.Process) -> bool:
        """Stop a tagged process: its whole group when it leads one (a supervisor: True), else it alone."""
        import psutil

        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            if os.getpgid(proc.pid) == proc.pid:
                _terminate_group(self.runner, proc.pid, 2.0)
                return True
            self.runner.signal(proc.pid, signal.SIGKILL)
        return False

    def sweep_pids(self, keep: Mapping[str, str] | None = None) -> list[int]:
        """Kill processes of this env that no pid file vouches for (left by a killed deploy).

        ``keep`` maps color → release that must survive. Returns killed pids.
        """
        keep = keep or {}
        vouched = set()
        for color in keep:
            vouched |= {p.pid for p in self.processes(color)}
        # A damaged pid file vouches for nothing, but never makes its processes orphans either.
        untrusted = {color for color in keep if self._pidfile_damaged(color)}
        killed: list[int] = []
        for proc, color, environ in self._tagged():
            if color in untrusted:
                continue
            if color in keep and (proc.pid in vouched or _ancestor_in(proc, vouched)
                                  or environ.get("STAGEFLOW_RELEASE") == keep[color]):
                continue
            self._kill_tagged(proc)
            killed.append(proc.pid)
        for color in COLORS:
            if color not in keep:
                for name in self.ctx.config.services:
                    self._pidfile(name, color).unlink(missing_ok=True)
        return killed

    # the Runtime protocol (stageflow.runtimes.base) -----------------------------------------------
    @property
    def zero_downtime(self) -> bool:
        """With nginx a new release starts beside the old one; without, it replaces it (downtime)."""
        return self.nginx_binary is not None

    def _placement(self, color: str) -> Placement:
        return Placement(color, {"port": self.app_port(color)})

    def _port(self, placement: Placement) -> int:
        port = placement.data.get("port")
        return port if isinstance(port, int) else self.app_port(placement.slot)

    def next_placement(self, current: Placement | None) -> Placement:
        """The other color (blue first)."""
        return self._placement(other_color(current.slot if current else None))

    def serving(self) -> tuple[Placement, str] | None:
        """The color the running nginx routes to, when its web process is alive."""
        found = self.serving_color()
        return (self._placement(found[0]), found[1]) if found else None

    def alive(self, placement: Placement) -> bool:
        """Some process of the color still runs."""
        return bool(placement.slot in COLORS and self.processes(placement.slot))

    def describe(self, action: str, placement: Placement | None) -> str:
        """Plan words: venvs, colors, ports, nginx."""
        slot = placement.slot if placement else "-"
        port = self._port(placement) if placement else None
        if action == "prepare":
            return "and its virtualenv"
        if action == "start":
            return f"as {slot} on port {port}"
        if action == "probe":
            return self.probe_url(placement) if placement else "-"
        if action == "cutover":
            return f"point nginx upstream-{self.env}.conf at port {port}, nginx -t, reload"
        if action == "stop":
            return f"({slot})"
        if action == "proxy":
            return "nginx"
        if action == "no-proxy":
            return "no nginx: downtime"
        return action

    def preflight(self, new: Placement, active: Placement | None) -> Check:
        """nginx (else a downtime warning), a free port for the new color, TLS files for https."""
        from stageflow.deploy.preflight import Check

        url = self.ctx.env.url
        check = _check_ports(self.nginx_binary, self._port(new), self.port_in_use,
                              self._port(active) if active else None)
        if check.status != "fail" and self.nginx_binary and not self.nginx_running() and self.port_in_use(
                self.ctx.env.url_port):
            if self.orphan_proxy_workers():
                check = Check("runtime", "warn", f"{check.reason}; this env's nginx master died and its "
                              f"workers still hold port {self.ctx.env.url_port}: they are replaced at cutover")
            else:
                check = Check("runtime", "fail", f"port {self.ctx.env.url_port} of {url} is in use by "
                              "another program; stop it or change the URL")
        if check.status != "fail" and self.https:
            try:
                if self.nginx_binary is None:
                    raise OperationError(f"{url} is https: serving it needs nginx (apt-get install nginx)")
                check = Check("runtime", check.status, f"{check.reason}; TLS with {self.tls_files()[0]}")
            except OperationError as exc:
                check = Check("runtime", "fail", str(exc))
        if check.status != "fail" and self.nginx_binary:
            try:
                self._site_options()  # a proxy: value nginx cannot take fails here, before anything starts
            except StageflowError as exc:
                check = Check("runtime", "fail", f"{exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
            shut = self._shut_out() if os.geteuid() == 0 else None
            if check.status != "fail" and shut is not None:
                check = Check("runtime", "warn", f"{check.reason}; nginx's workers run as root: {shut} "
                              "keeps other users out, so 'nobody' could not read htpasswd or its temp files "
                              f"(chmod o+x {shut} to run them as nobody)")
        return check

    def sweep_orphans(self, keep: Placement | None) -> list[str]:
        """Processes of this env no pid file vouches for (left by a killed deploy), as pids."""
        return [str(pid) for pid in self.sweep_pids({keep.slot: "kept"} if keep else {})]

    def settle(self, placement: Placement) -> Placement:
        """A color's record does not change once it runs."""
        return placement

    def repair_routing(self, placement: Placement) -> str | None:
        """A deploy killed between cutover and record can leave nginx on a swept color: point it back."""
        port = self._port(placement)
        if self.nginx_binary and self.nginx_running() and self.proxied_port() != port:
            self.point_proxy(port)
            return f"proxy pointed at port {self.proxied_port()} again"
        return None

    def _venv(self, release_dir: Path) -> Path | None:
        return self.ensure_venv(release_dir, self.ctx.config.releases.requirements)

    def prepare(self, release: str, release_dir: Path) -> str:
        """The release's virtualenv, shared by every release and env with the same requirements file:
        says ``built in …`` or ``reused``, truthfully."""
        prepared = self.prepare_venv(release_dir, self.ctx.config.releases.requirements)
        return prepared.describe() if prepared else "no venv (no requirements file)"

    def release_command(self, release: str, release_dir: Path, timeout: float) -> str | None:
        """The release command in the release's directory and venv, with the app's variables only."""
        return self.run_release_command(release_dir, release, self._venv(release_dir), timeout=timeout)

    def start(self, release: str, release_dir: Path, placement: Placement) -> str:
        """Every service of the release as the placement's color, each under a supervisor."""
        procs = self.start_color(release_dir, release, placement.slot, self._venv(release_dir))
        return f"{len(procs)} process(es) as {placement.slot} on port {self._port(placement)}: " + ", ".join(
            f"{p.service}[{p.pid}]" for p in procs)

    def probe_url(self, placement: Placement) -> str:
        """The web process of the color, directly."""
        health = self.ctx.config.web_service[1].health
        return f"http://{host_port(self.listen_host, self._port(placement))}{health.path if health else '/'}"

    def exited(self, placement: Placement) -> str | None:
        """The web process of the color died (with its last log lines)."""
        return self.exited_color(placement.slot)

    def cut_over(self, placement: Placement) -> str:
        """Rewrite the upstream file, ``nginx -t``, reload."""
        port = self._port(placement)
        how = self.point_proxy(port)
        return f"nginx upstream-{self.env}.conf → port {port}, {how}"

    def public_probe(self) -> tuple[str, Prober]:
        """Through nginx (https when the URL is, trusting exactly the certificate it serves)."""
        from stageflow.deploy.health import http_probe

        health = self.ctx.config.web_service[1].health
        tls = self.https and self.nginx_binary is not None
        url = f"{'https' if tls else 'http'}://{host_port(self.listen_host, self.ctx.env.url_port)}" + (
            health.path if health else "/")
        # The probe token makes nginx say which upstream answered (status compares it with the record).
        headers = self.probe_headers() if self.nginx_binary else {}
        cert = self.tls_paths()[0] if tls else None
        return url, lambda u, expect, timeout: http_probe(u, expect, timeout, cafile=cert, headers=headers)

    def stop(self, placement: Placement, drain: float) -> int:
        """TERM every process of the color (graceful drain), then KILL."""
        return self.stop_color(placement.slot, drain)

    def status(self, placement: Placement | None) -> RuntimeStatus:
        """Live processes of every color, and what the supervisors of the placement's color recorded."""
        procs = self.all_processes()
        restarts = self.restarts(placement.slot) if placement and placement.slot in COLORS else {}
        return RuntimeStatus(
            len(procs), sum(_count(r) for r in restarts.values()),
            tuple(_describe_restarts(service, r) for service, r in restarts.items()),
            tuple(sorted({p.release for p in procs})),
        )

    def routed(self, upstream: str | None) -> tuple[Placement, str] | None:
        """The color nginx routes to: the port its upstream header named, else its upstream file's."""
        if self.nginx_binary is None:
            return None
        port: int | None = None
        if upstream:
            try:
                port = int(upstream.split(",")[-1].strip().rsplit(":", 1)[1])
            except (IndexError, ValueError):
                port = None
        if port is None and self.nginx_running():
            port = self.proxied_port()
        found = self.release_on_port(port)
        return (self._placement(found[0]), found[1]) if found else None

    def exec_command(self, placement: Placement, release: str, release_dir: Path, service: str,
                     argv: Sequence[str]) -> tuple[list[str], dict[str, str] | None, Path | None]:
        """The command in the serving release's directory and venv, with the app's variables only."""
        venv = self._venv(release_dir)
        env = self.process_env(release, placement.slot, self._port(placement), venv)
        env.pop("STAGEFLOW_INSTANCE")  # a one-off command is no service: the orphan sweep leaves it alone
        return list(argv), env, release_dir

    def logs_command(self, placement: Placement, service: str | None, follow: bool, since: str | None,
                     lines: int) -> list[str]:
        """``tail`` of ``run/<env>/logs/<service>-<color>.log`` (``since`` is not supported: no timestamps)."""
        if since:
            raise OperationError("--since needs timestamped logs, which the local runtime does not write",
                                 hint="leave out --since, or use -n LINES")
        names = [service] if service else list(self.ctx.config.services)
        files = [str(self.log_dir / f"{n}-{placement.slot}.log") for n in names
                 if (self.log_dir / f"{n}-{placement.slot}.log").exists()]
        if not files:
            raise OperationError(f"no logs of {service or 'any service'} in {self.env} ({placement.slot})")
        return ["tail", "-n", str(lines), *(["-F"] if follow else []), *files]

    def database(self, target: DatabaseTarget) -> tuple[DatabaseTarget, Runner] | None:
        """The database as configured, with the host's own client tools."""
        return target, self.runner

    def down(self) -> int:
        """Both colors, any orphan, then nginx."""
        drain = self.ctx.env.drain
        n = self.stop_color("blue", drain) + self.stop_color("green", drain)
        n += len(self.sweep_pids({}))
        self.stop_proxy()
        return n

    def host_lock(self) -> None:
        """None: the local runtime's target is this machine, whose state database already holds the lock."""
        return None

    def prune(self, keep: Collection[str]) -> list[str]:
        """Nothing: a release's files are its directory (pruned with its record), and virtualenvs are
        shared by content (one per requirements hash)."""
        del keep
        return []

    def port_in_use(self, port: int) -> bool:
        """True when something listens on ``port`` at the listen host."""
        import socket

        with socket.socket(socket.AF_INET6 if ":" in self.listen_host else socket.AF_INET) as s:
            s.settimeout(0.5)
            return s.connect_ex((self.listen_host, port)) == 0


def _check_ports(nginx: str | None, port: int, port_busy: Callable[[int], bool], active_port: int | None) -> Check:
    """The proxy is available (else a warning: the deploy will have downtime) and the new port is free."""
    from stageflow.deploy.preflight import Check

    if port != active_port and port_busy(port):
        return Check("runtime", "fail", f"port {port} is in use by another program; free it or set app_ports")
    if nginx is None:
        return Check("runtime", "warn", "nginx not found: stop-then-start deploy with downtime (apt-get install nginx)")
    return Check("runtime", "pass", f"nginx at {nginx}; new release will listen on port {port}")


def _executable(binary: str, root: Path) -> str:
    """``nginx.binary`` as configured: an existing executable file (a name on PATH, or a path), or ConfigError."""
    path = shutil.which(binary) if "/" not in binary else None
    if path is None and "/" in binary:
        candidate = _abs(root, binary)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            path = str(candidate)
    if path is None or not Path(path).is_file():
        raise ConfigError(f"stageflow.yml: nginx.binary: {binary!r} is not an executable file",
                          hint="name the nginx binary, e.g. /usr/sbin/nginx, or leave the key out")
    return path


def _abs(root: Path, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() else root / p


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cert_fresh(path: Path, days: int = 14) -> bool:
    """True when ``path`` holds a certificate valid for at least ``days`` more days."""
    import datetime as dt

    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return False
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=days)


def _self_signed(cert_path: Path, key_path: Path, host: str, root: Path | None = None) -> None:
    """A 90-day self-signed certificate for a loopback rehearsal (key 0600)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        ip = ipaddress.ip_address(host)
        if ip != ipaddress.ip_address("127.0.0.1"):
            names.append(x509.IPAddress(ip))
    except ValueError:
        if host != "localhost":
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"stageflow local {host}")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    write_file(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()),
               root=key_path.parent if root is None else root, mode=0o600)
    _atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM).decode(), root)


def _atomic_write(path: Path, text: str, root: Path | None = None) -> None:
    # Everything under .stageflow/ is private (0600) and written without following any symlink
    # (nor, under ``root``, through a symlinked directory).
    write_file(path, text, root=path.parent if root is None else root, mode=0o600)


def _make_read_only(tree: Path) -> None:
    """Drop every write bit below ``tree`` (symlinks untouched; directories stay listable)."""
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in filenames + dirnames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                p.chmod(p.stat().st_mode & ~0o222)
    tree.chmod(tree.stat().st_mode & ~0o222)


def _make_writable(tree: Path) -> None:
    """Give the owner write access again below ``tree`` so it can be removed."""
    tree.chmod(tree.stat().st_mode | 0o200)
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in filenames + dirnames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | 0o200)


def _load_info(path: Path, root: Path | None = None) -> ProcInfo | None:
    """A pid file's record; None when missing or damaged (read without following a symlink)."""
    try:
        return _parse_pidfile(read_file(path, root=path.parent if root is None else root, limit=1 << 16))
    except StageflowError:
        return None


def _alive(info: ProcInfo) -> bool:
    """The recorded process still runs (same pid *and* start time: pids get reused) and is no zombie.

    Reads ``/proc`` directly when the pid file has the start ticks: ``status`` checks every process,
    and importing psutil for it costs ~30 ms of a 300 ms start-up budget.
    """
    if info.start_ticks is not None:
        state, ticks = proc_stat(info.pid)
        if state != NO_PROCFS:
            return ticks == info.start_ticks and state != "Z"
    import psutil

    try:
        p = psutil.Process(info.pid)
        return bool(abs(p.create_time() - info.create_time) < 1.0 and p.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _ancestor_in(proc: object, pids: set[int]) -> bool:
    import psutil

    assert isinstance(proc, psutil.Process)
    try:
        return any(p.pid in pids for p in proc.parents())
    except psutil.NoSuchProcess:
        return False


def _pid_from_file(path: Path, root: Path | None = None) -> int | None:
    try:
        raw = read_file(path, root=path.parent if root is None else root, limit=64)
        pid = int((raw or b"").strip())
    except (StageflowError, ValueError):
        return None
    return pid if 1 < pid < 1 << 22 and running(pid) else None


def _parse_pidfile(raw: bytes | None) -> ProcInfo | None:
    """A pid file's record, or None when absent or not a well-formed record (never guessed at)."""
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        info = ProcInfo(**doc)
    except (ValueError, TypeError):
        return None
    ok = (type(info.pid) is int and 1 < info.pid < 1 << 22 and isinstance(info.create_time, int | float)
          and (info.start_ticks is None or type(info.start_ticks) is int) and isinstance(info.release, str)
          and isinstance(info.service, str) and isinstance(info.color, str))
    return info if ok else None


def _terminate_group(runner: Runner, pid: int, drain: float) -> None:
    """TERM the process group led by ``pid``, wait up to ``drain`` seconds, then KILL it."""
    import psutil

    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    runner.signal(pgid, signal.SIGTERM, group=True)
    deadline = time.monotonic() + drain
    while time.monotonic() < deadline:
        try:
            p = psutil.Process(pid)
            if p.status() == psutil.STATUS_ZOMBIE:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    runner.signal(pgid, signal.SIGKILL, group=True)


def _count(record: Mapping[str, object]) -> int:
    value = record.get("restarts")
    return value if isinstance(value, int) else 0  # a damaged record counts nothing, it does not crash


def _describe_restarts(service: str, record: Mapping[str, object]) -> str:
    last = f"last: {record.get('last_exit')} at {str(record.get('at', '?'))[:19]}"
    if record.get("gave_up"):
        return f"{service}: supervisor gave up after {record.get('restarts')} restart(s) ({last})"
    return f"{service} restarted {record.get('restarts')}× ({last})"
