"""Hostile channel files at an engine's ``url=``: each refused with a 400 naming the rendition and key, never a 500;
a big valid channel costs the engine nothing but the master playlist (no swarm is joined for it)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from swarmcast import bencoding
from swarmcast.channel import MAX_RENDITIONS, Channel, Rendition
from swarmcast.transport import Descriptor
from tests.integration.chain import engine
from tests.procs import free_port

HOST = "127.0.0.1"


def _descriptor(name: str) -> Descriptor:
    return Descriptor(name=name, title=name, piece_size=18800, bitrate=50_000,
                      public_key=hashlib.sha256(name.encode()).digest())  # fmt: skip


def _channel(count: int) -> Channel:
    return Channel(name="evil", title="evil", renditions=tuple(
        Rendition(name=f"r{i}", bandwidth=1000 + i, transport=_descriptor(f"r{i}").encode(), width=64, height=64,
                  url=f"http://{HOST}:9/app/get_transport_file")
        for i in range(count)))  # fmt: skip


def _fields(channel: Channel) -> dict[bytes, Any]:
    value = bencoding.decode(channel.encode(), max_size=1 << 20)
    assert isinstance(value, dict)
    return value


def _bad_files() -> dict[str, tuple[bytes, str]]:
    bad_transport = _fields(_channel(1))
    bad_transport[b"renditions"][0][b"transport"] = b"d1:ai1ee"
    bad_codecs = _fields(_channel(2))
    bad_codecs[b"renditions"][1][b"codecs"] = b'avc1"\r\n#EXT-X-ENDLIST'
    too_many = _fields(_channel(MAX_RENDITIONS))
    too_many[b"renditions"].append({**too_many[b"renditions"][0], b"name": b"extra"})
    twice = _fields(_channel(2))
    twice[b"renditions"][1][b"transport"] = twice[b"renditions"][0][b"transport"]
    return {
        "transport": (bencoding.encode(bad_transport), "rendition 'r0' key 'transport': transport file has unknown"),
        "codecs": (bencoding.encode(bad_codecs), "rendition 'r1' key 'codecs'"),
        "too-many": (bencoding.encode(too_many), "'renditions' has 17 entries"),
        "twice": (bencoding.encode(twice), "one transport file for two renditions"),
        "trailing": (_channel(1).encode() + b"x", "channel file: "),
    }


@contextlib.asynccontextmanager
async def channel_server(files: dict[str, bytes]) -> AsyncIterator[str]:
    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=files[request.match_info["name"]])

    app = web.Application()
    app.router.add_get("/{name}.acechannel", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, HOST, port).start()
    try:
        yield f"http://{HOST}:{port}"
    finally:
        await runner.cleanup()


async def test_hostile_channel_files_are_400s_naming_the_fault(tmp_path: Path) -> None:
    bad = _bad_files()
    files = {name: data for name, (data, _) in bad.items()}
    files["big"] = _channel(MAX_RENDITIONS).encode()
    with engine(tmp_path) as api:
        async with channel_server(files) as evil, aiohttp.ClientSession() as http:
            for name, (_, message) in bad.items():
                for path in ("/ace/manifest.m3u8", "/ace/getstream"):
                    async with http.get(f"{api}{path}", params={"url": f"{evil}/{name}.acechannel"}) as response:
                        body = await response.json()
                        assert response.status == 400, (name, path, body)
                        assert message in body["error"], (name, body)
            # A valid channel of 16 renditions (behind a dead node): the master lists them all, nothing is joined.
            async with http.get(f"{api}/ace/manifest.m3u8", params={"url": f"{evil}/big.acechannel"}) as response:
                assert response.status == 200
                assert (await response.text()).count("#EXT-X-STREAM-INF:") == MAX_RENDITIONS
            async with http.get(f"{api}/app/stat") as response:
                assert (await response.json())["result"] == []
    log = (tmp_path / "engine.log").read_text()
    assert "Traceback" not in log and "unexpected error" not in log
