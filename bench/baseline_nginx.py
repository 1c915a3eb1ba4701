"""Client-server baseline: testsrc -> publisher (RTMP) -> nginx-rtmp (HLS over HTTP) -> N HLS players, on loopback.

    python bench/baseline_nginx.py --players 10 --duration 30 --ramp 5 --bitrate 2M --out /tmp/baseline10

Needs Debian's nginx and libnginx-mod-rtmp (``bench/setup.sh``). nginx runs as our own child process with its
own prefix, config, logs and temp paths in the work directory (``daemon off; master_process off``: one process,
whose CPU and memory we can sample), never as the system service. bench/swarm.py calls ``run_hls_baseline``
after its swarm phase, with the same testsrc; this file's CLI starts its own testsrc.

What runs
---------
- **publisher** (a child process: ``baseline_nginx.py publish ...``): reads testsrc's MPEG-TS over HTTP, remuxes it
  with PyAV (codec copy, no re-encode) into FLV and publishes it to ``rtmp://127.0.0.1:PORT/live/stream``.
- **nginx** with ``hls on; hls_fragment 2s; hls_playlist_length 8s``: cuts HLS segments at keyframes (testsrc has
  one per second, so segments hold two) and serves ``/hls/stream.m3u8`` and the segments over HTTP.
- **players** (asyncio tasks in this process, one aiohttp session each): fetch the playlist, start at the
  third-last segment, as hls.js (``liveSyncDurationCount`` = 3) and FFmpeg's HLS demuxer (``live_start_index``
  = -3) do, download every later segment once, in order, and reload the playlist every target-duration / 2.
- **reference tap**: reads testsrc directly (like bench/swarm.py's) for the source's list of GOP stamps and the
  stream's byte rate.

Clock stamps through RTMP (the PTS -> stamp mapping)
----------------------------------------------------
testsrc puts a clock packet (PID 0x1FF0, wall-clock µs) right before every keyframe. It does not survive the
FLV/RTMP hop, so the publisher scans the raw TS bytes it reads with the project's ``TsPacketizer``/``TsAnalyzer``
and pairs each clock packet with the PES PTS of the video keyframe that follows it (within a few packets). When
it remuxes, it rebases timestamps so that the first video keyframe is at 0 and converts them to milliseconds
itself (FLV's unit), so the FLV/RTMP timestamp of every packet is exactly the value it wrote: ``dts_ms =
round((dts - origin) / 90)``, ``pts_ms`` likewise. For each keyframe that had a clock packet it appends
``pts_ms ts_pts stamp_us`` to a table file (``-`` as stamp when it had none; those are never guessed).

nginx-rtmp writes HLS TS timestamps as ``RTMP ms * 90 (+ composition offset * 90)`` plus a fixed
``NGX_RTMP_HLS_DELAY`` of 63000 ticks ("700 ms PCR delay" in ngx_rtmp_mpegts.c). Checked with Debian 12's
nginx 1.22.1 + libnginx-mod-rtmp 1.2.2: the keyframes published at 0, 1000, 2000 ... ms came out in the
segments with PTS 63000, 153000, 243000 ..., i.e. ``hls_pts = pts_ms * 90 + 63000`` exactly, with no other
offset (testsrc has no B-frames, so keyframe pts == dts). A player therefore maps a keyframe's PTS in a segment
(found with ``TsAnalyzer``'s keyframe start + the PES header) to ``ms = (hls_pts - 63000) / 90`` and looks that
up in the table, accepting ±2 ms (rounding); a keyframe not found is counted in ``unmapped_keyframes`` and left
out of the stamps. ``pts_mapping.max_residual_ms`` says how far off the matches were. Some forks of the module define
the delay differently (one sets it to 0); with such a module the offset would show up as all keyframes
unmapped, not as wrong stamps, because testsrc's keyframes are 1000 ms apart and 700 ms is far outside ±2 ms.

Figures (all wall-clock, same machine)
--------------------------------------
- startup: first playlist request -> first segment downloaded *and* a video frame decoded from it (PyAV, with
  ``bench.common.first_video_frame_decodes`` like the swarm's players). ``first_segment_s``: without the decode.
- delay: for every mapped keyframe, wall time its segment finished downloading - clock stamp. Like the swarm's
  delay it is an *arrival* delay: a segment's keyframes all arrive when the segment does.
- playout_delay: of the ``bench.common.playout`` player model (starts ``BUFFER_S`` after its first GOP arrives,
  pauses when a GOP is late): first arrival - first stamp + BUFFER_S + stall seconds, the delay at which it
  would show the stream at the end. An HLS player starting three segments back sits ~6-8 s behind live.
- continuity_abs / continuity_rel / stalls: ``bench.common.playout`` with BUFFER_S, exactly as bench/swarm.py
  calls it. ``continuity_abs`` (arrival by stamp + 2 s) is near 0.3-0.5 for HLS by construction: a segment's
  first keyframe arrives ~2.4 s after its stamp, its second ~1.4 s. A GOP stamped before the player's end - 2 s
  that had not arrived by then counts as a miss, which costs HLS (arrival delay up to ~3 s) at most about one
  GOP per player at the end of the run.
- origin egress: the sum of nginx's ``$bytes_sent`` (headers + bodies) for /hls/ requests that ended during
  the run, from its access log. ``player_received_bytes`` is the bodies the players counted.
- stream_bytes: the stream's byte rate (reference tap: bytes between its second and last keyframe ÷ their stamp
  difference; the first comes in testsrc's catch-up burst) x the run's length (ramp + duration, the same window
  as the egress). ``origin_upload_ratio`` = egress ÷ stream_bytes.
- CPU and peak RSS of nginx and the publisher: psutil CPU time (whole life, and during the run) and VmHWM.
- source_max_gop_gap_s: the longest gap between consecutive stamps the reference tap saw during the run. testsrc
  stamps one keyframe per second, so much more than 1.0 means the source itself fell behind (a starved machine),
  and late GOPs in that run are not the delivery's doing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import logging
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import av

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    HOST,
    Child,
    Processes,
    StreamStats,
    StreamWatcher,
    first_video_frame_decodes,
    free_port,
    percentile,
    playout,
)
from swarmcast.media.ts import TsAnalyzer, TsPacketizer, keyframe_pts, pes_pts

log = logging.getLogger("bench.baseline_nginx")

BUFFER_S = 2.0  # same player model as bench/swarm.py
FRAGMENT_S = 2.0
PLAYLIST_S = 8.0
LIVE_START_FROM_END = 3  # start at the third-last segment (hls.js liveSyncDurationCount, FFmpeg live_start_index)
HLS_PTS_OFFSET_90K = 63_000  # nginx-rtmp's NGX_RTMP_HLS_DELAY, added to every PTS/DTS it writes (checked, see above)
PTS_TOLERANCE_MS = 2
PTS_MODULO = 1 << 33
CLOCK_TO_KEYFRAME_MAX_PACKETS = 8  # testsrc puts the clock packet right before the keyframe; allow a little slack
PLAYLIST_MAX_BYTES = 256 * 1024
SEGMENT_MAX_BYTES = 64 * 1024 * 1024
REQUEST_TIMEOUT_S = 10.0
MIN_POLL_S = 0.25
LIVE_TIMEOUT_S = 45.0  # publisher start + probing + LIVE_START_FROM_END segments, with room for a loaded machine
APP, STREAM = "live", "stream"

RTMP_MODULE_CANDIDATES = (
    Path("/usr/lib/nginx/modules/ngx_rtmp_module.so"),  # Debian/Ubuntu libnginx-mod-rtmp
    Path("/usr/share/nginx/modules/ngx_rtmp_module.so"),  # the same via Debian's prefix symlink
    Path("/usr/lib64/nginx/modules/ngx_rtmp_module.so"),
)
SETUP_HINT = "run bench/setup.sh (as root) to install nginx and libnginx-mod-rtmp"


class NginxMissingError(RuntimeError):
    """nginx or its RTMP module is not installed."""


def find_nginx() -> str | None:
    # root's PATH has /usr/sbin, other users' often not.
    return shutil.which("nginx") or (str(Path("/usr/sbin/nginx")) if Path("/usr/sbin/nginx").is_file() else None)


def find_rtmp_module() -> Path | None:
    candidates = list(RTMP_MODULE_CANDIDATES)
    # Debian's snippet says "load_module modules/ngx_rtmp_module.so;", relative to nginx's prefix /usr/share/nginx.
    snippet = Path("/usr/share/nginx/modules-available/mod-rtmp.conf")
    with contextlib.suppress(OSError):
        match = re.search(r"load_module\s+([^;\s]+)\s*;", snippet.read_text())
        if match:
            path = Path(match.group(1))
            candidates.insert(0, path if path.is_absolute() else Path("/usr/share/nginx") / path)
    return next((p for p in candidates if p.is_file()), None)


def require_nginx() -> tuple[str, Path]:
    nginx, module = find_nginx(), find_rtmp_module()
    if nginx is None:
        raise NginxMissingError(f"nginx not found; {SETUP_HINT}")
    if module is None:
        raise NginxMissingError(f"nginx RTMP module (ngx_rtmp_module.so) not found; {SETUP_HINT}")
    return nginx, module


def _nginx_time(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def write_nginx_conf(workdir: Path, rtmp_port: int, http_port: int, fragment_s: float = FRAGMENT_S,
                     playlist_s: float = PLAYLIST_S, module: Path | None = None) -> Path:  # fmt: skip
    """nginx.conf for an RTMP in / HLS out origin with every path inside ``workdir``; returns its path."""
    if module is None:
        module = find_rtmp_module()
        if module is None:
            raise NginxMissingError(f"nginx RTMP module (ngx_rtmp_module.so) not found; {SETUP_HINT}")
    workdir = workdir.resolve()
    hls = workdir / "hls"
    hls.mkdir(parents=True, exist_ok=True)
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / "tmp" / name).mkdir(parents=True, exist_ok=True)
    # No "user": a root nginx without master process never switches user, and the default (nobody) only decides
    # who owns the temp directories, which nginx chowns itself. The compiled-in temp paths live under
    # /var/lib/nginx, so each is set here even though nothing is proxied or uploaded.
    conf = f"""\
load_module {module};
daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
lock_file {workdir}/nginx.lock;
error_log stderr notice;
events {{ worker_connections 1024; }}
rtmp {{
    server {{
        listen {HOST}:{rtmp_port};
        chunk_size 4096;
        application {APP} {{
            live on;
            record off;
            allow publish {HOST};
            deny publish all;
            hls on;
            hls_path {hls};
            hls_fragment {_nginx_time(fragment_s)};
            hls_playlist_length {_nginx_time(playlist_s)};
        }}
    }}
}}
http {{
    # $msec: when the request ended (to keep only the run's requests); $bytes_sent: headers + body on the wire.
    log_format egress '$msec $bytes_sent $status "$request_uri"';
    access_log {workdir}/access.log egress;
    client_body_temp_path {workdir}/tmp/body;
    proxy_temp_path {workdir}/tmp/proxy;
    fastcgi_temp_path {workdir}/tmp/fastcgi;
    uwsgi_temp_path {workdir}/tmp/uwsgi;
    scgi_temp_path {workdir}/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    types {{
        application/vnd.apple.mpegurl m3u8;
        video/mp2t ts;
    }}
    server {{
        listen {HOST}:{http_port};
        location /hls/ {{
            alias {hls}/;
            add_header Cache-Control no-cache;
        }}
    }}
}}
"""
    path = workdir / "nginx.conf"
    path.write_text(conf)
    return path


def _spawn(procs: Processes, name: str, role: str, port: int, argv: list[str]) -> Child:
    """Like ``Processes.spawn`` (own session, stderr to NAME.log, stopped by ``stop_all``) for any command."""
    log_path = procs.workdir / f"{name}.log"
    with log_path.open("wb") as stderr:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, cwd=procs.workdir,
                                   start_new_session=True)  # fmt: skip
    child = Child(name, role, process, port)
    procs.children.append(child)
    return child


def wait_tcp(port: int, timeout: float) -> None:
    """Until something accepts on HOST:port; RuntimeError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"nothing listening on {HOST}:{port} after {timeout:.0f} s") from None
            time.sleep(0.1)


def _tail(path: Path, limit: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError as error:
        return f"<cannot read {path}: {error}>"


# --- TS helpers ---------------------------------------------------------------------------------------------------


class ClockScanner:
    """Raw TS bytes -> {video keyframe PTS mod 2^33: clock stamp µs}, for keyframes right after a clock packet."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.packetizer = TsPacketizer()
        self.analyzer = TsAnalyzer()
        self.table: dict[int, int] = {}
        self.max_entries = max_entries
        self._pending: int | None = None
        self._since_clock = 0
        self.keyframes = 0
        self.keyframes_without_clock = 0

    def feed(self, data: bytes) -> None:
        for packet in self.packetizer.feed(data):
            info = self.analyzer.feed_packet(packet)
            if info.clock_us is not None:
                self._pending, self._since_clock = info.clock_us, 0
                continue
            self._since_clock += 1
            if info.is_video_keyframe_start:
                self.keyframes += 1
                pts = pes_pts(packet)
                if pts is not None and self._pending is not None and self._since_clock <= CLOCK_TO_KEYFRAME_MAX_PACKETS:
                    self.table[pts % PTS_MODULO] = self._pending
                    while len(self.table) > self.max_entries:  # entries are popped when used; this is a backstop
                        del self.table[next(iter(self.table))]
                else:
                    self.keyframes_without_clock += 1
                self._pending = None


# --- publisher (child process) ------------------------------------------------------------------------------------


class _ScanningReader:
    """The file object PyAV demuxes from: HTTP body bytes, scanned for clock packets on the way through."""

    def __init__(self, response: http.client.HTTPResponse, scanner: ClockScanner) -> None:
        self.response = response
        self.scanner = scanner

    def read(self, size: int = -1) -> bytes:
        # read1: whatever has arrived (at least one byte), so a live stream is not held up to fill a whole buffer.
        data = self.response.read1(size if size > 0 else 65536)
        self.scanner.feed(data)
        return data


def publish(source_url: str, rtmp_url: str, table_path: Path) -> int:
    """Remux testsrc's TS to FLV over RTMP (codec copy) until the source ends; write the keyframe stamp table."""
    scanner = ClockScanner()
    response: http.client.HTTPResponse = urllib.request.urlopen(source_url, timeout=30)
    # A short probe: testsrc sends PAT/PMT and a keyframe with SPS/PPS first, so 1 s is plenty to find both codecs.
    source = av.open(_ScanningReader(response, scanner), mode="r", format="mpegts",
                     options={"analyzeduration": "1000000", "probesize": "1000000"})  # fmt: skip
    sink = av.open(rtmp_url, mode="w", format="flv", options={"flvflags": "no_duration_filesize"})
    stamped = unstamped = 0
    try:
        streams = {s.index: sink.add_stream_from_template(s) for s in source.streams if s.type in {"video", "audio"}}
        if not source.streams.video:
            print("no video stream in the source", file=sys.stderr)
            return 1
        video_index = source.streams.video[0].index
        origin: int | None = None
        with table_path.open("a") as table:
            for packet in source.demux():
                if packet.stream.index not in streams or packet.dts is None or packet.pts is None:
                    continue
                is_video = packet.stream.index == video_index
                if origin is None:
                    if not (is_video and packet.is_keyframe):
                        continue  # start on a keyframe: it carries the first clock stamp, and RTMP viewers need one
                    origin = packet.dts
                raw_pts = packet.pts
                dts_ms, pts_ms = round((packet.dts - origin) / 90), round((packet.pts - origin) / 90)
                if dts_ms < 0:
                    continue  # audio from before the first keyframe: FLV timestamps must not go negative
                if is_video:
                    stamp = scanner.table.pop(raw_pts % PTS_MODULO, None)
                    if stamp is not None or packet.is_keyframe:
                        table.write(f"{pts_ms} {raw_pts} {'-' if stamp is None else stamp}\n")
                        table.flush()
                        stamped += stamp is not None
                        unstamped += stamp is None
                # We set FLV's own time base (ms), so the muxer does no rounding of its own: the RTMP timestamp
                # is exactly dts_ms, and the table above is keyed by what nginx will see.
                packet.stream = streams[packet.stream.index]
                packet.time_base = Fraction(1, 1000)
                packet.dts, packet.pts = dts_ms, pts_ms
                sink.mux(packet)
    finally:
        print(f"publisher: keyframes stamped {stamped}, without stamp {unstamped}", file=sys.stderr)
        with contextlib.suppress(av.error.FFmpegError, OSError):
            sink.close()
        source.close()
        response.close()
    return 0


def publish_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="baseline_nginx.py publish")
    parser.add_argument("--source", required=True)
    parser.add_argument("--rtmp", required=True)
    parser.add_argument("--table", type=Path, required=True)
    args = parser.parse_args(argv)
    return publish(args.source, args.rtmp, args.table)


# --- HLS players --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    sequence: int
    uri: str
    duration: float


@dataclass(frozen=True, slots=True)
class Playlist:
    media_sequence: int
    target_duration: float
    segments: list[Segment]
    ended: bool


def parse_playlist(text: str) -> Playlist:
    """A live media playlist (RFC 8216 §4.3): media sequence, target duration, segment URIs with durations."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise ValueError("not an M3U8 playlist")
    media_sequence, target, ended = 0, 0.0, False
    segments: list[Segment] = []
    duration = 0.0
    for line in lines[1:]:
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            media_sequence = int(line.partition(":")[2])
        elif line.startswith("#EXT-X-TARGETDURATION:"):
            target = float(line.partition(":")[2])
        elif line.startswith("#EXTINF:"):
            duration = float(line.partition(":")[2].partition(",")[0])
        elif line.startswith("#EXT-X-ENDLIST"):
            ended = True
        elif not line.startswith("#"):
            segments.append(Segment(media_sequence + len(segments), line, duration))
            duration = 0.0
    return Playlist(media_sequence, target, segments, ended)


class _HttpStatusError(Exception):
    pass


async def _fetch(session: aiohttp.ClientSession, url: str, cap: int) -> bytes:
    async with session.get(url) as resp:
        if resp.status != 200:
            raise _HttpStatusError(f"HTTP {resp.status} for {url}")
        body = bytearray()
        async for chunk in resp.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > cap:
                raise ValueError(f"{url}: larger than {cap} bytes")
        return bytes(body)


@dataclass
class HlsPlayer:
    index: int
    url: str
    stats: StreamStats = field(default_factory=lambda: StreamStats(requested_wall=0.0))
    keyframes: list[tuple[int, float]] = field(default_factory=list)  # (PTS in nginx's TS, segment arrival wall)
    start_sequence: int | None = None
    next_sequence: int | None = None  # the next segment to fetch; kept here so that a failed fetch is retried
    playlist_requests: int = 0
    playlist_bytes: int = 0
    segments: int = 0
    segment_bytes: int = 0
    skipped_segments: int = 0  # left the playlist (or were never listed) before this player fetched them
    decode_failures: int = 0
    http_errors: int = 0
    last_error: str | None = None
    started: bool = False
    mapped: int = 0
    unmapped: int = 0

    async def run(self, until: float) -> None:
        st = self.stats
        st.requested_wall = time.time()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as session:
                self.started = True
                while time.monotonic() < until:
                    poll = FRAGMENT_S / 2
                    try:
                        body = await _fetch(session, self.url, PLAYLIST_MAX_BYTES)
                        self.playlist_requests += 1
                        self.playlist_bytes += len(body)
                        st.bytes += len(body)
                        playlist = parse_playlist(body.decode("utf-8", "replace"))
                        if playlist.target_duration > 0:
                            poll = max(MIN_POLL_S, playlist.target_duration / 2)
                        if self.next_sequence is None and playlist.segments:
                            start = max(0, len(playlist.segments) - LIVE_START_FROM_END)
                            self.next_sequence = self.start_sequence = playlist.segments[start].sequence
                        await self._download_new(session, playlist, until)
                    except (aiohttp.ClientError, TimeoutError, ValueError, _HttpStatusError) as error:
                        self.http_errors += 1
                        self.last_error = f"{type(error).__name__}: {error}"
                    await asyncio.sleep(max(0.0, min(poll, until - time.monotonic())))
        finally:
            st.ended_wall = time.time()
            if st.first_frame_wall is None:
                st.error = self.last_error or "no video frame decoded"

    async def _download_new(self, session: aiohttp.ClientSession, playlist: Playlist, until: float) -> None:
        st = self.stats
        for segment in playlist.segments:
            if self.next_sequence is None or segment.sequence < self.next_sequence:
                continue
            if time.monotonic() >= until:
                break
            url = urllib.parse.urljoin(self.url, segment.uri)
            data = await _fetch(session, url, SEGMENT_MAX_BYTES)
            arrived = time.time()
            # Segments between the one we wanted and this one left the playlist before we got to them (we were
            # too slow): a real player skips them too.
            self.skipped_segments += segment.sequence - self.next_sequence
            self.next_sequence = segment.sequence + 1
            self.segments += 1
            self.segment_bytes += len(data)
            st.bytes += len(data)
            if st.first_byte_wall is None:
                st.first_byte_wall = arrived  # here: the first segment is complete (a player can't use less)
            found = keyframe_pts(data)
            self.keyframes.extend((pts, arrived) for pts in found)
            if st.first_keyframe_wall is None and found:
                st.first_keyframe_wall = arrived
            if st.first_frame_wall is None:
                # The same test as the swarm's players (bench.common), in a thread: a decode blocks for a few ms,
                # which would delay the other players' arrival times.
                if await asyncio.to_thread(first_video_frame_decodes, data):
                    st.first_frame_wall = time.time()
                else:
                    self.decode_failures += 1

    def resolve(self, table: dict[int, int], residuals: list[float]) -> None:
        """Turn (PTS, arrival) into (clock stamp s, arrival) through the publisher's table; unmatched are dropped."""
        self.stats.stamps.clear()
        self.mapped = self.unmapped = 0
        for pts, arrived in self.keyframes:
            match = lookup_stamp(pts, table)
            if match is None:
                self.unmapped += 1
                continue
            stamp_us, residual = match
            residuals.append(residual)
            self.mapped += 1
            self.stats.stamps.append((stamp_us / 1e6, arrived))


def lookup_stamp(hls_pts: int, table: dict[int, int]) -> tuple[int, float] | None:
    """(stamp µs, |residual| ms) of the table entry for this HLS PTS, within PTS_TOLERANCE_MS, or None."""
    ms = ((hls_pts - HLS_PTS_OFFSET_90K) % PTS_MODULO) / 90
    best: tuple[int, float] | None = None
    for key in range(round(ms) - PTS_TOLERANCE_MS, round(ms) + PTS_TOLERANCE_MS + 1):
        if key in table and abs(key - ms) <= PTS_TOLERANCE_MS and (best is None or abs(key - ms) < best[1]):
            best = (table[key], abs(key - ms))
    return best


def read_stamp_table(path: Path) -> tuple[dict[int, int], int]:
    """The publisher's table: {FLV pts ms: stamp µs}, and how many keyframes it published without a stamp."""
    table: dict[int, int] = {}
    unstamped = 0
    with contextlib.suppress(OSError), path.open() as lines:
        for line in lines:
            parts = line.split()
            if len(parts) != 3 or not parts[0].lstrip("-").isdigit():
                continue  # a partly written last line
            if parts[2] == "-":
                unstamped += 1
            elif parts[2].isdigit():
                table[int(parts[0])] = int(parts[2])
    return table, unstamped


def read_egress(access_log: Path, since_wall: float) -> int | None:
    """Bytes nginx sent (headers + bodies) for /hls/ requests that ended at or after ``since_wall``."""
    total = 0
    try:
        text = access_log.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) == 4 and parts[3].startswith('"/hls/'):
            with contextlib.suppress(ValueError):
                if float(parts[0]) >= since_wall:
                    total += int(parts[1])
    return total


# --- reference tap ------------------------------------------------------------------------------------------------


@dataclass
class Reference:
    stats: StreamStats
    bytes_at_stamp: list[tuple[float, int]] = field(default_factory=list)  # (stamp s, bytes received by then)

    def bytes_per_s(self) -> float | None:
        """Bytes between two keyframes ÷ their stamps' difference: the stream's own rate, not the tap's timing."""
        # Not from the first keyframe: testsrc sends a newcomer the current GOP in one burst, so the first chunk
        # may hold part of the next GOP too.
        points = self.bytes_at_stamp[1:]
        if len(points) < 2:
            return None
        (s0, b0), (s1, b1) = points[0], points[-1]
        return (b1 - b0) / (s1 - s0) if s1 - s0 >= 1.0 else None


async def reference_tap(url: str, ref: Reference, until: float) -> None:
    watcher = StreamWatcher(ref.stats)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
            async for chunk in resp.content.iter_any():
                seen = len(ref.stats.stamps)
                watcher.feed(chunk, time.time())
                # Chunk granularity (one frame's packets): the error is at most one chunk at each end.
                ref.bytes_at_stamp.extend((s, ref.stats.bytes) for s, _t in ref.stats.stamps[seen:])
                if time.monotonic() >= until:
                    break
    except (aiohttp.ClientError, TimeoutError) as error:
        ref.stats.error = f"{type(error).__name__}: {error}"
    finally:
        ref.stats.ended_wall = time.time()


# --- the run ------------------------------------------------------------------------------------------------------


async def _wait_live(playlist_url: str, watch: list[Child], workdir: Path, timeout: float) -> float:
    """Poll the playlist until it lists LIVE_START_FROM_END segments; seconds it took. Raises if a child dies."""
    start = time.monotonic()
    deadline = start + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
        while time.monotonic() < deadline:
            for child in watch:
                if child.process.poll() is not None:
                    raise RuntimeError(f"{child.name} exited with {child.process.returncode}:\n"
                                       f"{_tail(workdir / f'{child.name}.log')}")  # fmt: skip
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, _HttpStatusError):
                body = await _fetch(session, playlist_url, PLAYLIST_MAX_BYTES)
                if len(parse_playlist(body.decode("utf-8", "replace")).segments) >= LIVE_START_FROM_END:
                    return time.monotonic() - start
            await asyncio.sleep(0.5)
    raise RuntimeError(f"HLS playlist did not list {LIVE_START_FROM_END} segments within {timeout:.0f} s; "
                       f"publisher log:\n{_tail(workdir / 'publisher.log')}\n"
                       f"nginx log:\n{_tail(workdir / 'nginx.log')}")  # fmt: skip


def _dist(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "max": max(values, default=None)}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


async def run_hls_baseline(testsrc_url: str, players: int, duration: float, ramp: float, workdir: Path,
                           reference_stamps: list[float] | None = None) -> dict[str, Any]:  # fmt: skip
    """nginx-rtmp origin fed from ``testsrc_url``, ``players`` HLS players joining over ``ramp`` s, then all
    playing for ``duration`` s more; the figures as a dict (see the module docstring).

    ``reference_stamps``: more of the source's GOP stamps (absolute wall seconds, e.g. bench/swarm.py's reference
    tap); merged with this run's own reference tap, which covers the run. ``workdir/nginx-baseline`` holds the
    nginx prefix, logs and the publisher's stamp table. Raises ``NginxMissingError`` (a RuntimeError) without
    nginx or its RTMP module, RuntimeError if nginx or the publisher fails to start; nginx and the publisher are
    stopped before it returns or raises (also when cancelled).
    """
    nginx_bin, module = require_nginx()
    base = workdir / "nginx-baseline"
    shutil.rmtree(base, ignore_errors=True)  # stale segments from an earlier run would confuse the players
    base.mkdir(parents=True)
    procs = Processes(base)
    rtmp_port, http_port = free_port(), free_port()
    playlist_url = f"http://{HOST}:{http_port}/hls/{STREAM}.m3u8"
    table_path = base / "stamps.txt"
    ref = Reference(StreamStats(requested_wall=time.time()))
    hls_players = [HlsPlayer(i, playlist_url) for i in range(players)]
    tasks: list[asyncio.Task[None]] = []
    ref_task: asyncio.Task[None] | None = None
    errors: list[str] = []
    live_after: float | None = None
    cpu_at_start: dict[str, float] = {}
    wall0 = wall_end = time.time()
    t0 = t_end = time.monotonic()
    try:
        conf = write_nginx_conf(base, rtmp_port, http_port, module=module)
        nginx = _spawn(procs, "nginx", "origin", http_port, [nginx_bin, "-c", str(conf), "-p", f"{base.resolve()}/"])
        await asyncio.to_thread(procs.wait_ports, [nginx], 15)
        await asyncio.to_thread(wait_tcp, rtmp_port, 5)  # opened with the HTTP listener; checked all the same
        publisher = _spawn(procs, "publisher", "publisher", 0, [
            sys.executable, str(Path(__file__).resolve()), "publish", "--source", testsrc_url,
            "--rtmp", f"rtmp://{HOST}:{rtmp_port}/{APP}/{STREAM}", "--table", str(table_path.resolve()),
        ])  # fmt: skip
        # The tap starts with the publisher so that the source's GOP list also covers the segments the first
        # players start from (three segments back).
        ref_until = time.monotonic() + LIVE_TIMEOUT_S + ramp + duration + 30  # cancelled at the end anyway
        ref_task = asyncio.create_task(reference_tap(testsrc_url, ref, ref_until))
        live_after = await _wait_live(playlist_url, [nginx, publisher], base, LIVE_TIMEOUT_S)
        log.info("HLS live after %.1f s; %d players join over %.0f s, then %.0f s", live_after, players, ramp, duration)
        for child in (nginx, publisher):
            child.sample()
            cpu_at_start[child.name] = child.cpu_seconds
        t0, wall0 = time.monotonic(), time.time()
        end = t0 + ramp + duration
        for player in hls_players:
            start_at = t0 + ramp * player.index / max(1, players)
            tasks.append(asyncio.create_task(_delayed(player, start_at, end)))
        while time.monotonic() < end:
            await asyncio.sleep(max(0.0, min(1.0, end - time.monotonic())))
            for child in (nginx, publisher):
                child.sample()
                if child.process.poll() is not None and not any(e.startswith(child.name) for e in errors):
                    errors.append(f"{child.name} exited with {child.process.returncode} during the run")
        t_end, wall_end = time.monotonic(), time.time()
        for child in (nginx, publisher):
            child.sample()
    finally:
        try:
            for task in [*tasks, *([ref_task] if ref_task else [])]:
                task.cancel()
            await asyncio.gather(*tasks, *([ref_task] if ref_task else []), return_exceptions=True)
        finally:
            # Even if that await is interrupted (a second Ctrl-C): nothing of ours may outlive the run.
            window_cpu = {c.name: c.cpu_seconds - cpu_at_start.get(c.name, 0.0) for c in procs.children}
            procs.stop_all()  # nginx writes the last access-log lines as it closes the connections
    return _report(players=hls_players, procs=procs, ref=ref, base=base, table_path=table_path,
                   reference_stamps=reference_stamps, duration=duration, ramp=ramp, wall0=wall0,
                   window=t_end - t0, window_cpu=window_cpu, errors=errors, live_after=live_after,
                   wall_end=wall_end)  # fmt: skip


async def _delayed(player: HlsPlayer, start_at: float, end: float) -> None:
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    await player.run(end)


def _report(*, players: list[HlsPlayer], procs: Processes, ref: Reference, base: Path, table_path: Path,
            reference_stamps: list[float] | None, duration: float, ramp: float, wall0: float, wall_end: float,
            window: float, window_cpu: dict[str, float], errors: list[str],
            live_after: float | None) -> dict[str, Any]:  # fmt: skip
    table, publisher_unstamped = read_stamp_table(table_path)
    residuals: list[float] = []
    ref_set = {round(s, 3): s for s, _t in ref.stats.stamps}
    for s in reference_stamps or []:
        ref_set.setdefault(round(s, 3), s)
    reference = sorted(ref_set.values())
    # testsrc stamps a keyframe every second; a longer gap means the source itself fell behind (a starved
    # machine), which the players then see as late GOPs whatever the delivery.
    own = sorted(s for s, _t in ref.stats.stamps if wall0 <= s <= wall_end)
    source_gap = max((b - a for a, b in itertools.pairwise(own)), default=None)
    per_player: list[dict[str, Any]] = []
    all_delays: list[float] = []
    for p in players:
        p.resolve(table, residuals)
        st = p.stats
        end_wall = st.ended_wall or wall_end
        delays = [t - s for s, t in st.stamps]
        all_delays += delays
        po = playout(st.stamps, reference, BUFFER_S, end_wall)
        playout_delay = None
        if st.stamps:
            lag = st.stamps[0][1] - st.stamps[0][0]  # how far behind live this player's first GOP arrived
            playout_delay = lag + BUFFER_S + float(po["stall_seconds"] or 0.0)
        per_player.append({
            "id": p.index, "error": st.error if p.started else "never started", "http_errors": p.http_errors,
            "last_error": p.last_error,
            "startup_s": None if st.first_frame_wall is None else st.first_frame_wall - st.requested_wall,
            "first_segment_s": None if st.first_byte_wall is None else st.first_byte_wall - st.requested_wall,
            "start_sequence": p.start_sequence, "segments": p.segments, "skipped_segments": p.skipped_segments,
            "playlist_requests": p.playlist_requests, "decode_failures": p.decode_failures,
            "bytes": st.bytes, "playlist_bytes": p.playlist_bytes, "segment_bytes": p.segment_bytes,
            "mapped_keyframes": p.mapped, "unmapped_keyframes": p.unmapped,
            "delay_p50": percentile(delays, 50), "delay_p95": percentile(delays, 95),
            "delay_max": max(delays, default=None), "playout_delay_s": playout_delay,
            "delays": [[round(s - wall0, 3), round(d, 3)] for (s, _t), d in zip(st.stamps, delays, strict=True)],
            **po,
        })  # fmt: skip
    rate = ref.bytes_per_s()
    stream_bytes = None if rate is None else rate * window
    egress = read_egress(base / "access.log", wall0)
    children = {c.name: c for c in procs.children}

    def proc(name: str) -> dict[str, float | int | None]:
        child = children.get(name)
        if child is None:
            return {"cpu_seconds": None, "cpu_pct_run": None, "peak_rss": None}
        return {"cpu_seconds": round(child.cpu_seconds, 2),
                "cpu_pct_run": round(100 * window_cpu.get(name, 0.0) / window, 1) if window > 0 else None,
                "peak_rss": child.peak_rss or None}  # fmt: skip

    def col(key: str) -> list[float]:
        return [float(x[key]) for x in per_player if x[key] is not None]

    return {
        "players": len(players),
        "players_with_video": sum(1 for p in players if p.stats.first_frame_wall is not None),
        "duration": duration, "ramp": ramp, "run_s": round(window, 2), "buffer_s": BUFFER_S,
        "fragment_s": FRAGMENT_S, "playlist_s": PLAYLIST_S,
        "live_start": f"segment {LIVE_START_FROM_END} from the end (hls.js / FFmpeg default); "
                      "playlist reloaded every target duration / 2",
        "live_after_s": None if live_after is None else round(live_after, 2),
        "startup_s": _dist(col("startup_s")),
        "first_segment_s": _dist(col("first_segment_s")),
        "delay_s": _dist(all_delays),
        "playout_delay_s": _dist(col("playout_delay_s")),
        "continuity_abs": _mean(col("continuity_abs")),
        "continuity_rel": _mean(col("continuity_rel")),
        "stalls": sum(int(x["stalls"] or 0) for x in per_player),
        "stall_seconds": round(sum(float(x["stall_seconds"] or 0) for x in per_player), 2),
        "origin_egress_bytes": egress,
        "origin_egress_source": "nginx access log, sum of $bytes_sent of /hls/ requests ended during the run",
        "player_received_bytes": sum(p.stats.bytes for p in players),
        "stream_bytes": None if stream_bytes is None else round(stream_bytes),
        "stream_bytes_per_s": None if rate is None else round(rate),
        "origin_upload_ratio": egress / stream_bytes if egress is not None and stream_bytes else None,
        "mapped_keyframes": sum(p.mapped for p in players),
        "unmapped_keyframes": sum(p.unmapped for p in players),
        "publisher_keyframes_stamped": len(table), "publisher_keyframes_unstamped": publisher_unstamped,
        "pts_mapping": {"hls_pts_offset_90k": HLS_PTS_OFFSET_90K, "tolerance_ms": PTS_TOLERANCE_MS,
                        "max_residual_ms": max(residuals, default=None)},
        "nginx_cpu_seconds": proc("nginx")["cpu_seconds"], "nginx_cpu_pct_run": proc("nginx")["cpu_pct_run"],
        "nginx_peak_rss": proc("nginx")["peak_rss"],
        "publisher_cpu_seconds": proc("publisher")["cpu_seconds"],
        "publisher_cpu_pct_run": proc("publisher")["cpu_pct_run"],
        "publisher_peak_rss": proc("publisher")["peak_rss"],
        "reference_error": ref.stats.error,
        "source_max_gop_gap_s": None if source_gap is None else round(source_gap, 3),
        "reference_stamps": [round(s - wall0, 3) for s, _t in ref.stats.stamps],
        "errors": errors,
        "per_player": per_player,
    }  # fmt: skip


# --- CLI ----------------------------------------------------------------------------------------------------------


def table(r: dict[str, Any]) -> str:
    def f(x: Any, nd: int = 2) -> str:
        return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))

    def d(key: str) -> str:
        v = r[key]
        return f"{f(v['p50'])} / {f(v['p95'])} / {f(v['max'])}"

    def mb(x: Any) -> str:
        return "-" if x is None else f"{x / 1e6:.1f} MB"

    rows = [
        ("players with video", f"{r['players_with_video']}/{r['players']}"),
        ("startup p50 / p95 / max (s)", d("startup_s")),
        ("delay (arrival) p50 / p95 / max (s)", d("delay_s")),
        ("playout delay p50 / p95 / max (s)", d("playout_delay_s")),
        ("continuity abs / rel (mean)", f"{f(r['continuity_abs'])} / {f(r['continuity_rel'])}"),
        ("stalls (count, s)", f"{r['stalls']}, {r['stall_seconds']}"),
        ("origin egress / stream", f"{f(r['origin_upload_ratio'])} ({mb(r['origin_egress_bytes'])} / "
                                   f"{mb(r['stream_bytes'])})"),
        ("keyframes mapped / unmapped", f"{r['mapped_keyframes']} / {r['unmapped_keyframes']}"),
        ("nginx cpu% (run) / peak MB", f"{f(r['nginx_cpu_pct_run'], 1)} / {mb(r['nginx_peak_rss'])}"),
        ("publisher cpu% (run) / peak MB", f"{f(r['publisher_cpu_pct_run'], 1)} / {mb(r['publisher_peak_rss'])}"),
    ]  # fmt: skip
    rows.append(("source max GOP gap (s; 1.0 = on time)", f(r["source_max_gop_gap_s"])))
    if r["errors"]:
        rows.append(("errors", "; ".join(r["errors"])))
    return "\n".join(f"| {k} | {v} |" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["publish"]:
        return publish_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--players", type=int, required=True)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--ramp", type=float, default=5.0, help="players join spread over this many seconds")
    parser.add_argument("--bitrate", default="2M")
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        require_nginx()
    except NginxMissingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # Ctrl-C, and a plain kill, must still stop nginx, the publisher and testsrc (all in their own sessions, so
    # they would outlive us): both become KeyboardInterrupt, which asyncio.run turns into cancelling the run, whose
    # finally blocks stop the children. SIGINT is set explicitly because a shell starts background jobs with it
    # ignored, and Python then keeps it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="swarmcast-baseline-"))
    procs = Processes(workdir)
    print(f"baseline in {workdir}")
    try:
        port = free_port()
        testsrc = procs.spawn("testsrc", "testsrc", port, "testsrc", "--port", str(port), "--bitrate", args.bitrate,
                              "--size", args.size, "--fps", str(args.fps))  # fmt: skip
        procs.wait_ports([testsrc], 30)
        url = f"http://{HOST}:{port}/stream.ts"
        result = asyncio.run(run_hls_baseline(url, args.players, args.duration, args.ramp, workdir))
    except KeyboardInterrupt:
        print("\ninterrupted")
        return 130
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        logs = args.out / "logs"
        logs.mkdir(exist_ok=True)
        keep = ("*.log", "nginx-baseline/*.log", "nginx-baseline/stamps.txt", "nginx-baseline/nginx.conf")
        for path in [p for pattern in keep for p in workdir.glob(pattern)]:
            shutil.copy(path, logs / path.name)
        shutil.rmtree(workdir, ignore_errors=True)
    result["config"] = {"bitrate": args.bitrate, "size": args.size, "fps": args.fps}
    (args.out / "baseline.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out / 'baseline.json'}")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
