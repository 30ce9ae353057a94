"""The one place that runs argv lists: timeouts, secret masking and logging.

Builders in :mod:`stageflow.commands` return argv lists; only this module executes them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from stageflow.errors import OperationError
from stageflow.masking import masker


@dataclass(frozen=True)
class Result:
    """Outcome of one command."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.returncode == 0

    def brief(self, limit: int = 300) -> str:
        """A one-line, masked summary of the output, for error messages."""
        text = [ln.strip() for ln in (self.stderr.strip() or self.stdout.strip()).splitlines() if ln.strip()]
        # The verdict is the last line that names an error (a Python traceback ends with its exception,
        # psql and git put theirs first and advice after); otherwise the first line.
        errors = [ln for ln in text if "error" in ln.lower() or "fatal" in ln.lower()]
        line = errors[-1] if errors else (text[0] if text else f"exit code {self.returncode}")
        return masker.mask(line)[:limit]


LogFn = Callable[[str], None]


#: Variables of stageflow's own that no child inherits (a caller may still pass one explicitly).
_OWN_VARS = frozenset({"STAGEFLOW_MASTER_KEY"})


@dataclass
class Runner:
    """Runs commands, masking secrets in everything it logs.

    ``env`` is merged over the inherited environment for every call; ``log`` receives
    one masked line per command.
    """

    env: Mapping[str, str] = field(default_factory=dict)
    log: LogFn | None = None
    default_timeout: float = 600.0

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        inherit_env: bool = True,
        timeout: float | None = None,
        stdin_path: Path | None = None,
        stdout_path: Path | None = None,
        check: bool = False,
        what: str | None = None,
    ) -> Result:
        """Run ``argv`` and return its :class:`Result`.

        With ``check`` a non-zero exit raises :class:`OperationError` naming ``what``.
        ``stdout_path`` streams standard output into a file (large dumps never sit in memory).
        ``inherit_env=False`` gives the child exactly ``env`` (plus the runner's own, e.g.
        ``DOCKER_HOST``): an app's processes never see stageflow's environment (its master key).
        """
        full_env = self.child_env(env, inherit_env)
        masked = masker.mask(shlex.join(argv))
        if self.log:
            self.log(f"$ {masked}")
        started = time.monotonic()
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
        stdout = open(stdout_path, "wb") if stdout_path else subprocess.PIPE  # noqa: SIM115
        try:
            proc = subprocess.run(
                list(argv),
                cwd=cwd,
                env=full_env,
                stdin=stdin,
                stdout=stdout,
                stderr=subprocess.PIPE,
                timeout=timeout or self.default_timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise OperationError(
                f"{what or argv[0]}: command not found: {argv[0]}",
                hint="install it or put it on PATH",
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise OperationError(
                f"{what or argv[0]}: timed out after {exc.timeout:.0f}s: {masked}"
            ) from exc
        finally:
            if stdin_path:
                stdin.close()  # type: ignore[union-attr]
            if stdout_path:
                stdout.close()  # type: ignore[union-attr]
        out = proc.stdout.decode("utf-8", "replace") if isinstance(proc.stdout, bytes) else ""
        err = proc.stderr.decode("utf-8", "replace") if isinstance(proc.stderr, bytes) else ""
        result = Result(tuple(argv), proc.returncode, out, err, time.monotonic() - started)
        if self.log and not result.ok:
            self.log(f"  exit {result.returncode}: {result.brief()}")
        if check and not result.ok:
            raise OperationError(f"{what or argv[0]} failed: {result.brief()}")
        return result

    def child_env(self, env: Mapping[str, str] | None, inherit_env: bool = True) -> dict[str, str]:
        """The environment a child gets: stageflow's own (unless ``inherit_env`` is off), the runner's, ``env``.

        What stageflow keeps to itself (the master key of encrypted env files) is never inherited: the
        tools it runs (git, nginx, docker, pg_dump) have no use for it, and a docker or compose process
        would hand its environment on to whatever its files interpolate.
        """
        full_env = {k: v for k, v in os.environ.items() if k not in _OWN_VARS} if inherit_env else {}
        full_env.update(self.env)
        if env:
            full_env.update(env)
        return full_env

    def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | str | None,
        env: Mapping[str, str],
        stdout: IO[bytes],
        what: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the background, in a session of its own, with exactly ``env``.

        Services outlive the command that started them; they get no terminal, and nothing of
        stageflow's own environment.
        """
        if self.log:
            self.log(f"$ {masker.mask(shlex.join(argv))} &")
        try:
            return subprocess.Popen(
                list(argv), cwd=cwd, env=self.child_env(env, inherit_env=False), stdin=subprocess.DEVNULL,
                stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise OperationError(f"{what or argv[0]}: command not found: {argv[0]}",
                                 hint="install it or put it on PATH") from exc

    def signal(self, pid: int, sig: int, *, group: bool = False, what: str | None = None) -> bool:
        """Send ``sig`` to ``pid`` (its process group with ``group``); False when it is already gone.

        Callers verify first that the pid is theirs (pid files are not trusted).
        """
        import contextlib
        import signal as signals

        if self.log:
            self.log(f"$ kill -{signals.Signals(sig).name.removeprefix('SIG')} {'-' if group else ''}{pid}"
                     + (f"  # {what}" if what else ""))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
            return True
        return False

    def exchange(self, argv: Sequence[str], data: bytes, *, timeout: float, limit: int = 1 << 17) -> Result:
        """Run ``argv`` as a byte stream: write ``data``, read its output until it ends (at most ``limit``
        bytes, ``timeout`` in all), and only then close its input.

        For a TCP stream carried by a child (``ssh -W host:port``): closing the input right after the
        request would reach the server as the client hanging up, and nginx drops a proxied request
        whose client did. Not logged: health probes run every second. A timeout is a Result with
        return code -1 (the child is killed), never an exception.
        """
        import selectors

        started = time.monotonic()
        try:
            proc = subprocess.Popen(list(argv), env=self.child_env(None), stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except FileNotFoundError as exc:
            raise OperationError(f"{argv[0]}: command not found", hint="install it or put it on PATH") from exc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        out, err = bytearray(), bytearray()
        code = -1
        try:
            try:
                proc.stdin.write(data)
                proc.stdin.flush()
            except BrokenPipeError:
                pass
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ, out)
                sel.register(proc.stderr, selectors.EVENT_READ, err)
                open_streams = 2
                while open_streams and len(out) < limit:
                    left = timeout - (time.monotonic() - started)
                    if left <= 0:
                        break
                    for key, _ in sel.select(left):
                        chunk = os.read(key.fd, 65536)
                        if chunk:
                            key.data.extend(chunk)
                        else:
                            sel.unregister(key.fileobj)
                            open_streams -= 1
                if not open_streams:
                    code = proc.wait(timeout=max(0.1, timeout - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            pass
        finally:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                stream.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return Result(tuple(argv), code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                      time.monotonic() - started)

    def call(self, argv: Sequence[str], *, cwd: Path | str | None = None, env: Mapping[str, str] | None = None,
             inherit_env: bool = True, what: str | None = None,
             lines: Callable[[str], str] | None = None) -> int:
        """Run ``argv`` attached to this terminal (``exec``, ``logs -f``); return its exit code.

        With ``lines``, its standard output goes through that function a line at a time on its way
        to ours (``logs``: what the app printed is masked before it reaches the console).
        """
        if self.log:
            self.log(f"$ {masker.mask(shlex.join(argv))}")
        try:
            if lines is None:
                return subprocess.call(list(argv), cwd=cwd, env=self.child_env(env, inherit_env))
            with subprocess.Popen(list(argv), cwd=cwd, env=self.child_env(env, inherit_env),
                                  stdout=subprocess.PIPE) as proc:
                assert proc.stdout is not None
                try:
                    for raw in proc.stdout:
                        sys.stdout.write(lines(raw.decode("utf-8", "replace")))
                        sys.stdout.flush()
                except BaseException:
                    proc.terminate()  # ^C on `logs -f`, or our stdout closed: the tail goes too
                    raise
                return proc.wait()
        except FileNotFoundError as exc:
            raise OperationError(f"{what or argv[0]}: command not found: {argv[0]}",
                                 hint="install it or put it on PATH") from exc
