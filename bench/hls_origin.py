"""A real HLS origin for the HLS offload benchmark and the tests: testsrc -> PyAV publisher (RTMP) -> nginx-rtmp (HLS).

nginx runs as our own child (bench/baseline_nginx.py writes its config), with an access log that names the client
address of every request, so a test can count who contacted the origin (``requests_by_client``).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import baseline_nginx
from bench.common import free_port

HOST = "127.0.0.1"
LOG_FORMAT = """log_format egress '$msec $bytes_sent $status "$request_uri"';"""
CLIENT_LOG_FORMAT = """log_format egress '$remote_addr $bytes_sent $status "$request_uri"';"""


@dataclass
class HlsOrigin:
    playlist_url: str
    access_log: Path
    hls_dir: Path

    def requests_by_client(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        if self.access_log.exists():
            for line in self.access_log.read_text(errors="replace").splitlines():
                if line.strip():
                    counts[line.split(" ", 1)[0]] += 1
        return counts

    def bytes_by_client(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        if self.access_log.exists():
            for line in self.access_log.read_text(errors="replace").splitlines():
                fields = line.split(" ")
                if len(fields) >= 2 and fields[1].isdigit():
                    counts[fields[0]] += int(fields[1])
        return counts


def nginx_available() -> str | None:
    """None when nginx and its RTMP module are there, else why not."""
    try:
        baseline_nginx.require_nginx()
    except baseline_nginx.NginxMissingError as error:
        return str(error)
    return None


def _wait_playlist(url: str, timeout: float, segments: int = 2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.read().count(b"#EXTINF") >= segments:
                return
        time.sleep(0.3)
    raise TimeoutError(f"no HLS playlist with {segments} segments at {url} after {timeout:.0f} s")


@contextlib.contextmanager
def hls_origin(tmp: Path, *, fragment: float = 1.0, playlist: float = 6.0,
               bitrate: str = "600k") -> Iterator[HlsOrigin]:  # fmt: skip
    """testsrc, nginx-rtmp and the publisher, all stopped on exit; the origin is live (2 segments) on entry."""
    nginx_bin, module = baseline_nginx.require_nginx()
    base = (tmp / "origin").resolve()
    base.mkdir(parents=True, exist_ok=True)
    rtmp_port, http_port, src_port = free_port(), free_port(), free_port()
    conf = baseline_nginx.write_nginx_conf(base, rtmp_port, http_port, fragment_s=fragment, playlist_s=playlist,
                                           module=module)  # fmt: skip
    conf.write_text(conf.read_text().replace(LOG_FORMAT, CLIENT_LOG_FORMAT))
    src_args = [sys.executable, "-m", "swarmcast.cli", "testsrc", "--port", str(src_port), "--bitrate", bitrate,
                "--size", "320x180", "--fps", "25"]  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with (base / "testsrc.log").open("wb") as log:
            procs.append(subprocess.Popen(src_args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          start_new_session=True))  # fmt: skip
        baseline_nginx.wait_tcp(src_port, 30)
        with (base / "nginx.log").open("wb") as log:
            procs.append(subprocess.Popen([nginx_bin, "-c", str(conf), "-p", f"{base}/"], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=log, start_new_session=True))  # fmt: skip
        baseline_nginx.wait_tcp(rtmp_port, 15)
        with (base / "publisher.log").open("wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, str(Path(baseline_nginx.__file__).resolve()), "publish", "--source",
                 f"http://{HOST}:{src_port}/stream.ts", "--rtmp",
                 f"rtmp://{HOST}:{rtmp_port}/{baseline_nginx.APP}/{baseline_nginx.STREAM}",
                 "--table", str(base / "stamps.txt")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True))  # fmt: skip
        url = f"http://{HOST}:{http_port}/hls/{baseline_nginx.STREAM}.m3u8"
        _wait_playlist(url, 40)
        yield HlsOrigin(url, base / "access.log", base / "hls")
    finally:
        for process in reversed(procs):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
            process.wait()
