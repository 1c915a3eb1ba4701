"""``swarmcast broadcaster --p2p`` as a real process, fed by ``swarmcast testsrc --rtmp``: every rendition of a
one-profile ladder is a signed P2P broadcast with its own transport file, the origin serves the channel file, an
engine plays each rendition (bytes decoded at the rendition's size) and lists all of them in its master playlist,
a killed rendition node is restarted, and a republished stream keeps its content ids."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from swarmcast.channel import Channel, ChannelError
from tests.integration.chain import decode_video, engine, read_stream, wait_until
from tests.procs import SwarmcastProcess, free_port, swarmcast_process

HOST = "127.0.0.1"
SIZES = {"source": (320, 180), "P144p30fps16x9": (256, 144)}


@contextmanager
def broadcaster(tmp: Path) -> Iterator[tuple[SwarmcastProcess, int, int]]:
    rtmp, http = free_port(), free_port()
    args = ["broadcaster", "--rtmp-addr", f"{HOST}:{rtmp}", "--http-addr", f"{HOST}:{http}",
            "--transcoding-options", "P144p30fps16x9", "--segment-duration", "1", "--reconnect-grace", "1",
            "--p2p", "--p2p-port-base", str(free_port()), "--p2p-max-nodes", "4",
            "--publish-dir", str(tmp / "publish"), "--metadata-dir", str(tmp / "meta")]  # fmt: skip
    with swarmcast_process(args, stderr_path=tmp / "broadcaster.log", wait_port=(HOST, http)) as process:
        yield process, rtmp, http


@contextmanager
def publisher(tmp: Path, rtmp: int, n: int) -> Iterator[SwarmcastProcess]:
    args = ["testsrc", "--rtmp", f"rtmp://{HOST}:{rtmp}/hello_world", "--size", "320x180", "--fps", "15",
            "--bitrate", "400k"]  # fmt: skip
    with swarmcast_process(args, stderr_path=tmp / f"testsrc{n}.log") as process:
        yield process


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    try:
        async with session.get(url) as response:
            return response.status, await response.read()
    except (aiohttp.ClientError, TimeoutError):
        return 0, b""


async def _channel(session: aiohttp.ClientSession, url: str, process: SwarmcastProcess, timeout: float = 90.0,
                   ) -> Channel:  # fmt: skip
    async with asyncio.timeout(timeout):
        while True:
            assert process.popen.poll() is None, process.stderr_tail()
            status, body = await _get(session, url)
            if status == 200:
                try:
                    channel = Channel.decode(body)
                except ChannelError:
                    pass
                else:
                    if len(channel.renditions) == len(SIZES):
                        return channel
            await asyncio.sleep(0.5)


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(p) for p in (task / "children").read_text().split()}
    return found


@pytest.mark.timeout(170)
async def test_broadcaster_p2p_renditions_play_through_an_engine(tmp_path: Path) -> None:
    timeout = aiohttp.ClientTimeout(total=60)
    with broadcaster(tmp_path) as (process, rtmp, http), engine(tmp_path) as api:
        channel_url = f"http://{HOST}:{http}/stream/hello_world.acechannel"
        async with aiohttp.ClientSession(timeout=timeout) as session:
            with publisher(tmp_path, rtmp, 1):
                channel = await _channel(session, channel_url, process)
                assert [r.name for r in channel.renditions] == list(SIZES)
                for rendition in channel.renditions:
                    assert rendition.resolution == SIZES[rendition.name]
                    acelive = tmp_path / "publish" / f"hello_world-{rendition.name}.acelive"
                    assert acelive.read_bytes() == rendition.transport
                    sauth = tmp_path / "meta" / "hello_world" / rendition.name / f"hello_world-{rendition.name}.sauth"
                    assert sauth.is_file()
                # The engine's master playlist lists every rendition ...
                status, body = await _get(session, f"{api}/ace/manifest.m3u8?url={channel_url}")
                assert status == 200, body
                master = body.decode()
                for rendition in channel.renditions:
                    width, height = SIZES[rendition.name]
                    assert f"RESOLUTION={width}x{height}" in master
                    assert f"manifest.m3u8?infohash={rendition.content_id.hex()}" in master
                # ... and plays each through /ace/getstream, at the rendition's size.
                for rendition in channel.renditions:
                    data = await read_stream(f"{api}/ace/getstream?infohash={rendition.content_id.hex()}", 2.0)
                    sizes = {(f.width, f.height) for f in decode_video(data)}
                    assert sizes == {SIZES[rendition.name]}, rendition.name
                # A rendition node killed is restarted, with the same content id.
                nodes = _children(process.pid)
                assert len(nodes) == len(SIZES)
                victim = min(nodes)
                os.kill(victim, signal.SIGKILL)
                await wait_until(lambda: victim not in (now := _children(process.pid)) and len(now) == len(SIZES),
                                 60.0)  # fmt: skip
                restarted = await _channel(session, channel_url, process)
                assert [r.content_id for r in restarted.renditions] == [r.content_id for r in channel.renditions]
            # The publisher gone past the grace: the stream ends, its nodes stop, the channel goes.
            for _ in range(100):
                if (await _get(session, channel_url))[0] == 404 and not _children(process.pid):
                    break
                await asyncio.sleep(0.3)
            else:
                raise AssertionError("the stream's nodes did not stop after the publisher went")
            # Published again: the same keys, so the same content ids.
            with publisher(tmp_path, rtmp, 2):
                again = await _channel(session, channel_url, process)
                assert [r.content_id for r in again.renditions] == [r.content_id for r in channel.renditions]
