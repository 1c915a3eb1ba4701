"""Helpers shared by the benchmarks: processes, per-socket byte counters (``ss``), player-side stream analysis."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import psutil

from swarmcast.media.ts import CLOCK_MAGIC, TsAnalyzer, TsPacketizer

HOST = "127.0.0.1"


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_EPHEMERAL = _ephemeral_range()
# Listening ports come from below the kernel's ephemeral range, each handed out once per process: with 200 ports
# drawn from the ephemeral range (port 0), two draws, or a draw and some client socket, collide now and then.
_next_port = 10000 + (os.getpid() * 37) % 10000


def free_port() -> int:
    global _next_port
    for _ in range(20000):
        port = _next_port
        _next_port = 10000 + (_next_port - 10000 + 1) % max(1, _EPHEMERAL[0] - 10000)
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port below the ephemeral range")


@dataclass
class Child:
    name: str
    role: str
    process: subprocess.Popen[bytes]
    port: int
    peak_rss: int = 0
    cpu_seconds: float = 0.0
    cpu_seconds_at_start: float = 0.0  # when the measured window began (or 0 for a child started later)
    window_start: float | None = None
    started: float = field(default_factory=time.monotonic)
    stopped: float | None = None

    def sample(self) -> None:
        """Peak RSS (VmHWM) and CPU time so far; kept after the process is gone."""
        with contextlib.suppress(psutil.Error, OSError):
            proc = psutil.Process(self.process.pid)
            times = proc.cpu_times()
            self.cpu_seconds = times.user + times.system
            status = Path(f"/proc/{self.process.pid}/status").read_text()
            match = re.search(r"VmHWM:\s+(\d+) kB", status)
            if match:
                self.peak_rss = max(self.peak_rss, int(match.group(1)) * 1024)


class Processes:
    """Children in their own process group each; stopped in reverse order, always."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[Child] = []

    def spawn(self, name: str, role: str, port: int, *args: str) -> Child:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "swarmcast.cli", *args],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, cwd=self.workdir,
                start_new_session=True,
            )  # fmt: skip
        child = Child(name, role, process, port)
        self.children.append(child)
        return child

    def wait_ports(self, children: list[Child], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(children)
        while pending and time.monotonic() < deadline:
            for child in list(pending):
                if child.process.poll() is not None:
                    tail = (self.workdir / f"{child.name}.log").read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"{child.name} exited with {child.process.returncode}:\n{tail}")
                with contextlib.suppress(OSError), socket.create_connection((HOST, child.port), timeout=0.2):
                    pending.remove(child)
            time.sleep(0.1)
        if pending:
            raise RuntimeError(f"not listening after {timeout:.0f} s: {[c.name for c in pending]}")

    def stop(self, child: Child) -> None:
        child.sample()
        if child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGTERM)
            try:
                child.process.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
        child.stopped = child.stopped or time.monotonic()

    def stop_all(self) -> None:
        for child in reversed(self.children):
            self.stop(child)


_SS_LINE = re.compile(r"(\S+):(\d+)\s+(\S+):(\d+)\s+users:\(\(\"[^\"]*\",pid=(\d+)")
_SS_BYTES = re.compile(r"bytes_acked:(\d+)")
_SS_RECV = re.compile(r"bytes_received:(\d+)")


class SocketLedger:
    """Bytes per TCP connection between our processes, from the kernel's counters (``ss -tinp``).

    Each established socket is keyed by (owner pid, local, remote); its bytes_acked (sent and acknowledged)
    and bytes_received are kept at their last sampled value, so a connection that closes between two samples
    loses at most one sampling interval of bytes. Every byte on the wire is counted: payload, protocol
    messages and TCP payload of HTTP alike (TCP/IP headers are not).
    """

    def __init__(self) -> None:
        self.sockets: dict[tuple[int, str, str], tuple[int, int]] = {}
        self.owner_of: dict[str, int] = {}  # "addr:port" -> pid, for finding the other end of a connection
        self.at_start: dict[tuple[int, str, str], tuple[int, int]] = {}

    def start_window(self) -> None:
        """Count only bytes from now on: connections open now (source -> support nodes while the viewers'
        engines start, say) are measured from their current counters."""
        self.sample()
        self.at_start = dict(self.sockets)

    def _since_start(self, key: tuple[int, str, str], value: tuple[int, int]) -> tuple[int, int]:
        sent0, recv0 = self.at_start.get(key, (0, 0))
        return max(0, value[0] - sent0), max(0, value[1] - recv0)

    def sample(self) -> None:
        try:
            out = subprocess.run(["ss", "-tinpH", "state", "established"], capture_output=True, text=True,
                                 timeout=10, check=False).stdout  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return
        key: tuple[int, str, str] | None = None
        for line in out.splitlines():
            if not line.startswith("\t") and not line.startswith(" \t"):
                match = _SS_LINE.search(line)
                key = None
                if match and match.group(1).startswith("127."):
                    local, remote = f"{match.group(1)}:{match.group(2)}", f"{match.group(3)}:{match.group(4)}"
                    key = (int(match.group(5)), local, remote)
                    self.owner_of[local] = key[0]
            elif key is not None:
                sent, recv = _SS_BYTES.search(line), _SS_RECV.search(line)
                self.sockets[key] = (int(sent.group(1)) if sent else 0, int(recv.group(1)) if recv else 0)
                key = None

    def flows(self, role_of: dict[int, str]) -> dict[tuple[str, str], int]:
        """Bytes sent from role to role (sender side), e.g. ("source", "engine")."""
        totals: dict[tuple[str, str], int] = {}
        for key, value in self.sockets.items():
            pid, _local, remote = key
            sent, _recv = self._since_start(key, value)
            peer_pid = self.owner_of.get(remote)
            src = role_of.get(pid, "other")
            dst = role_of.get(peer_pid, "other") if peer_pid is not None else "other"
            totals[(src, dst)] = totals.get((src, dst), 0) + sent
        return totals

    def per_pid(self, pid: int, exclude_local_port: int | None = None) -> tuple[int, int]:
        sent = recv = 0
        for key, value in self.sockets.items():
            owner, local, _remote = key
            s, r = self._since_start(key, value)
            if owner == pid and (exclude_local_port is None or not local.endswith(f":{exclude_local_port}")):
                sent += s
                recv += r
        return sent, recv


@dataclass
class StreamStats:
    """What one player saw: first byte, first keyframe, first decoded frame, clock stamps and when they arrived."""

    requested_wall: float
    first_byte_wall: float | None = None
    first_keyframe_wall: float | None = None
    first_frame_wall: float | None = None  # the first video frame PyAV could decode from the bytes so far
    bytes: int = 0
    stamps: list[tuple[float, float]] = field(default_factory=list)  # (stamp s, arrival s), wall clock
    error: str | None = None
    ended_wall: float | None = None


_CLOCK_STAMP = struct.Struct(">Q")
_CLOCK_TAIL = 4 + len(CLOCK_MAGIC) + _CLOCK_STAMP.size  # bytes of a clock packet's start that may straddle chunks
_MAX_STARTUP_BYTES = 8 * 1024 * 1024


def first_video_frame_decodes(data: bytes) -> bool:
    """True when PyAV decodes at least one video frame from ``data`` (an MPEG-TS prefix)."""
    try:
        with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
            if not container.streams.video:
                return False
            for _frame in container.decode(video=0):
                return True
    except (av.error.FFmpegError, ValueError, EOFError):
        return False
    return False


class StreamWatcher:
    """What a player sees, cheaply enough for a hundred players in one process.

    Until the first frame decodes, bytes go through the project's TS parser (keyframe after PAT/PMT) and are kept
    for a decode attempt with PyAV after each new chunk. After that only clock packets are looked for, with
    ``bytes.find`` on their magic: parsing every TS packet in Python would not keep up with 100 players.
    """

    def __init__(self, stats: StreamStats) -> None:
        self.stats = stats
        self.packetizer = TsPacketizer()
        self.analyzer = TsAnalyzer()
        self.startup_bytes = bytearray()
        self.tail = b""
        self.last_attempt = 0.0

    def feed(self, data: bytes, now_wall: float) -> None:
        st = self.stats
        if st.first_byte_wall is None:
            st.first_byte_wall = now_wall
        st.bytes += len(data)
        if st.first_frame_wall is None:
            self._feed_startup(data, now_wall)
        self._scan_clocks(data, now_wall)

    def _feed_startup(self, data: bytes, now_wall: float) -> None:
        st = self.stats
        if st.first_keyframe_wall is None:
            for packet in self.packetizer.feed(data):
                info = self.analyzer.feed_packet(packet)
                if info.is_video_keyframe_start and self.analyzer.latest_pmt:
                    st.first_keyframe_wall = now_wall
                    break
        if len(self.startup_bytes) + len(data) > _MAX_STARTUP_BYTES:
            self.startup_bytes.clear()  # never decoded within 8 MB: give up on a first frame, keep measuring
            st.first_frame_wall = float("nan")
            return
        self.startup_bytes += data
        # A decode attempt costs a few ms; at most one per 20 ms per player is plenty to time the first frame.
        if st.first_keyframe_wall is not None and now_wall - self.last_attempt >= 0.02:
            self.last_attempt = now_wall
            if first_video_frame_decodes(bytes(self.startup_bytes)):
                st.first_frame_wall = now_wall
                self.startup_bytes = bytearray()

    def _scan_clocks(self, data: bytes, now_wall: float) -> None:
        buf = self.tail + data
        start = 0
        while True:
            at = buf.find(CLOCK_MAGIC, start)
            if at < 0 or at + len(CLOCK_MAGIC) + _CLOCK_STAMP.size > len(buf):
                break
            start = at + 1
            # The magic sits right after a 4-byte header: sync byte, PUSI + PID 0x1FF0.
            if at >= 4 and buf[at - 4] == 0x47 and buf[at - 3] & 0x5F == 0x5F and buf[at - 2] == 0xF0:
                stamp_us = _CLOCK_STAMP.unpack_from(buf, at + len(CLOCK_MAGIC))[0]
                self.stats.stamps.append((stamp_us / 1e6, now_wall))
        # Keep enough to find a clock packet cut between two chunks, but never one already counted.
        keep_from = max(len(buf) - _CLOCK_TAIL, start)
        self.tail = buf[keep_from:]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    pos = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[pos]


def playout(stamps: list[tuple[float, float]], reference: list[float], buffer_s: float,
            end_wall: float) -> dict[str, float | int | None]:  # fmt: skip
    """Continuity and stalls of one player against the source's own list of GOP stamps.

    - continuity_abs: share of the source's GOPs (stamped after the player's first GOP, and due before the
      player stopped) that arrived by ``stamp + buffer_s`` (an absolute deadline: delay budget = buffer).
    - continuity_rel: same, deadline ``first_arrival + buffer_s + (stamp - first_stamp) + stalls so far``
      (a player that starts after buffering ``buffer_s`` and pauses to rebuffer when a GOP is late).
    - stalls / stall_seconds: the pauses of that player model.
    """
    if not stamps:
        return {"continuity_abs": 0.0, "continuity_rel": 0.0, "stalls": 0, "stall_seconds": 0.0, "gops": 0}
    arrival = {round(s, 3): t for s, t in stamps}
    first_stamp, first_arrival = stamps[0]
    expected = [s for s in reference if s >= first_stamp - 1e-3 and s + buffer_s <= end_wall]
    if not expected:
        return {"continuity_abs": None, "continuity_rel": None, "stalls": 0, "stall_seconds": 0.0, "gops": 0}
    on_abs = on_rel = stalls = 0
    stalled = 0.0
    for s in expected:
        t = arrival.get(round(s, 3))
        if t is not None and t <= s + buffer_s:
            on_abs += 1
        due = first_arrival + buffer_s + (s - first_stamp) + stalled
        if t is None:
            continue  # skipped GOP: a miss, the player jumps over it
        if t <= due:
            on_rel += 1
        else:
            stalls += 1
            stalled += t - due
    return {"continuity_abs": on_abs / len(expected), "continuity_rel": on_rel / len(expected),
            "stalls": stalls, "stall_seconds": round(stalled, 3), "gops": len(expected)}  # fmt: skip
