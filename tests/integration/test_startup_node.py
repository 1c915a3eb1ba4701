"""A start node with real processes: full, it hands off a viewer it has started for a newcomer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from swarmcast.wire.messages import GoodbyeReason, Have, Piece, PieceFlags, Request
from tests.integration.chain import HOST, signal_source, source_node
from tests.peerclient import TestPeer
from tests.procs import free_port, swarmcast_process

HANDOFF = 100_000  # --startup-handoff-bytes: under a second of the 1 Mbit/s test signal


@contextlib.contextmanager
def start_node(tmp: Path, url: str, port: int, *extra: str) -> Iterator[int]:
    args = ["node", "startup", "--bind", HOST, "--port", str(port), "--url", url, "--pid-file-dir", str(tmp),
            *extra]  # fmt: skip
    with swarmcast_process(args, stderr_path=tmp / "startup.log", wait_port=(HOST, port)):
        yield port


async def stat(port: int) -> dict[str, object]:
    async with aiohttp.ClientSession() as session, session.get(f"http://{HOST}:{port}/app/stat") as response:
        result: dict[str, object] = (await response.json())["result"]
        return result


async def viewer(port: int, content_id: bytes, ip: str, want_bytes: int) -> TestPeer:
    """A viewer from ``ip`` that downloads at least ``want_bytes`` (the newest pieces first) from the node."""
    peer = await TestPeer.connect(HOST, port, content_id, local_host=ip, listen_port=7000)
    window = await peer.window(10.0)
    assert window is not None, f"no WINDOW for {ip}: {peer.closed}"
    indices = [window.first + i for i, bit in enumerate(window.have) if bit]
    got, size = [], 0
    for index in reversed(indices):
        got.append(index)
        size += 5000  # a lower bound of a piece's size; what counts is what arrives
        if size >= want_bytes:
            break
    pieces = await peer.fetch_pieces(got, 20.0)
    assert pieces, f"{ip} got no piece"
    assert sum(len(p.data) for p in pieces.values()) >= min(want_bytes, 1), f"{ip} got too little"
    return peer


async def test_a_start_node_keeps_accepting_newcomers_when_full(tmp_path: Path) -> None:
    port = free_port()
    with contextlib.ExitStack() as stack:
        signal_url = stack.enter_context(signal_source(tmp_path))
        # The source grants the start node a support credential, as it does the broadcaster's support nodes.
        source = stack.enter_context(source_node(tmp_path, signal_url, "--support-node", f"{HOST}:{port}"))
        stack.enter_context(start_node(
            tmp_path, source.transport_url, port, "--max-peers", "3", "--startup-handoff-bytes", str(HANDOFF),
        ))  # fmt: skip
        content_id = source.descriptor().content_id
        for _ in range(100):  # a few seconds of stream in the start node's window
            if int(str((await stat(port))["cache_bytes"])) >= 3 * HANDOFF:
                break
            await asyncio.sleep(0.2)
        # Full: the source and two viewers. One got its start and plays on (it announces a piece the start node did
        # not give it: it got it elsewhere, first); one has barely begun.
        started = await viewer(port, content_id, "127.0.0.2", 2 * HANDOFF)
        started.send(Have(int(str((await stat(port))["newest_piece"])) + 1, PieceFlags.NONE))
        beginner = await viewer(port, content_id, "127.0.0.3", 1)
        assert (await stat(port))["peers"] == 3
        peers = [started, beginner]
        try:
            newcomer = await viewer(port, content_id, "127.0.0.4", 2 * HANDOFF)
            peers.append(newcomer)
            assert newcomer.closed is None  # served in full
            assert await started.wait_closed(10.0), "the started viewer was not handed off"
            assert started.closed is not None and started.closed.goodbye is GoodbyeReason.TOO_MANY_PEERS
            # The beginner is still connected and served.
            newest = int(str((await stat(port))["newest_piece"]))
            beginner.send(Request(newest))
            piece = await beginner.wait_for(Piece, 5.0)
            assert beginner.closed is None and piece is not None, f"the beginner was dropped: {beginner.closed}"
            figures = await stat(port)
            assert figures["handed_off"] == 1 and figures["peers"] == 3
        finally:
            for peer in peers:
                peer.close()
