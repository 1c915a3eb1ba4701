"""Issue 7 attacks by peers over real connections: a lying HAVE, request floods, a PEX reflector.

One chain (test signal, source, support node, engine) serves the module, as in test_hostile_peers.py; each test
attacks the support node (or the source) while an honest player reads through it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from swarmcast.wire.messages import MAX_INDEX, HandshakeFlags, Have, Interested, KeepAlive, Pex, PieceFlags, Unchoke
from tests.hostile.test_hostile_peers import Chain, honest_player_ok
from tests.integration.chain import HOST, engine, read_stream, signal_source, source_node, support_node
from tests.peerclient import TestPeer, frame
from tests.procs import free_port


@dataclass
class AttackChain(Chain):
    engine_port: int = 0  # the engine's P2P port


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AttackChain]:
    tmp = tmp_path_factory.mktemp("peer-attacks")
    engine_port = free_port()
    with contextlib.ExitStack() as stack:
        signal_url = stack.enter_context(signal_source(tmp))
        source = stack.enter_context(source_node(tmp, signal_url))
        support = stack.enter_context(support_node(tmp, source.transport_url))
        api = stack.enter_context(engine(tmp, "--port", str(engine_port)))  # the last --port wins
        yield AttackChain(source, support, api, source.descriptor().content_id, tmp, engine_port)


def _rss(pid: int) -> int:
    """Resident set size in bytes, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _support_pid(chain: Chain) -> int:
    return int((chain.tmp / f"acestream-{chain.support_port}.pid").read_text())


async def test_have_for_the_last_index_is_a_ban_not_a_new_live_edge(chain: Chain) -> None:
    peer = await TestPeer.connect(HOST, chain.support_port, chain.content_id, listen_port=1)
    assert await peer.window() is not None
    peer.send(Unchoke())
    peer.send(Have(MAX_INDEX, PieceFlags.RANDOM_ACCESS))
    assert await peer.wait_closed(10.0), "the liar was not disconnected"
    peer.close()
    # The support node still follows the source: a player reading through it gets the source's pieces.
    await honest_player_ok(chain, asyncio.create_task(read_stream(chain.player_url, 5.0)))
    log = (chain.tmp / "support.log").read_text()
    assert "IMPLAUSIBLE_INDEX" in log
    assert str(MAX_INDEX - 1) not in log  # the old code logged "skipping pieces N..9223372036854775806"


async def test_have_for_the_last_index_against_an_engine_p2p_port(chain: AttackChain) -> None:
    player = asyncio.create_task(read_stream(chain.player_url, 6.0))
    window = None
    for _ in range(30):  # until the engine has joined the broadcast for its player (bounded: 15 s)
        peer = await TestPeer.connect(HOST, chain.engine_port, chain.content_id, listen_port=1)
        window = await peer.window(1.0)
        if window is not None:
            break
        peer.close()
        await asyncio.sleep(0.5)
    assert window is not None, "the engine never served the broadcast on its P2P port"
    peer.send(Unchoke())
    peer.send(Have(MAX_INDEX, PieceFlags.RANDOM_ACCESS))
    assert await peer.wait_closed(10.0), "the liar was not disconnected"
    peer.close()
    await honest_player_ok(chain, player)
    assert "IMPLAUSIBLE_INDEX" in (chain.tmp / "engine.log").read_text()


@pytest.mark.parametrize("target", ["support", "source-as-seeder"])
async def test_a_request_flood_in_one_write_does_not_exhaust_memory(chain: Chain, target: str) -> None:
    player = asyncio.create_task(read_stream(chain.player_url, 6.0))
    if target == "support":
        port, pid, flags, count = chain.support_port, _support_pid(chain), HandshakeFlags.NONE, 10_000
    else:
        port, pid, flags, count = chain.source.port, chain.source.process.pid, HandshakeFlags.SEEDER, 5_000
    before = _rss(pid)
    peer = await TestPeer.connect(HOST, port, chain.content_id, flags=flags, rcvbuf=4096)
    window = await peer.window()
    assert window is not None
    peer.send(Interested())
    assert await peer.wait_for(Unchoke, 10.0) is not None
    index = window.first + max(i for i, bit in enumerate(window.have) if bit)
    peer.send_raw(frame(7, index.to_bytes(8, "big")) * count)  # 130 KB (65 KB) of REQUESTs for one piece
    await peer.writer.drain()
    peak = before
    for _ in range(20):  # never read; watch the victim's memory for a few seconds
        await asyncio.sleep(0.2)
        peak = max(peak, _rss(pid))
    print(f"request flood against {target}: RSS {before >> 20} MiB -> peak {peak >> 20} MiB")
    assert peak - before < 64 * 1024 * 1024, f"RSS grew by {(peak - before) >> 20} MiB"  # old code: 339 MB+
    assert await peer.wait_closed(10.0), "the flooder was not disconnected"
    peer.close()
    await honest_player_ok(chain, player)


async def test_pex_reflector_dials_each_address_rarely_and_a_hundred_at_most(chain: Chain) -> None:
    hosts = [f"127.0.1.{i}" for i in range(1, 151)]
    dials: Counter[str] = Counter()

    async def not_our_protocol(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dials[writer.get_extra_info("sockname")[0]] += 1
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    port = free_port()  # one port on every host (port 0 would give each host a port of its own)
    server = await asyncio.start_server(not_our_protocol, host=hosts, port=port)
    try:
        peer = await TestPeer.connect(HOST, chain.support_port, chain.content_id)
        assert await peer.window() is not None
        for k in range(3):  # 150 bogus addresses, as in the attack
            peer.send(Pex(tuple((host, port) for host in hosts[50 * k : 50 * k + 50])))
        await asyncio.sleep(12.0)
        peer.close()
    finally:
        server.close()
        await server.wait_closed()
    print(f"PEX reflector: {len(dials)} addresses dialled, {sum(dials.values())} connections in 12 s")
    assert dials, "the support node dialled nothing at all: the test did not reach it"
    assert len(dials) <= 100  # the old code dialled all 150
    assert max(dials.values()) <= 3, dials.most_common(3)  # old code: about one dial per address per second


async def test_silent_peers_from_many_addresses_do_not_keep_newcomers_out(chain: Chain) -> None:
    """A support node full of peers that only send keep-alives (one per address, so no per-address limit applies)
    drops the one idle longest for an honest newcomer, instead of refusing newcomers until the silent ones time out."""
    with support_node(chain.tmp, chain.source.transport_url, "--max-peers", "6", name="support-full") as port:
        # Pieces flow first, so that making room is what is tested (a node whose places silent peers took before it
        # reached its source gives one to the source: tests/unit/test_swarm_attacks.py).
        probe = await TestPeer.connect(HOST, port, chain.content_id, listen_port=7099, local_host="127.0.5.99")
        try:
            assert await probe.wait_for(Have, 20.0) is not None, "the new support node announced no piece in 20 s"
        finally:
            probe.close()
        await asyncio.sleep(1.0)  # the node sees the probe go, so its place is not free for the newcomer later
        silent = []
        for i in range(8):  # more than fit: 6 places, the source's among them
            peer = await TestPeer.connect(HOST, port, chain.content_id, listen_port=7000 + i,
                                          local_host=f"127.0.5.{i + 1}")  # fmt: skip
            silent.append(peer)
        refused = [await peer.wait_closed(0.5) for peer in silent]
        assert any(refused), "the node was not full: the test would not show a peer making room"
        await asyncio.sleep(13.0)  # longer than a peer may idle when a newcomer needs its place (10 s)
        for peer in silent:
            peer.send(KeepAlive())
            peer.flush()
        newcomer = await TestPeer.connect(HOST, port, chain.content_id, listen_port=7100, local_host="127.0.5.100")
        window = await newcomer.window(5.0)
        assert window is not None and window.have, "the honest newcomer was refused: silent peers hold every place"
        # Not asserted: who made room. The idle longest goes (unit tests: test_swarm_attacks.py), which here may be
        # one of the chain's own peers, and the chain's engine may also leave by itself (an idle broadcast).
        for peer in [*silent, newcomer]:
            peer.close()
