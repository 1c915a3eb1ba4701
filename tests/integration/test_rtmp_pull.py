"""``node source --source rtmp://...`` against a real nginx-rtmp: pulled, remuxed to TS, signed, played by an engine.

A PyAV publisher (the test picture in real time, as OBS or ``ffmpeg -re`` would push it) publishes to nginx-rtmp;
the source node pulls the stream from nginx with FFmpeg's RTMP client. Also in-process: the reader's InputStatus
through a publisher restart, a codec it refuses, and a server that is not there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from swarmcast.ingest.rtmp_pull import read_rtmp_source
from swarmcast.ingest.status import InputStatus
from swarmcast.media.ts import TsAnalyzer, TsPacketizer
from tests.flvgen import rtmp_publisher
from tests.integration.chain import decode_video, engine, match_pieces, read_stream, source_node, source_pieces
from tests.nginx_rtmp import nginx_rtmp
from tests.procs import free_port


async def test_source_node_pulls_rtmp_and_an_engine_plays(tmp_path: Path) -> None:
    with (
        nginx_rtmp(tmp_path / "nginx") as nginx,
        rtmp_publisher(nginx.rtmp_url("stream")),
        source_node(tmp_path, nginx.rtmp_url("stream")) as source,
        engine(tmp_path) as api,
    ):
        stream = await read_stream(f"{api}/ace/getstream?url={source.transport_url}", 5.0)
        frames = decode_video(stream)
        assert len(frames) >= 50, f"only {len(frames)} frames decoded"
        assert frames[0].key_frame
        assert (frames[0].width, frames[0].height) == (320, 180)
        match_pieces(stream, await source_pieces(source))
    log = (tmp_path / "source.log").read_text()
    assert "source input connected (RTMP, remuxed to MPEG-TS)" in log


@contextlib.asynccontextmanager
async def reading(url: str, status: InputStatus, received: list[bytes],
                  reconnects: list[float]) -> AsyncIterator[None]:  # fmt: skip
    chunks = read_rtmp_source(url, reconnect_interval=0.3, read_timeout=3.0, status=status,
                              on_reconnect=lambda: reconnects.append(time.monotonic()))  # fmt: skip

    async def pump() -> None:
        async for chunk in chunks:
            received.append(chunk)

    task = asyncio.create_task(pump())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await chunks.aclose()  # type: ignore[attr-defined]


async def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not (callable(predicate) and predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def starts_decodable(data: bytes) -> bool:
    """PAT, PMT, then a video keyframe: what each connection's TS must open with."""
    analyzer = TsAnalyzer()
    return any(analyzer.feed_packet(packet).is_video_keyframe_start for packet in TsPacketizer().feed(data)[:8])


async def test_reader_through_a_publisher_restart(tmp_path: Path) -> None:
    status = InputStatus("rtmp")
    received: list[bytes] = []
    reconnects: list[float] = []
    with nginx_rtmp(tmp_path / "nginx") as nginx:
        url = nginx.rtmp_url("restart")
        async with reading(url, status, received, reconnects):
            with rtmp_publisher(url):
                await wait_for(lambda: status.connected and status.bytes_received > 100_000, 20, "the first bytes")
            assert starts_decodable(received[0])
            await wait_for(lambda: not status.connected, 15, "the end of the first publish")
            assert status.last_error is not None
            assert status.reconnects == 0
            before = len(received)
            with rtmp_publisher(url):
                await wait_for(lambda: status.connected and len(received) > before + 10, 20, "the second publish")
            assert status.reconnects == 1 and len(reconnects) == 1
            assert starts_decodable(received[before])
    frames = decode_video(b"".join(received[:before]))
    assert len(frames) > 10


async def test_reader_refuses_a_codec_it_cannot_segment(tmp_path: Path) -> None:
    status = InputStatus("rtmp")
    received: list[bytes] = []
    with nginx_rtmp(tmp_path / "nginx") as nginx:
        url = nginx.rtmp_url("sorenson")
        with rtmp_publisher(url, video="flv"):
            async with reading(url, status, received, []):
                await wait_for(lambda: status.last_error is not None and "flv1" in status.last_error, 20,
                               "the codec error")  # fmt: skip
    assert status.last_error is not None
    assert "video codec flv1 (Sorenson H.263) is not supported: publish H.264" in status.last_error
    assert received == []
    assert not status.connected


@pytest.mark.timeout(60)
async def test_reader_names_a_refused_connection() -> None:
    status = InputStatus("rtmp")
    async with reading(f"rtmp://127.0.0.1:{free_port()}/live/x", status, [], []):
        await wait_for(lambda: status.attempts >= 2, 20, "two attempts")
    assert status.last_error == "connection refused (nothing listens there?)"
