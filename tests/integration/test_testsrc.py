"""``swarmcast testsrc`` as a real process, and the broadcaster behind it, checked by decoding what comes out."""

from __future__ import annotations

import asyncio
import io
import itertools
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import av
import pytest
from aiohttp import web

from swarmcast.media.testsignal import TestSignalBroadcaster, TestSignalConfig, make_app
from swarmcast.media.ts import TS_PACKET_SIZE, TsAnalyzer
from tests.procs import SwarmcastProcess, free_port, swarmcast_process

HOST = "127.0.0.1"
WIDTH, HEIGHT, FPS = 480, 270, 25
READ_SECONDS = 3.0


@pytest.fixture
def testsrc(tmp_path: Path) -> Iterator[tuple[SwarmcastProcess, int]]:
    port = free_port()
    args = ["testsrc", "--port", str(port), "--bitrate", "1M", "--size", f"{WIDTH}x{HEIGHT}", "--fps", str(FPS)]
    with swarmcast_process(args, stderr_path=tmp_path / "testsrc.stderr", wait_port=(HOST, port)) as process:
        yield process, port


async def _read_for(session: aiohttp.ClientSession, url: str, seconds: float) -> bytes:
    data = bytearray()
    async with session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "video/mp2t"
        try:
            async with asyncio.timeout(seconds):
                while chunk := await response.content.readany():
                    data += chunk
        except TimeoutError:
            pass
    return bytes(data)


def _check_stream(data: bytes, stderr: str) -> None:
    assert len(data) > 100_000, f"only {len(data)} bytes; stderr:\n{stderr}"
    data = data[: len(data) - len(data) % TS_PACKET_SIZE]  # the read stopped mid-packet
    now = time.time()

    # TS level: starts on a packet boundary, at a keyframe, with a clock packet about once a second.
    analyzer = TsAnalyzer()
    infos = [analyzer.feed_packet(data[i : i + TS_PACKET_SIZE]) for i in range(0, len(data), TS_PACKET_SIZE)]
    assert data[0] == 0x47
    assert infos[0].pid in (0x0000, 0x0011)
    first_video = next(info for info in infos if info.pid == analyzer.video_pid)
    assert first_video.is_video_keyframe_start
    clocks = [info.clock_us / 1e6 for info in infos if info.clock_us is not None]
    # The GOP we join with brings one clock packet, then one per second: 3 s of reading gives 3 to 5.
    assert 2 <= len(clocks) <= 6, clocks
    assert all(abs(clock - now) < 10 for clock in clocks), (clocks, now)
    gaps = [b - a for a, b in itertools.pairwise(clocks)]
    assert all(0.5 < gap < 2.0 for gap in gaps), gaps

    # What a player sees: H.264 of the right size starting on a keyframe, and AAC.
    with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
        video: list[av.VideoFrame] = []
        audio_frames = 0
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                video.append(frame)
            else:
                audio_frames += 1
    assert video[0].key_frame
    assert (video[0].width, video[0].height) == (WIDTH, HEIGHT)
    assert len(video) >= FPS * 2  # about READ_SECONDS plus the joined GOP; generous for a loaded machine
    assert audio_frames > 0


async def test_two_clients_get_a_decodable_live_stream(testsrc: tuple[SwarmcastProcess, int]) -> None:
    process, port = testsrc
    url = f"http://{HOST}:{port}/stream.ts"
    async with aiohttp.ClientSession() as session:
        first, second = await asyncio.gather(
            _read_for(session, url, READ_SECONDS), _read_for(session, url, READ_SECONDS)
        )
        async with session.get(f"http://{HOST}:{port}/") as response:
            assert response.status == 200
            assert "/stream.ts" in await response.text()
    _check_stream(first, process.stderr_tail())
    _check_stream(second, process.stderr_tail())
    assert f"testsrc serving http://{HOST}:{port}/stream.ts" in process.stderr_tail()


def test_sigterm_exits_cleanly(testsrc: tuple[SwarmcastProcess, int]) -> None:
    process, port = testsrc
    # A client mid-stream must not hold up the shutdown.
    with socket.create_connection((HOST, port)) as client:
        client.sendall(b"GET /stream.ts HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.recv(4096).startswith(b"HTTP/1.1 200")
        assert process.stop(timeout=10) == 0
    assert "Traceback" not in process.stderr_tail()


def test_sigint_exits_cleanly(testsrc: tuple[SwarmcastProcess, int]) -> None:
    process, _ = testsrc
    process.signal(signal.SIGINT)
    assert process.popen.wait(10) == 0
    assert "Traceback" not in process.stderr_tail()


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--bitrate", "fast"), ("--bitrate", "10k"), ("--size", "640by360"), ("--size", "641x360"), ("--fps", "0")],
)
def test_bad_arguments_are_named(flag: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "swarmcast.cli", "testsrc", flag, value],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert flag in result.stderr
    assert value in result.stderr


def test_busy_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind((HOST, 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "swarmcast.cli", "testsrc", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"cannot listen on {HOST}:{port}" in result.stderr


# --- the broadcaster in-process ------------------------------------------------------------------------------------


async def test_lagging_subscriber_is_dropped_without_slowing_others() -> None:
    broadcaster = TestSignalBroadcaster(
        TestSignalConfig(bitrate=2_000_000, width=320, height=180), max_queue_bytes=200_000
    )
    broadcaster.start()
    try:
        dropped: list[bool] = []
        lagging = broadcaster.subscribe(on_drop=lambda: dropped.append(True))
        with broadcaster.subscribe() as reader:
            received = 0
            async with asyncio.timeout(20):
                while not lagging.dropped:
                    data = await reader.get()
                    assert data is not None
                    received += len(data)
            assert dropped == [True]
            assert await lagging.get() is None
            assert broadcaster.subscriber_count == 1
            assert received > 150_000
            # The reader carries on.
            assert await reader.get()
    finally:
        await broadcaster.close()
    assert reader.closed


async def test_stalled_http_client_is_cut_off() -> None:
    broadcaster = TestSignalBroadcaster(
        TestSignalConfig(bitrate=8_000_000, width=320, height=180), max_queue_bytes=200_000
    )
    runner = web.AppRunner(make_app(broadcaster))
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, HOST, port)
    await site.start()
    broadcaster.start()
    stalled = socket.socket()
    try:
        # A tiny receive window and no reading: the server's writes back up into the subscriber's queue.
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((HOST, port))
        stalled.sendall(b"GET /stream.ts HTTP/1.1\r\nHost: x\r\n\r\n")
        async with aiohttp.ClientSession() as session, session.get(f"http://{HOST}:{port}/stream.ts") as response:
            async with asyncio.timeout(60):
                while broadcaster.subscriber_count < 2:
                    await response.content.readany()
                while broadcaster.subscriber_count > 1:
                    assert await response.content.readany()
            # The healthy client still streams.
            assert await response.content.readany()
        # The stalled connection was aborted: reading it to the end finds EOF or a reset.
        stalled.setblocking(False)
        async with asyncio.timeout(10):
            while True:
                try:
                    if not stalled.recv(1 << 20):
                        break
                except BlockingIOError:
                    await asyncio.sleep(0.05)
                except ConnectionResetError:
                    break
    finally:
        stalled.close()
        await broadcaster.close()
        await runner.cleanup()
