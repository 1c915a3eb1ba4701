"""The inputs that crashed or hung bencoder.pyx 3.0.3 are errors now, in the decoder and over the network.

bencoder.pyx segfaulted on the first two, overflowed the C stack on the deep lists, and looped for ever with the
GIL held on the 79-byte descriptor; an engine asked to play a ``url=`` that answered one of them died with
SIGSEGV or stopped answering, SIGTERM included.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from swarmcast.bencoding import BencodeError, decode
from swarmcast.discovery.tracker_protocol import TrackerError, parse_announce_response
from swarmcast.transport import Descriptor, TransportError
from swarmcast.wire.messages import MAX_METADATA_SIZE
from tests.integration.chain import HOST
from tests.procs import free_port, swarmcast_process

HANG_INPUT = b"d7:bitratei5e10:categoriesl5:sporte12:content_type10:video/mp2t4:name4:news-10:"
CRASH_INPUTS = {
    "segfault d-9:i": b"d-9:i",
    "segfault d-14:faoe": b"d-14:faoe",
    "stack l*43700": b"l" * 43700,
    "stack l*60000": b"l" * 60000,
    "hang 79 bytes": HANG_INPUT,
}


@pytest.mark.parametrize("data", list(CRASH_INPUTS.values()), ids=list(CRASH_INPUTS))
def test_old_crash_inputs_are_bencode_errors(data: bytes) -> None:
    started = time.process_time()
    with pytest.raises(BencodeError):
        decode(data, max_size=1 << 20)
    with pytest.raises(TransportError):
        Descriptor.decode(data[:MAX_METADATA_SIZE])
    with pytest.raises(TrackerError):
        parse_announce_response(data)
    assert time.process_time() - started < 0.5  # microseconds in fact; bencoder.pyx never returned on the last


@contextlib.asynccontextmanager
async def serve(body: bytes, hits: list[str], *, transport_file: bytes | None = None) -> AsyncIterator[int]:
    """An HTTP server on loopback that answers ``body`` to every GET (but ``transport_file`` to ``*.acelive``)."""

    async def answer(request: web.Request) -> web.Response:
        hits.append(request.path)
        if transport_file is not None and request.path.endswith(".acelive"):
            return web.Response(body=transport_file, content_type="application/octet-stream")
        return web.Response(body=body, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, HOST, port)
    await site.start()
    try:
        yield port
    finally:
        await runner.cleanup()


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as response:
        return response.status, await response.text()


@pytest.mark.parametrize("body", [b"l" * 60000, HANG_INPUT], ids=["l*60000", "hang-79-bytes"])
async def test_engine_survives_a_hostile_transport_file_url(tmp_path: Path, body: bytes) -> None:
    hits: list[str] = []
    async with serve(body, hits) as port:
        http_port, p2p_port = free_port(), free_port()
        args = ["engine", "--http-port", str(http_port), "--port", str(p2p_port), "--bind", HOST,
                "--pid-file-dir", str(tmp_path), "--startup-timeout", "20"]  # fmt: skip
        with swarmcast_process(args, stderr_path=tmp_path / "engine.log", wait_port=(HOST, http_port)) as engine:
            api = f"http://{HOST}:{http_port}"
            async with aiohttp.ClientSession() as session:
                status, text = await _get(session, f"{api}/ace/getstream?url=http://{HOST}:{port}/news.acelive")
                assert hits == ["/news.acelive"]
                assert 400 <= status < 500, text
                assert "transport file" in text
                # Still up and still answering: bencoder.pyx had killed it (SIGSEGV) or wedged it (GIL held).
                assert engine.popen.poll() is None, engine.stderr_tail()
                status, _ = await _get(session, f"{api}/webui/api/service?method=get_version")
                assert status == 200
            # In a thread: our server runs on this loop and must answer the engine's last requests while it stops.
            assert await asyncio.to_thread(engine.stop) == 0, engine.stderr_tail()


async def test_engine_survives_a_hostile_tracker_answer(tmp_path: Path) -> None:
    """A node serving a real transport file but answering /announce with the old crash input."""
    descriptor = Descriptor(name="news", title="news", piece_size=65536, bitrate=100_000, public_key=bytes(32))
    hits: list[str] = []
    async with serve(b"l" * 60000, hits, transport_file=descriptor.encode()) as port:
        http_port, p2p_port = free_port(), free_port()
        args = ["engine", "--http-port", str(http_port), "--port", str(p2p_port), "--bind", HOST,
                "--pid-file-dir", str(tmp_path), "--startup-timeout", "5"]  # fmt: skip
        with swarmcast_process(args, stderr_path=tmp_path / "engine.log", wait_port=(HOST, http_port)) as engine:
            api = f"http://{HOST}:{http_port}"
            async with aiohttp.ClientSession() as session:
                player = asyncio.create_task(_get(session, f"{api}/ace/getstream?url=http://{HOST}:{port}/n.acelive"))
                assert await _poll(lambda: "/announce" in hits, 20.0), (hits, engine.stderr_tail())
                await asyncio.sleep(0.5)  # the answer has been parsed by now
                assert engine.popen.poll() is None, engine.stderr_tail()
                status, _ = await _get(session, f"{api}/webui/api/service?method=get_version")
                assert status == 200
                # No pieces will ever come: the player gets the startup-timeout error, from a live engine.
                status, text = await player
                assert status >= 400, text
            # In a thread: our server runs on this loop and must answer the engine's last requests while it stops.
            assert await asyncio.to_thread(engine.stop) == 0, engine.stderr_tail()


async def _poll(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.2)
    return predicate()
