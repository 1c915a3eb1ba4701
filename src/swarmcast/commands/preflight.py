"""Checks run before a node touches anything: its ports, its directories, its log file.

A node that cannot listen, or cannot write where it was told to, must say so in one line naming the flag and the
value, and leave nothing behind (no key, no transport file, no pid file, no log file). The node creates those only
once it runs, so these checks come first. Each check is the real operation where that is harmless: the port is
bound (and released), a directory is written to (a temporary file, removed at once), because permission bits do
not tell the truth to root or on read-only file systems. A port taken in the instant between the check and the
node's own bind still fails, later and less tidily; that race is not worth a lock.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import tempfile
from pathlib import Path


class UsageError(Exception):
    """A flag whose value cannot be used; ``str()`` is the whole one-line message (``argument --port: ...``)."""

    def __init__(self, flag: str, value: object, reason: str) -> None:
        super().__init__(f"argument {flag}: {value!s}: {reason}")
        self.flag = flag


def check_listen(bind: str, port: int, *, bind_flag: str = "--bind", port_flag: str = "--port") -> None:
    """Bind ``bind:port`` as asyncio's server will (SO_REUSEADDR, every address ``bind`` resolves to), then let go."""
    if port == 0:
        return  # any free port
    try:
        infos = socket.getaddrinfo(bind or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise UsageError(bind_flag, bind, f"not an address to listen on ({error.strerror})") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
                sock.listen(1)
            except OSError as error:
                if error.errno == errno.EADDRNOTAVAIL:
                    raise UsageError(bind_flag, bind, "no such address on this machine") from None
                reason = "already in use" if error.errno == errno.EADDRINUSE else error.strerror or str(error)
                raise UsageError(port_flag, port, f"cannot listen on {bind}:{port}: {reason}") from None


def _probe_write(directory: Path) -> str | None:
    """Why ``directory`` cannot take a new file, or None; the probe file is gone when this returns."""
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".swarmcast-probe-"):
            pass
    except OSError as error:
        return error.strerror or str(error)
    return None


def check_directory(flag: str, path: Path | None) -> None:
    """``path`` is a directory we can list and write in, or one we could create (its nearest existing parent is)."""
    if path is None:
        return
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        if existing.is_symlink():
            raise UsageError(flag, path, f"{existing} is a dangling symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        where = "is not a directory" if existing == path else f"cannot be created: {existing} is not a directory"
        raise UsageError(flag, path, where)
    if not os.access(existing, os.R_OK | os.X_OK):
        raise UsageError(flag, path, "cannot be read (permission denied)" if existing == path
                         else f"cannot be created in {existing} (permission denied)")  # fmt: skip
    reason = _probe_write(existing)
    if reason is not None:
        raise UsageError(flag, path, f"cannot be written: {reason}" if existing == path
                         else f"cannot be created in {existing}: {reason}")  # fmt: skip


def check_readable_file(flag: str, path: Path) -> None:
    """An existing file the node will read (a key it must reuse: replacing it would be a new broadcast)."""
    if not path.exists():
        return
    if not path.is_file():
        raise UsageError(flag, path, "is not a regular file")
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        raise UsageError(flag, path, f"cannot be read: {error.strerror or error}") from None


def check_log_file(flag: str, path: Path | None) -> None:
    if path is None:
        return
    if path.exists():
        if path.is_dir():
            raise UsageError(flag, path, "is a directory")
        try:
            with path.open("ab"):
                pass
        except OSError as error:
            raise UsageError(flag, path, f"cannot be written: {error.strerror or error}") from None
        return
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(flag, path, f"{parent} is not a directory")
    reason = _probe_write(parent)
    if reason is not None:
        raise UsageError(flag, path, f"cannot be created in {parent}: {reason}")


def preflight_node(args: argparse.Namespace) -> None:
    """Every check of a node role's flags (source, support, start node): run before anything is created."""
    check_log_file("--log-file", args.log_file)
    for flag in ("--pid-file-dir", "--state-dir", "--cache-dir", "--publish-dir", "--metadata-dir"):
        check_directory(flag, getattr(args, flag[2:].replace("-", "_"), None))
    metadata_dir = getattr(args, "metadata_dir", None) or getattr(args, "state_dir", None)
    name = getattr(args, "name", None)
    if metadata_dir is not None and name:
        flag = "--metadata-dir" if getattr(args, "metadata_dir", None) else "--state-dir"
        for suffix in (".sauth", ".restart"):
            check_readable_file(flag, metadata_dir / f"{name}{suffix}")
    url = getattr(args, "url", None)
    if url and "://" not in url:  # a local transport file (support and start nodes)
        if not Path(url).exists():
            raise UsageError("--url", url, "no such file")
        check_readable_file("--url", Path(url))
    host = getattr(args, "host", None)
    bind_flag, bind = ("--host", host) if host else ("--bind", args.bind)
    check_listen(bind, args.port, bind_flag=bind_flag, port_flag="--port")


def preflight_engine(args: argparse.Namespace) -> None:
    check_log_file("--log-file", args.log_file)
    for flag in ("--pid-file-dir", "--cache-dir"):
        check_directory(flag, getattr(args, flag[2:].replace("-", "_"), None))
    check_listen(args.http_bind, args.http_port, bind_flag="--http-bind", port_flag="--http-port")
    check_listen(args.bind, args.port, bind_flag="--bind", port_flag="--port")
