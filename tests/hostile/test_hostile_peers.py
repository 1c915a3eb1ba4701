"""Hostile peers over real connections: the offender is dropped, honest players are unaffected.

One chain (test signal, source, support node, engine) serves the whole module; each test attacks the support
node while an honest player reads through it, then checks the player got the source's own pieces.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from swarmcast.wire.messages import (
    Interested,
    Piece,
    PieceFlags,
    Request,
    Unchoke,
    Window,
)
from tests.integration.chain import (
    HOST,
    Source,
    decode_video,
    engine,
    match_pieces,
    read_stream,
    signal_source,
    source_node,
    source_pieces,
    support_node,
)
from tests.peerclient import TestPeer, frame


@dataclass
class Chain:
    source: Source
    support_port: int
    api: str
    content_id: bytes
    tmp: Path

    @property
    def player_url(self) -> str:
        return f"{self.api}/ace/getstream?url=http://{HOST}:{self.support_port}/app/get_transport_file"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    tmp = tmp_path_factory.mktemp("hostile")
    with contextlib.ExitStack() as stack:
        signal_url = stack.enter_context(signal_source(tmp))
        source = stack.enter_context(source_node(tmp, signal_url))
        # No --download-from: the support node must take data from any peer, hostile ones included.
        support = stack.enter_context(support_node(tmp, source.transport_url))
        api = stack.enter_context(engine(tmp))
        yield Chain(source, support, api, source.descriptor().content_id, tmp)


async def honest_player_ok(chain: Chain, player: asyncio.Task[bytes]) -> bytes:
    stream = await player
    assert len(decode_video(stream)) >= 60
    match_pieces(stream, await source_pieces(chain.source))
    return stream


async def test_forged_signature_is_banned_and_never_played(chain: Chain) -> None:
    player = asyncio.create_task(read_stream(chain.player_url, 5.0))
    peer = await TestPeer.connect(HOST, chain.support_port, chain.content_id, listen_port=1)
    window = await peer.window()
    assert window is not None
    future = window.first + len(window.have) + 2
    # Claim pieces just ahead of the live edge, the support node asks us for them, and we forge them.
    peer.send(Window(future, (True,) * 30, (True,) + (False,) * 29))
    peer.send(Unchoke())
    request = await peer.wait_for(Request, 10.0)
    assert isinstance(request, Request)
    evil = b"EVIL" * 4700
    peer.send(Piece(request.index, PieceFlags.RANDOM_ACCESS, os.urandom(64), evil))
    assert await peer.wait_closed(10.0), "the forger was not disconnected"
    peer.close()
    stream = await honest_player_ok(chain, player)
    assert b"EVIL" not in stream
    # Banned: the same peer id is refused on reconnection.
    again = await TestPeer.connect(HOST, chain.support_port, chain.content_id, listen_port=1)
    assert await again.wait_closed(10.0)
    again.close()


async def test_oversized_frame_is_dropped(chain: Chain) -> None:
    player = asyncio.create_task(read_stream(chain.player_url, 4.0))
    peer = await TestPeer.connect(HOST, chain.support_port, chain.content_id)
    assert await peer.window() is not None
    peer.send_raw((2**31).to_bytes(4, "big") + b"\x09")
    assert await peer.wait_closed(10.0)
    peer.close()
    await honest_player_ok(chain, player)


@pytest.mark.parametrize(
    "garbage",
    [b"SWCP\x07" + b"\x00" * 43, b"SWCX" + b"\x00" * 44, b"\x16\x03\x01\x02\x00" + os.urandom(300)],
    ids=["bad-version", "bad-magic", "tls-hello"],
)
async def test_garbage_handshake_is_dropped(chain: Chain, garbage: bytes) -> None:
    reader, writer = await asyncio.open_connection(HOST, chain.support_port)
    writer.write(garbage)
    async with asyncio.timeout(15):
        while await reader.read(65536):
            pass  # whatever the node answers (an HTTP 400 for non-peer bytes), it must then close
    writer.close()
    await honest_player_ok(chain, asyncio.create_task(read_stream(chain.player_url, 3.0)))


async def test_request_outside_window_is_banned(chain: Chain) -> None:
    player = asyncio.create_task(read_stream(chain.player_url, 4.0))
    peer = await TestPeer.connect(HOST, chain.support_port, chain.content_id)
    assert await peer.window() is not None
    peer.send(Interested())
    peer.send(Request(10**15))
    assert await peer.wait_closed(10.0)
    assert peer.closed is not None
    peer.close()
    await honest_player_ok(chain, player)


async def test_peer_that_never_reads_is_dropped(chain: Chain) -> None:
    player = asyncio.create_task(read_stream(chain.player_url, 18.0))
    peer = await TestPeer.connect(HOST, chain.support_port, chain.content_id, rcvbuf=4096)
    window = await peer.window()
    assert window is not None
    peer.send(Interested())
    assert await peer.wait_for(Unchoke, 10.0) is not None
    have = [window.first + i for i, bit in enumerate(window.have) if bit]
    assert have
    # Ask for far more than fits in any buffer, then never read again. (Repeated requests are served once and a
    # peer's queue is capped, so this costs the node little; asking faster than any honest peer is a FLOOD ban.)
    with contextlib.suppress(ConnectionError):
        for round_ in range(40):
            for index in have[-20:]:
                peer.send_raw(frame(7, index.to_bytes(8, "big")))
            await peer.writer.drain()
            await asyncio.sleep(0.05 if round_ < 39 else 0)
    await asyncio.sleep(14.0)
    assert await peer.wait_closed(20.0), "the peer that never read was not dropped"
    peer.close()
    log = (chain.tmp / "support.log").read_text()
    assert "TOO_SLOW" in log or "FLOOD" in log
    await honest_player_ok(chain, player)
