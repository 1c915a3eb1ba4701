"""broadcaster/p2p.py with real rendition nodes: one signed source node per rendition, the channel file, an engine
playing each rendition, a killed node restarted, a re-published stream keeping its content ids.

The input is tests/integration/ts_standin.py (a real process serving the test signal at the broadcaster's
``/stream/<id>/<rendition>.ts`` paths); the registry hooks are called as the broadcaster calls them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from swarmcast.broadcaster.p2p import CHANNEL_PATH, P2PBroadcaster, P2PConfig, channel_handler
from swarmcast.channel import Channel
from swarmcast.transport import Descriptor
from tests.integration.chain import decode_video, engine, read_stream, wait_until
from tests.procs import free_port, swarmcast_process

HOST = "127.0.0.1"
SIZES = {"source": (320, 180), "P144p30fps16x9": (256, 144)}


@dataclass(frozen=True)
class Info:
    name: str
    width: int | None
    height: int | None
    bandwidth: int
    codecs: str | None = "avc1.42c01e,mp4a.40.2"
    frame_rate: float | None = 15.0


INFOS = [Info(name, w, h, 300_000) for name, (w, h) in SIZES.items()]


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    args = ["--port", str(port), *(f"{n}={w}x{h}" for n, (w, h) in SIZES.items())]
    with swarmcast_process(args, command=[sys.executable, "-m", "tests.integration.ts_standin"],
                           stderr_path=tmp_path / "standin.log", wait_port=(HOST, port)):  # fmt: skip
        yield f"http://{HOST}:{port}"


def _config(tmp: Path, base: str) -> P2PConfig:
    return P2PConfig(ts_base_url=base, publish_dir=tmp / "publish", metadata_dir=tmp / "meta", bind=HOST,
                     port_base=free_port(), max_nodes=4, pid_file_dir=tmp, restart_delay=0.5)  # fmt: skip


async def _channel(p2p: P2PBroadcaster, stream_id: str, count: int, timeout: float = 60.0) -> Channel:
    await wait_until(lambda: (c := p2p.channel_bytes(stream_id)) is not None and
                     len(Channel.decode(c).renditions) == count, timeout)  # fmt: skip
    data = p2p.channel_bytes(stream_id)
    assert data is not None
    return Channel.decode(data)


async def test_every_rendition_is_a_signed_broadcast_an_engine_plays(tmp_path: Path, standin: str) -> None:
    p2p = P2PBroadcaster(_config(tmp_path, standin))
    try:
        p2p.on_stream_started("hello_world", INFOS)
        channel = await _channel(p2p, "hello_world", 2)
        assert [r.name for r in channel.renditions] == ["source", "P144p30fps16x9"]
        publish = tmp_path / "publish"
        assert Channel.decode((publish / "hello_world.acechannel").read_bytes()) == channel
        for rendition in channel.renditions:
            # Each rendition: its own transport file in --publish-dir, its own key and numbering.
            acelive = publish / f"hello_world-{rendition.name}.acelive"
            assert acelive.read_bytes() == rendition.transport
            meta = tmp_path / "meta" / "hello_world" / rendition.name
            assert (meta / f"hello_world-{rendition.name}.sauth").is_file()
            assert (meta / f"hello_world-{rendition.name}.restart").is_file()
            assert rendition.url is not None and rendition.resolution == SIZES[rendition.name]
        keys = {Descriptor.decode(r.transport).public_key for r in channel.renditions}
        assert len(keys) == 2
        # The channel file over HTTP, as the broadcaster's origin serves it.
        app = web.Application()
        app.router.add_get(CHANNEL_PATH, channel_handler(p2p))
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, HOST, port).start()
        channel_url = f"http://{HOST}:{port}/stream/hello_world.acechannel"
        try:
            with engine(tmp_path) as api:
                await _engine_plays_the_channel(api, channel_url, channel)
        finally:
            await runner.cleanup()
    finally:
        await p2p.close()
    assert not (tmp_path / "publish" / "hello_world.acechannel").exists()


async def _engine_plays_the_channel(api: str, channel_url: str, channel: Channel) -> None:
    # getstream of the channel plays its first (source) rendition.
    data = await read_stream(f"{api}/ace/getstream?url={channel_url}", 3.0)
    assert {(f.width, f.height) for f in decode_video(data)} == {SIZES["source"]}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        # The master playlist lists every rendition, in the channel's order, each the engine's own playlist.
        async with session.get(f"{api}/ace/manifest.m3u8", params={"url": channel_url}) as response:
            assert response.status == 200, await response.text()
            assert response.content_type == "application/vnd.apple.mpegurl"
            master = await response.text()
        lines = master.splitlines()
        assert lines[0] == "#EXTM3U"
        infs = [line for line in lines if line.startswith("#EXT-X-STREAM-INF:")]
        uris = [line for line in lines if line and not line.startswith("#")]
        assert len(infs) == len(uris) == 2
        for inf, uri, rendition in zip(infs, uris, channel.renditions, strict=True):
            width, height = SIZES[rendition.name]
            assert f"RESOLUTION={width}x{height}" in inf and "BANDWIDTH=300000" in inf
            assert 'CODECS="avc1.42c01e,mp4a.40.2"' in inf and "FRAME-RATE=15.000" in inf
            assert uri == f"manifest.m3u8?infohash={rendition.content_id.hex()}"
            # Each variant: a live media playlist of segments of that rendition, at its size.
            async with session.get(f"{api}/ace/{uri}") as response:
                assert response.status == 200, await response.text()
                media = await response.text()
            segment = next(line for line in media.splitlines() if line and not line.startswith("#"))
            async with session.get(f"{api}/ace/{segment}") as response:
                assert response.status == 200
                frames = decode_video(await response.read())
            assert frames and {(f.width, f.height) for f in frames} == {(width, height)}
            # And through /ace/getstream by the rendition's id, which the engine learned from the channel.
            data = await read_stream(f"{api}/ace/getstream?infohash={rendition.content_id.hex()}", 2.0)
            assert {(f.width, f.height) for f in decode_video(data)} == {(width, height)}


async def test_killed_node_is_restarted_and_republished_stream_keeps_its_ids(tmp_path: Path, standin: str) -> None:
    p2p = P2PBroadcaster(_config(tmp_path, standin))
    try:
        p2p.on_stream_started("hello_world", INFOS[:1])
        first = await _channel(p2p, "hello_world", 1)
        node = p2p.streams["hello_world"].nodes[0]
        assert node.process is not None
        os.kill(node.process.pid, signal.SIGKILL)
        await wait_until(lambda: node.starts == 2 and node.up, 60.0)
        restarted = await _channel(p2p, "hello_world", 1)
        assert restarted.renditions[0].content_id == first.renditions[0].content_id
        # The stream ends (its nodes stop) and is published again: same keys, same content ids.
        p2p.on_stream_ended("hello_world")
        await asyncio.sleep(0)
        p2p.on_stream_started("hello_world", INFOS[:1])
        again = await _channel(p2p, "hello_world", 1)
        assert again.renditions[0].content_id == first.renditions[0].content_id
        assert p2p.streams["hello_world"].nodes[0] is not node
    finally:
        await p2p.close()
