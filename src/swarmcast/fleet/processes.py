"""Node processes on this server: pid files, the run lock, starting and stopping.

A node is found by its pid file in ``dirs.pid`` (``acestreamengine-<port>.pid``, the name the engine writes) and
counts as running only if that pid is alive and the kernel calls it ``acestreamengine`` (a pid the system gave to
another program since is not ours to signal). Stopping is SIGTERM, then SIGKILL after a timeout; the pid file is
removed afterwards whoever was meant to remove it. The lock is an ``flock`` on ``dirs.state/fleet.lock``: held
for a whole run, released by the kernel if the run dies, so overlapping cron runs never act at once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from swarmcast.files import UnreadableFileError, read_regular_file

PID_FILE = re.compile(r"(?:acestreamengine|acestream)-(\d{1,5})\.pid")
PROCESS_NAME = "acestreamengine"
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
LOCK_NAME = "fleet.lock"


class LockedError(Exception):
    """Another fleet run holds the lock."""


@dataclass(frozen=True)
class PidFile:
    port: int
    pid: int | None  # None: the file does not hold a pid
    path: Path


def read_pid_files(pid_dir: Path) -> dict[int, PidFile]:
    found: dict[int, PidFile] = {}
    if not pid_dir.is_dir():
        return found
    for path in sorted(pid_dir.iterdir()):
        match = PID_FILE.fullmatch(path.name)
        if match is None:
            continue
        port = int(match.group(1))
        try:
            text = read_regular_file(path, 64)[:64].decode("ascii", "replace").strip()
        except UnreadableFileError:
            text = ""
        pid = int(text) if text.isdigit() and 1 < int(text) < 2**31 else None
        # Both names for one port (a renamed engine): the newest file wins.
        if port not in found or found[port].pid is None:
            found[port] = PidFile(port, pid, path)
    return found


def process_name(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def serves_port(pid: int, port: int) -> bool:
    """``pid``'s command line has ``--port PORT``: with 50 engines of one name per server, a pid reused by another
    of them must not be taken (and stopped) for the node of a stale pid file."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    wanted = str(port).encode()
    return any(a == b"--port" and b == wanted for a, b in itertools.pairwise(words)) or \
        f"--port={port}".encode() in words  # fmt: skip


def alive(pid: int, port: int | None = None) -> bool:
    """``pid`` runs and is an engine (not a reused pid, not a zombie); with ``port``, the engine of that port."""
    if process_name(pid) != PROCESS_NAME or is_zombie(pid):
        return False
    return port is None or serves_port(pid, port)


def port_busy(host: str, port: int) -> bool:
    """Something listens on ``host:port`` (we try to bind it, then let go)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            return error.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


@contextlib.contextmanager
def run_lock(state_dir: Path) -> Iterator[Path]:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            raise LockedError(f"another fleet run (pid {holder or '?'}) holds {path}; nothing done") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing releases the flock


def start(argv: tuple[str, ...], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a node detached (its own session: a cron shell's logout or the fleet's exit does not stop it, what
    streaming-utils' ``nohup`` is for), stdout and stderr appended to its log as streaming-utils does."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                close_fds=True, start_new_session=True)  # fmt: skip


def stop(pid: int, pid_file: Path | None, timeout: float = STOP_TIMEOUT,
         child: subprocess.Popen[bytes] | None = None, port: int | None = None) -> str:  # fmt: skip
    """SIGTERM, SIGKILL after ``timeout`` s; the pid file is gone afterwards. Returns how it ended.

    With ``port`` only the engine serving that port is signalled (a stale pid file's pid may be another node's)."""
    how = "was not running"
    if alive(pid, port):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        how = "stopped (SIGTERM)"
        deadline = time.monotonic() + timeout
        while _running(pid, child) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _running(pid, child):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            how = f"killed (SIGKILL after {timeout:g} s)"
            deadline = time.monotonic() + 5
            while _running(pid, child) and time.monotonic() < deadline:
                time.sleep(0.05)
    if pid_file is not None:
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
    return how


def _running(pid: int, child: subprocess.Popen[bytes] | None) -> bool:
    if child is not None and child.pid == pid:
        return child.poll() is None
    return alive(pid)
