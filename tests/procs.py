"""Helpers for integration tests that run real ``swarmcast`` processes on loopback.

Every process started here is killed and reaped when its context exits, pass or fail, and its stderr goes to a
file whose tail is put in failure messages, so a test that fails tells you what the process said.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ProcessExitedError",
    "SwarmcastProcess",
    "free_port",
    "swarmcast_process",
    "wait_for_port",
]

LOOPBACK = "127.0.0.1"
_STDERR_TAIL = 4000
_PORT_RANGE = (20000, 32768)  # below Linux's default ephemeral range, 32768-60999
_PORT_TRIES = 50


class ProcessExitedError(RuntimeError):
    """The process under test ended while we were waiting for it."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free on every IPv4 address a moment ago (racy by nature, but rarely lost).

    Free on the wildcard address, not just on ``host``: a node told ``--bind 0.0.0.0`` fails if any loopback address
    holds the port, and other tests' clients bind 127.0.0.2 and such. The pick is below the kernel's ephemeral range
    (32768 and up), where the many outgoing connections of parallel tests take their local ports, so only another
    pick here can collide, not any connection.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
    rng = random.Random()  # seeded from the OS: xdist workers must not walk the same sequence
    for _ in range(_PORT_TRIES):
        port = rng.randrange(*_PORT_RANGE)
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((wildcard, port))
            except OSError:
                continue
            return port
    with socket.socket(family, socket.SOCK_STREAM) as sock:  # the range is crowded: the kernel's pick
        sock.bind((wildcard, 0))
        picked: int = sock.getsockname()[1]
        return picked


def _tail(path: Path, limit: int = _STDERR_TAIL) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return text if len(text) <= limit else "…" + text[-limit:]


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    *,
    process: SwarmcastProcess | None = None,
) -> None:
    """Return once ``host:port`` accepts TCP connections; raise TimeoutError after ``timeout`` seconds.

    With ``process``, stop early (ProcessExitedError, with its stderr) if it exits, instead of waiting it out.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.popen.poll() is not None:
            raise ProcessExitedError(
                f"{process.describe()} exited with {process.popen.returncode} before {host}:{port} accepted "
                f"connections; stderr:\n{process.stderr_tail()}"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        if time.monotonic() >= deadline:
            detail = f"; stderr of {process.describe()}:\n{process.stderr_tail()}" if process is not None else ""
            raise TimeoutError(f"{host}:{port} did not accept connections within {timeout} s{detail}")
        time.sleep(0.05)


@dataclass
class SwarmcastProcess:
    """A running ``python -m swarmcast.cli ...``."""

    args: tuple[str, ...]
    popen: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def describe(self) -> str:
        return f"swarmcast {' '.join(self.args)} (pid {self.popen.pid})"

    def stderr_tail(self) -> str:
        return _tail(self.stderr_path)

    def wait_for_port(self, host: str, port: int, timeout: float = 30.0) -> None:
        wait_for_port(host, port, timeout, process=self)

    def signal(self, signum: signal.Signals) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then wait up to ``timeout`` s; returns the exit code. Raises TimeoutError (after SIGKILL)."""
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(
                f"{self.describe()} did not exit within {timeout} s of SIGTERM; stderr:\n{self.stderr_tail()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL (if still running) and reap."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()


@contextlib.contextmanager
def swarmcast_process(
    args: Sequence[str],
    *,
    stderr_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    wait_port: tuple[str, int] | None = None,
    start_timeout: float = 30.0,
    stop_timeout: float = 5.0,
    command: Sequence[str] | None = None,
) -> Iterator[SwarmcastProcess]:
    """Run ``swarmcast ARGS`` (this interpreter, ``-m swarmcast.cli``) for the duration of the block.

    ``command`` replaces ``python -m swarmcast.cli`` (e.g. an ``acestreamengine`` console script).

    stdout is discarded, stderr goes to ``stderr_path``. With ``wait_port`` the block is entered only once that
    address accepts connections. On exit the process gets SIGTERM, then SIGKILL after ``stop_timeout`` s, and is
    always reaped; a test that wants to check a clean shutdown calls ``stop()`` itself inside the block.
    """
    full_env = dict(os.environ if env is None else env)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    stderr_path.parent.mkdir(parents=True, exist_ok=True)
    with stderr_path.open("wb") as stderr:
        popen = subprocess.Popen(
            [*(command or (sys.executable, "-m", "swarmcast.cli")), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=full_env,
            cwd=cwd,
        )
    process = SwarmcastProcess(tuple(args), popen, stderr_path)
    try:
        if wait_port is not None:
            process.wait_for_port(*wait_port, timeout=start_timeout)
        yield process
    finally:
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(stop_timeout)
            except subprocess.TimeoutExpired:
                popen.kill()
        popen.wait()
