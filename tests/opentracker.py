"""Run a real opentracker (Debian's build) on loopback for tests.

Facts about Debian's build this relies on (checked against opentracker 0~git20190205 packaging):

- it is compiled in whitelist mode: an info_hash not in the whitelist file gets the HTTP failure reason
  "Requested download is not authorized for use with this tracker." and, over UDP, an announce reply with no body;
- it refuses to run as root, so as root we pass ``-u nobody``; it then chroots to ``-d DIR`` before reading the
  whitelist, so the ``-w`` path is relative to DIR and DIR must be readable by nobody. Not as root it only chdirs, so
  the path must be the real one;
- it re-reads the whitelist on SIGHUP, asynchronously: :meth:`OpenTracker.set_whitelist` waits until it took effect;
- it lists peers by address and port (not peer_id) and includes the announcing peer itself in its answer.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote_from_bytes

__all__ = ["NOT_AUTHORIZED", "OpenTracker", "find_opentracker", "opentracker"]

NOT_AUTHORIZED = "Requested download is not authorized for use with this tracker."
HOST = "127.0.0.1"
# Whitelist probes come from this address so the probe peer never shows up as one of the test's own addresses.
_PROBE_SOURCE = "127.0.0.254"
_START_TIMEOUT = 10.0


def find_opentracker() -> str | None:
    return shutil.which("opentracker") or (
        "/usr/bin/opentracker" if os.access("/usr/bin/opentracker", os.X_OK) else None
    )


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class OpenTracker:
    """A running opentracker; unpacks as ``http_url, udp_url``."""

    http_url: str
    udp_url: str
    directory: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    whitelist: frozenset[bytes] = field(default_factory=frozenset)

    def __iter__(self) -> Iterator[str]:
        return iter((self.http_url, self.udp_url))

    @property
    def http_port(self) -> int:
        return int(self.http_url.split(":")[2].split("/")[0])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def allow(self, info_hashes: Iterable[bytes], *, timeout: float = 5.0) -> None:
        """Add info_hashes to the whitelist (see set_whitelist)."""
        self.set_whitelist(self.whitelist | frozenset(info_hashes), timeout=timeout)

    def set_whitelist(self, info_hashes: Iterable[bytes], *, timeout: float = 5.0) -> None:
        """Replace the whitelist, signal opentracker and wait until it answers accordingly (blocking)."""
        wanted = frozenset(info_hashes)
        removed = self.whitelist - wanted
        _write_whitelist(self.directory, wanted)
        self.process.send_signal(signal.SIGHUP)
        self.wait_whitelist(dict.fromkeys(wanted, True) | dict.fromkeys(removed, False), timeout=timeout)
        self.whitelist = wanted

    def wait_whitelist(self, expected: dict[bytes, bool], *, timeout: float = 5.0) -> None:
        """Poll until each info_hash is accepted (True) or refused (False): opentracker loads its list in a thread."""
        deadline = time.monotonic() + timeout
        pending = dict(expected)
        while pending:
            for info_hash, allowed in list(pending.items()):
                if self.probe(info_hash) == allowed:
                    del pending[info_hash]
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"opentracker whitelist not in effect within {timeout} s\n{self.log()}")
            if pending:
                time.sleep(0.05)

    def probe(self, info_hash: bytes) -> bool:
        """Whether opentracker currently accepts announces for info_hash (leaves no peer behind)."""
        query = (f"info_hash={quote_from_bytes(info_hash, safe='')}&peer_id=-PROBE0-000000000000&port=1"
                 "&uploaded=0&downloaded=0&left=1&numwant=0&compact=1")
        # Only a non-stopped announce is checked against the whitelist; the stopped one then removes the probe peer.
        body = self._get(f"/announce?{query}")
        self._get(f"/announce?{query}&event=stopped")
        return b"failure reason" not in body

    def _get(self, path: str) -> bytes:
        conn = http.client.HTTPConnection(HOST, self.http_port, timeout=5, source_address=(_PROBE_SOURCE, 0))
        try:
            conn.request("GET", path)
            return conn.getresponse().read()
        finally:
            conn.close()


def _write_whitelist(directory: Path, info_hashes: Iterable[bytes]) -> None:
    tmp = directory / "whitelist.txt.new"
    tmp.write_text("".join(f"{h.hex()}\n" for h in sorted(info_hashes)))
    tmp.chmod(0o644)
    tmp.replace(directory / "whitelist.txt")  # atomic: opentracker never reads a half-written file


def _wait_listening(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"opentracker exited with {process.returncode}: {log_path.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"opentracker did not listen on {port}: {log_path.read_text(errors='replace')}")
        time.sleep(0.05)


@contextlib.contextmanager
def opentracker(info_hashes: Iterable[bytes] = ()) -> Iterator[OpenTracker]:
    """Start opentracker on 127.0.0.1 (free TCP and UDP ports) whitelisting ``info_hashes``; always stops it."""
    binary = find_opentracker()
    if binary is None:
        raise FileNotFoundError("opentracker is not installed (Debian package: opentracker)")
    # Under /tmp rather than pytest's tmp_path: nobody must be able to traverse every parent of the chroot.
    directory = Path(tempfile.mkdtemp(prefix="opentracker-", dir="/tmp"))
    process: subprocess.Popen[bytes] | None = None
    try:
        directory.chmod(0o755)
        wanted = frozenset(info_hashes)
        _write_whitelist(directory, wanted)
        log_path = directory / "opentracker.log"
        tcp_port, udp_port = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
        as_root = os.geteuid() == 0
        args = [binary, "-i", HOST, "-p", str(tcp_port), "-P", str(udp_port), "-d", str(directory)]
        if as_root:
            args += ["-u", "nobody", "-w", "/whitelist.txt"]  # chrooted to directory
        else:
            args += ["-w", str(directory / "whitelist.txt")]  # only chdir'ed
        with log_path.open("wb") as log:
            process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _wait_listening(process, tcp_port, log_path)
        tracker = OpenTracker(
            http_url=f"http://{HOST}:{tcp_port}/announce",
            udp_url=f"udp://{HOST}:{udp_port}/announce",
            directory=directory,
            process=process,
            log_path=log_path,
            whitelist=wanted,
        )
        tracker.wait_whitelist(dict.fromkeys(wanted, True))
        yield tracker
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        shutil.rmtree(directory, ignore_errors=True)
