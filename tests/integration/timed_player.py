"""A player that remembers when each byte came: for the outage and standby tests, which must tell what reached the
player before and after an event, and see the test signal's clock stamps (PID 0x1FF0, one per keyframe)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from swarmcast.media.ts import TS_PACKET_SIZE, TsAnalyzer
from tests.procs import SwarmcastProcess, swarmcast_process

HOST = "127.0.0.1"


@dataclass
class TimedStream:
    chunks: list[tuple[float, bytes]] = field(default_factory=list)  # (wall-clock arrival, data)
    error: str | None = None

    @property
    def data(self) -> bytes:
        return b"".join(chunk for _, chunk in self.chunks)

    def bytes_before(self, wall: float) -> bytes:
        return b"".join(chunk for at, chunk in self.chunks if at < wall)

    def bytes_after(self, wall: float) -> bytes:
        return b"".join(chunk for at, chunk in self.chunks if at >= wall)

    def longest_gap(self) -> float:
        times = [at for at, _ in self.chunks]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def stamps(self) -> list[tuple[float, float]]:
        """(stamp s, arrival s) for every clock packet, both wall clock: when the frame was drawn, when it came."""
        analyzer = TsAnalyzer()
        out: list[tuple[float, float]] = []
        pending = b""
        for at, chunk in self.chunks:
            buf = pending + chunk
            usable = len(buf) - len(buf) % TS_PACKET_SIZE
            for offset in range(0, usable, TS_PACKET_SIZE):
                info = analyzer.feed_packet(buf[offset : offset + TS_PACKET_SIZE])
                if info.clock_us is not None:
                    out.append((info.clock_us / 1e6, at))
            pending = buf[usable:]
        return out


async def read_timed(url: str, seconds: float, stream: TimedStream, *, max_bytes: int = 64 * 1024 * 1024) -> None:
    """Read ``url`` for ``seconds`` from its first byte into ``stream``; a broken connection is kept in ``error``."""
    timeout = aiohttp.ClientTimeout(total=seconds + 60, sock_read=45)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
            if response.status != 200:
                stream.error = f"{url} answered {response.status}: {await response.text()}"
                return
            deadline: float | None = None
            size = 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                now = time.time()
                deadline = deadline or time.monotonic() + seconds
                stream.chunks.append((now, chunk))
                size += len(chunk)
                if time.monotonic() >= deadline or size >= max_bytes:
                    return
            stream.error = "the engine ended the stream"
    except (aiohttp.ClientError, TimeoutError) as error:
        stream.error = f"{type(error).__name__}: {error}"


@contextlib.contextmanager
def run_testsrc(tmp: Path, port: int, *, log_name: str = "testsrc.log") -> Iterator[SwarmcastProcess]:
    args = ["testsrc", "--port", str(port), "--bitrate", "1M", "--size", "320x180", "--fps", "25"]
    with swarmcast_process(args, stderr_path=tmp / log_name, wait_port=(HOST, port)) as process:
        yield process


async def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
