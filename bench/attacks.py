"""The attacks of issue 7's "Why", as real peers and clients on loopback (see docs/benchmarks-hostile.md).

Each attack is an ``AttackSpec``: the node it aims at (``victim``, sampled for the table), what it does during the
"during" phase (``run(ctx, seconds)``, which returns within about ``seconds`` and closes what it opened), and
optionally a ``prepare`` step before the baseline (listeners that must count from the start). Every loop that
sends is bounded both in count and in time; a victim that dies or stops answering is a result, never an error of
the bench, so every send and read here tolerates a closed or reset connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tests.peerclient import TestPeer

from bench.attack_tools import (
    INTERESTED,
    UNCHOKE,
    Ctx,
    attacker_host,
    close_all,
    connect_many,
    first_window,
    have_frame,
    hold,
    newcomers,
    newest_index,
    open_peer,
    pex_frame,
    remaining,
    request_frame,
    trickle,
    window_frame,
)
from bench.attacks_http import OUTAGE_SECONDS, bencode_bomb, engine_api, slow_http, source_outage
from bench.hostile_chain import free_port
from swarmcast.wire.connection import MessageReceived
from swarmcast.wire.messages import Have, Piece, Request, Unchoke

MAX_INDEX = 2**63 - 1
RANDOM_ACCESS = 1
SEEDER = 2


@dataclass(frozen=True)
class AttackSpec:
    name: str
    victim: str  # "source", "support" or "engine": the node whose RSS/CPU/descriptors the table shows
    what: str
    run: Callable[[Ctx, float], Awaitable[None]]
    prepare: Callable[[Ctx], Awaitable[None]] | None = None
    min_during: float = 0.0  # the during phase lasts max(--duration, this)
    chain: dict[str, Any] = field(default_factory=dict)  # ChainOptions overrides


# --- have-overflow -----------------------------------------------------------------------------------------------


async def have_overflow(ctx: Ctx, seconds: float) -> None:
    until = time.monotonic() + seconds
    peers: list[TestPeer] = []
    try:
        for n, role in enumerate(("support", "engine")):
            peer = await open_peer(ctx.p2p_port(role), ctx.content_id, src=attacker_host(n))
            peers.append(peer)
            ctx.notes[f"{role}_sent_window"] = await first_window(peer) is not None
            peer.send_raw(have_frame(MAX_INDEX, RANDOM_ACCESS))
            ctx.counters["have_frames_sent"] += 1
        await hold(peers, until, ctx)
    finally:
        close_all(peers)


# --- request-flood -----------------------------------------------------------------------------------------------

FLOOD_REQUESTS_PER_WRITE = 10_000
FLOOD_SECONDS = 5.0
FLOOD_WRITE_INTERVAL = 0.5
FLOOD_MAX_WRITES = 10
FLOODERS = 4  # connections per victim, each from its own host


async def _flood_one(ctx: Ctx, role: str, src: str, flags: int, until: float) -> TestPeer | None:
    peer = await open_peer(ctx.p2p_port(role), ctx.content_id, src=src, flags=flags, rcvbuf=65536)
    window = await first_window(peer)
    index = newest_index(window, peer.messages) if window is not None else None
    if index is None:
        ctx.notes[f"{role}_flood"] = "no WINDOW with pieces"
        return peer
    peer.send_raw(INTERESTED)
    ctx.counters[f"{role}_flooders_unchoked"] += await peer.wait_for(Unchoke, 3.0) is not None
    burst = request_frame(index) * FLOOD_REQUESTS_PER_WRITE  # one write of 130 KB, all for one piece
    stop = min(until, time.monotonic() + FLOOD_SECONDS)
    writes = 0
    while writes < FLOOD_MAX_WRITES and time.monotonic() < stop and not peer.writer.is_closing():
        peer.send_raw(burst)
        writes += 1
        ctx.counters[f"{role}_request_frames_sent"] += FLOOD_REQUESTS_PER_WRITE
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(FLOOD_WRITE_INTERVAL):
                await peer.writer.drain()
        await asyncio.sleep(remaining(min(stop, time.monotonic() + FLOOD_WRITE_INTERVAL)))
    ctx.counters[f"{role}_flood_writes"] += writes
    ctx.counters[f"{role}_flooders_closed_by_victim"] += peer.writer.is_closing()  # a write failed
    return peer  # it never reads: everything the victim queued for it stays queued


async def request_flood(ctx: Ctx, seconds: float) -> None:
    until = time.monotonic() + seconds
    peers: list[TestPeer] = []
    try:
        # FLOODERS connections per victim: how much one burst queues depends on how much of it the victim
        # happens to read at once (a 130 KB write crosses loopback in 64 KB segments), so one connection gives
        # anything from 15 to 500 MB from run to run; four give a steadier figure.
        results = await asyncio.gather(
            *(_flood_one(ctx, "support", attacker_host(i), 0, until) for i in range(FLOODERS)),
            # and the same against the source from peers that claim to be support nodes
            *(_flood_one(ctx, "source", attacker_host(FLOODERS + i), SEEDER, until) for i in range(FLOODERS)),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, TestPeer):
                peers.append(result)
            elif isinstance(result, BaseException):
                ctx.notes.setdefault("errors", []).append(repr(result)[:200])
        await asyncio.sleep(remaining(until))
    finally:
        close_all(peers)


# --- fake-seeders ------------------------------------------------------------------------------------------------

FAKE_SEEDERS = 10
MAX_REQUESTS_PER_PEER = 20_000


async def fake_seeders(ctx: Ctx, seconds: float) -> None:
    until = time.monotonic() + seconds
    asked: dict[int, set[int]] = {}
    ctx.counters["fake_seeder_bytes"] += 0

    async def make(i: int) -> TestPeer:
        peer = await open_peer(ctx.p2p_port("source"), ctx.content_id, src=attacker_host(i), flags=SEEDER)
        asked[id(peer)] = set()
        window = await first_window(peer)
        peer.send_raw(INTERESTED)
        if window is not None:
            _ask(peer, [window.first + j for j, bit in enumerate(window.have) if bit])
        return peer

    def _ask(peer: TestPeer, indices: list[int]) -> None:
        mine = asked[id(peer)]
        for index in indices:
            if index not in mine and len(mine) < MAX_REQUESTS_PER_PEER:
                mine.add(index)
                peer.send_raw(request_frame(index))

    def on_events(peer: TestPeer, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, MessageReceived):
                message = event.message
                if isinstance(message, Piece):
                    ctx.counters["fake_seeder_bytes"] += len(message.data)
                elif isinstance(message, Have):
                    _ask(peer, [message.index])
                elif isinstance(message, Unchoke):
                    _ask(peer, sorted(asked[id(peer)]))  # asked before the unchoke: ask again

    peers = await connect_many(FAKE_SEEDERS, make, ctx, "fake_seeders")
    try:
        await hold(peers, until, ctx, on_events=on_events)
    finally:
        close_all(peers)


# --- sybil and silent peers ----------------------------------------------------------------------------------------

SYBILS = 60
SILENT_PEERS = 58
SILENT_HOSTS = 29


async def sybil(ctx: Ctx, seconds: float) -> None:
    until = time.monotonic() + seconds
    port = ctx.p2p_port("support")

    async def make(_i: int) -> TestPeer:
        peer = await open_peer(port, ctx.content_id, src=attacker_host(0))  # one address, a new peer id each
        if await first_window(peer, 3.0) is not None:
            ctx.counters["sybils_accepted"] += 1
        return peer

    ctx.counters["sybils_accepted"] += 0
    peers = await connect_many(SYBILS, make, ctx, "sybils")
    try:
        await asyncio.gather(hold(peers, until, ctx), newcomers(ctx, port, until))
    finally:
        close_all(peers)


async def silent_peers(ctx: Ctx, seconds: float) -> None:
    until = time.monotonic() + seconds
    port = ctx.p2p_port("support")

    async def make(i: int) -> TestPeer:
        peer = await open_peer(port, ctx.content_id, src=attacker_host(i % SILENT_HOSTS), rcvbuf=4096)
        peer.send_raw(INTERESTED)
        return peer

    peers = await connect_many(SILENT_PEERS, make, ctx, "silent")
    try:
        # They never read: only the keep-alives (every 2 s) say they are there.
        await asyncio.gather(hold(peers, until, ctx, keepalive=2.0, read=False), newcomers(ctx, port, until))
    finally:
        close_all(peers)


# --- handshake-flood ---------------------------------------------------------------------------------------------

HANDSHAKE_FLOOD = 1030
HANDSHAKE_FLOOD_RATE = 500.0  # connections per second for the first 1,030: the table fills in about 2 s
HANDSHAKE_SUSTAIN_RATE = 100.0  # then this many new ones per second, to keep it full as the oldest time out
HANDSHAKE_FLOOD_HOSTS = 10


async def handshake_flood(ctx: Ctx, seconds: float) -> None:
    until = time.monotonic() + seconds
    port = ctx.p2p_port("support")
    burst = HANDSHAKE_FLOOD / HANDSHAKE_FLOOD_RATE

    async def sustain() -> None:
        await asyncio.sleep(burst)
        count = int(HANDSHAKE_SUSTAIN_RATE * max(0.0, seconds - burst))
        await trickle(ctx, port, count, HANDSHAKE_SUSTAIN_RATE, HANDSHAKE_FLOOD_HOSTS, b"SWCP", None, until,
                      "flood", first_host=HANDSHAKE_FLOOD)  # fmt: skip

    await asyncio.gather(
        trickle(ctx, port, HANDSHAKE_FLOOD, HANDSHAKE_FLOOD_RATE, HANDSHAKE_FLOOD_HOSTS, b"SWCP", None, until,
                "flood"),
        sustain(),
        newcomers(ctx, port, until, ctx.chain.support_transport_url),
    )  # fmt: skip


# --- pex-reflector -----------------------------------------------------------------------------------------------

PEX_ADDRESSES = 150
PEX_PER_FRAME = 50


async def pex_prepare(ctx: Ctx) -> None:
    """Listen on the 150 addresses we will advertise, counting every connection the victim makes to them."""
    port = free_port("127.0.3.1")
    per_address: dict[str, int] = {}
    ctx.counters["pex_dials"] += 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = writer.get_extra_info("sockname")[0]
        per_address[address] = per_address.get(address, 0) + 1
        ctx.counters["pex_dials"] += 1
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(2.0):
                await reader.read(48)
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")  # not our protocol
        writer.transport.abort()

    addresses: list[tuple[str, int]] = []
    for i in range(PEX_ADDRESSES):
        host = f"127.0.3.{i + 1}"
        with contextlib.suppress(OSError):
            server = await asyncio.start_server(answer, host, port)
            ctx.stack.push_async_callback(_close_server, server)
            addresses.append((host, port))
    ctx.notes["pex_listening"] = len(addresses)
    ctx.notes["pex_addresses"] = addresses
    ctx.finalizers.append(lambda _log: ctx.notes.update(
        pex_addresses=len(addresses), pex_max_dials_per_address=max(per_address.values(), default=0),
        pex_addresses_dialled=len(per_address)))  # fmt: skip


async def _close_server(server: asyncio.Server) -> None:
    server.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2):
            await server.wait_closed()


async def pex_reflector(ctx: Ctx, seconds: float) -> None:
    until = time.monotonic() + seconds
    addresses: list[tuple[str, int]] = ctx.notes["pex_addresses"]
    peer = await open_peer(ctx.p2p_port("support"), ctx.content_id, src=attacker_host(0))
    try:
        await first_window(peer)
        for at in range(0, len(addresses), PEX_PER_FRAME):
            peer.send_raw(pex_frame(addresses[at : at + PEX_PER_FRAME]))
            ctx.counters["pex_frames_sent"] += 1
        await hold([peer], until, ctx)
    finally:
        close_all([peer])


# --- withholding -------------------------------------------------------------------------------------------------

WITHHOLDERS = 5
WITHHOLD_AHEAD = 3  # pieces announced past every piece the victim announces
MAX_WITHHOLD_FRAMES = 20_000


async def withholding(ctx: Ctx, seconds: float) -> None:
    until = time.monotonic() + seconds
    announced: dict[int, int] = {}  # id(peer) -> the highest index it claimed

    async def make(i: int) -> TestPeer:
        peer = await open_peer(ctx.p2p_port("engine"), ctx.content_id, src=attacker_host(i), listen_port=1)
        window = await first_window(peer)
        newest = newest_index(window, peer.messages) if window is not None else None
        if newest is not None:
            peer.send_raw(window_frame(newest + 1, 30))  # pieces just ahead of the live edge
            announced[id(peer)] = newest + 30
        peer.send_raw(UNCHOKE)
        return peer

    def on_events(peer: TestPeer, events: list[Any]) -> None:
        for event in events:
            if not isinstance(event, MessageReceived):
                continue
            if isinstance(event.message, Request):
                ctx.counters["requests_withheld"] += 1  # and never answered
            elif isinstance(event.message, Have):
                top = announced.get(id(peer), event.message.index)
                while top < event.message.index + WITHHOLD_AHEAD and ctx.counters["withhold_frames"] < \
                        MAX_WITHHOLD_FRAMES:  # fmt: skip
                    top += 1
                    peer.send_raw(have_frame(top, RANDOM_ACCESS if top % 5 == 0 else 0))
                    ctx.counters["withhold_frames"] += 1
                announced[id(peer)] = top

    peers = await connect_many(WITHHOLDERS, make, ctx, "withholders")
    try:
        await hold(peers, until, ctx, on_events=on_events)
    finally:
        close_all(peers)


ATTACKS: dict[str, AttackSpec] = {spec.name: spec for spec in [
    AttackSpec("have-overflow", "support", "HAVE 2^63-1 (random access) to support and engine P2P ports",
               have_overflow),
    AttackSpec("request-flood", "support", "4 peers: 10,000 REQUESTs/write for 5 s to support; same to source "
               "as SEEDER",
               request_flood),
    AttackSpec("bencode-bomb", "engine", "engine plays url= of l*60000, a node whose /announce is l*60000, "
               "and the 79-byte hang input", bencode_bomb, min_during=20.0),
    AttackSpec("fake-seeders", "source", "10 SEEDER-flagged peers pull everything from the source", fake_seeders,
               min_during=20.0),
    AttackSpec("sybil", "support", "60 peer ids from one address; a newcomer tries every 2 s", sybil),
    AttackSpec("silent-peers", "support", "58 peers (29 hosts) that never read, keep-alives only; newcomers",
               silent_peers, min_during=20.0),
    AttackSpec("handshake-flood", "support", "1,030 connections sending only b'SWCP' in 2 s, then 100/s, 10 hosts",
               handshake_flood, min_during=12.0),
    AttackSpec("pex-reflector", "support", "150 bogus PEX addresses (we listen there, answer HTTP 400)",
               pex_reflector, prepare=pex_prepare),
    AttackSpec("slow-http", "source", "1,100 slowloris HTTP connections, source at 1024 open files, disk cache",
               slow_http, chain={"source_nofile": 1024, "disk_cache": True}, min_during=8.0),
    AttackSpec("engine-api", "engine", "bad URLs, 15 unknown content ids, 260 format=json sessions, "
               "url=/dev/zero", engine_api),
    AttackSpec("withholding", "engine", "5 peers announce 3 pieces ahead of the edge, never deliver",
               withholding),
    AttackSpec("source-outage", "source", "testsrc off for 15 s", source_outage, min_during=OUTAGE_SECONDS + 20),
]}  # fmt: skip

__all__ = ["ATTACKS", "AttackSpec"]
