"""What the attacks of bench/attacks.py are made of: peers from chosen loopback hosts, raw frames, probes.

Hostile frames are built by hand (``frame``), not with the project's encoder, so that an encoder that learns to
refuse them does not silently turn the attack into a no-op; the handshake and the honest messages go through
``tests.peerclient.TestPeer`` (the sans-IO ``Connection``), so attackers are real peers to the victim.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from tests.peerclient import TestPeer, frame

from bench.hostile_chain import HOST, Chain, PlayerLog
from swarmcast.wire.connection import ConnectionClosed
from swarmcast.wire.messages import Handshake, HandshakeFlags, Have, Window

CONNECT_TIMEOUT = 5.0
PROBE_HOST = "127.0.0.250"  # the honest newcomer's address: no attack uses it

KEEPALIVE = frame(0, b"")
INTERESTED = frame(3, b"")
UNCHOKE = frame(2, b"")


def attacker_host(n: int) -> str:
    """The n-th attacker address (0 -> 127.0.0.2): distinct hosts on loopback, never 127.0.0.1."""
    return f"127.0.{(n + 2) // 250}.{(n + 2) % 250 or 250}"


def have_frame(index: int, flags: int) -> bytes:
    return frame(6, struct.pack(">QB", index, flags))


def request_frame(index: int) -> bytes:
    return frame(7, struct.pack(">Q", index))


def window_frame(first: int, count: int, random_access_every: int = 5) -> bytes:
    bits = bytearray((count + 7) // 8)
    ra = bytearray((count + 7) // 8)
    for i in range(count):
        bits[i >> 3] |= 0x80 >> (i & 7)
        if i % random_access_every == 0:
            ra[i >> 3] |= 0x80 >> (i & 7)
    return frame(5, struct.pack(">QI", first, count) + bytes(bits) + bytes(ra))


def pex_frame(peers: list[tuple[str, int]]) -> bytes:
    body = b"".join(b"\x04" + socket.inet_aton(host) + struct.pack(">H", port) for host, port in peers)
    return frame(11, bytes([len(peers)]) + body)


@dataclass
class Ctx:
    """What an attack sees: the chain, counters (reported per phase as deltas) and notes (reported once)."""

    chain: Chain
    content_id: bytes
    counters: Counter[str] = field(default_factory=Counter)
    notes: dict[str, Any] = field(default_factory=dict)
    stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    finalizers: list[Callable[[PlayerLog], None]] = field(default_factory=list)

    def p2p_port(self, role: str) -> int:
        return self.chain.nodes[role].port


async def open_socket(host: str, port: int, src: str, *, rcvbuf: int | None = None
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:  # fmt: skip
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((src, 0))
        sock.setblocking(False)
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        return await asyncio.open_connection(sock=sock, limit=1 << 20)
    except BaseException:
        sock.close()
        raise


async def open_peer(port: int, content_id: bytes, *, src: str, flags: int = 0, rcvbuf: int | None = None,
                    peer_id: bytes | None = None, listen_port: int = 0) -> TestPeer:  # fmt: skip
    reader, writer = await open_socket(HOST, port, src, rcvbuf=rcvbuf)
    peer = TestPeer(reader, writer)
    handshake = Handshake(content_id, peer_id or os.urandom(20), listen_port, HandshakeFlags(flags))
    peer.connection.send_handshake(handshake, time.monotonic())
    peer.flush()
    return peer


async def safe_read(peer: TestPeer, timeout: float) -> list[Any]:
    """``read_events`` that turns a reset into a close (the victim may drop us any way it likes)."""
    try:
        return await peer.read_events(timeout)
    except OSError:
        peer.closed = peer.closed or ConnectionClosed("reset")
        return [peer.closed]


async def first_window(peer: TestPeer, timeout: float = 8.0) -> Window | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and peer.closed is None:
        for message in peer.messages:
            if isinstance(message, Window):
                return message
        await safe_read(peer, 0.3)
    return None


def newest_index(window: Window, messages: list[Any]) -> int | None:
    held = [window.first + i for i, bit in enumerate(window.have) if bit]
    held += [m.index for m in messages if isinstance(m, Have)]
    return max(held) if held else None


async def hold(peers: list[TestPeer], until: float, ctx: Ctx, *, keepalive: float = 5.0, read: bool = True,
               on_events: Callable[[TestPeer, list[Any]], None] | None = None) -> None:  # fmt: skip
    """Keep ``peers`` open until ``until``: read (and discard, or hand to ``on_events``), send keep-alives.

    A peer the victim closes is counted in ``closed_by_victim``. With ``read=False`` nothing is read: the peer is
    silent, its receive buffer fills, and only its keep-alives tell the victim it is there.
    """

    ctx.counters["closed_by_victim"] += 0

    async def one(peer: TestPeer) -> None:
        last_keepalive = time.monotonic()
        while time.monotonic() < until and peer.closed is None:
            if read:
                events = await safe_read(peer, min(0.5, max(until - time.monotonic(), 0.01)))
                if on_events is not None and events:
                    on_events(peer, events)
                peer.messages.clear()
            else:
                await asyncio.sleep(min(0.5, max(until - time.monotonic(), 0.01)))
            if peer.closed is not None:
                ctx.counters["closed_by_victim"] += 1
                break
            if time.monotonic() - last_keepalive >= keepalive:
                last_keepalive = time.monotonic()
                try:
                    peer.send_raw(KEEPALIVE)
                except (OSError, RuntimeError):
                    ctx.counters["closed_by_victim"] += 1
                    break

    await asyncio.gather(*(one(p) for p in peers))


def close_all(peers: list[TestPeer]) -> None:
    for peer in peers:
        with contextlib.suppress(Exception):
            peer.writer.transport.abort()


async def connect_many(count: int, make: Callable[[int], Awaitable[TestPeer]], ctx: Ctx,
                       counter: str) -> list[TestPeer]:  # fmt: skip
    """``count`` peers, opened 8 at a time; failures counted in ``<counter>_failed``."""
    peers: list[TestPeer] = []
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        async with sem:
            try:
                peers.append(await make(i))
                ctx.counters[f"{counter}_opened"] += 1
            except (OSError, TimeoutError):
                ctx.counters[f"{counter}_failed"] += 1

    await asyncio.gather(*(one(i) for i in range(count)))
    return peers


# --- probes: can an honest newcomer still get in? -----------------------------------------------------------------


async def probe_peer(port: int, content_id: bytes, timeout: float = 4.0) -> str:
    """A fresh peer from PROBE_HOST: "accepted" (got a WINDOW), "refused:<why>", "closed", "timeout", "error:..."."""
    try:
        peer = await open_peer(port, content_id, src=PROBE_HOST)
    except (OSError, TimeoutError) as error:
        return f"error:{type(error).__name__}"
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = await safe_read(peer, 0.3)
            for event in events:
                if isinstance(event, ConnectionClosed):
                    reason = event.goodbye.name if event.goodbye is not None else "closed"
                    return f"refused:{reason}" if event.goodbye is not None else reason
            if any(isinstance(m, Window) for m in peer.messages):
                return "accepted"
        return "timeout"
    finally:
        close_all([peer])


async def probe_http(url: str, timeout: float = 4.0) -> str:
    """The status an HTTP client gets from ``url`` within ``timeout`` (body not read past 64 KB)."""
    start = time.monotonic()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                session.get(url) as response:  # fmt: skip
            await response.content.read(65536)
            return f"{response.status} ({time.monotonic() - start:.1f}s)"
    except (aiohttp.ClientError, OSError) as error:
        return f"error:{type(error).__name__}"
    except TimeoutError:
        return "timeout"


async def http_status(session: aiohttp.ClientSession, url: Any, timeout: float, *, body: bool = False) -> str:
    """Status code of one request (``url`` may be a pre-encoded ``yarl.URL``), or what went wrong; with ``body``
    the first 100 characters of the answer too."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            text = await response.content.read(4096)
            if body:
                return f"{response.status} {text[:100].decode(errors='replace')}"
            return str(response.status)
    except (aiohttp.ClientError, OSError) as error:
        return f"error:{type(error).__name__}"
    except TimeoutError:
        return "timeout"


def histogram(statuses: list[str]) -> dict[str, int]:
    return {s: statuses.count(s) for s in sorted(set(statuses))}


def remaining(until: float) -> float:
    return max(0.0, until - time.monotonic())


# --- newcomers and half-open floods ------------------------------------------------------------------------------

NEWCOMER_EVERY = 2.0
DRIP_EVERY = 3.0  # seconds between two header lines of a slow client


async def newcomers(ctx: Ctx, port: int, until: float, http_url: str | None = None) -> None:
    """An honest newcomer peer (and an HTTP client) tries to get in every NEWCOMER_EVERY s while the attack holds."""
    peers: list[str] = []
    http: list[str] = []
    while time.monotonic() < until - 1 and len(peers) < 30:
        if http_url is None:
            peers.append(await probe_peer(port, ctx.content_id, timeout=3.0))
        else:
            peer, web = await asyncio.gather(probe_peer(port, ctx.content_id, timeout=3.0), probe_http(http_url, 3.0))
            peers.append(peer)
            http.append(web.split(" ")[0])
        await asyncio.sleep(min(NEWCOMER_EVERY, remaining(until)))
    ctx.notes["newcomers"] = histogram(peers)
    if http_url is not None:
        ctx.notes["http_newcomers"] = histogram(http)


async def trickle(ctx: Ctx, port: int, count: int, rate: float, hosts: int, first: bytes, drip: bytes | None,
                  until: float, label: str, *, first_host: int = 0) -> None:  # fmt: skip
    """Open ``count`` connections at ``rate``/s from ``hosts`` attacker hosts in turn (the i-th from host
    ``(first_host + i) % hosts``); each sends ``first``, then ``drip`` every DRIP_EVERY s, until ``until``."""
    writers: list[asyncio.StreamWriter] = []
    tasks: list[asyncio.Task[None]] = []

    async def watch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        next_drip = time.monotonic() + DRIP_EVERY
        while time.monotonic() < until:
            try:
                async with asyncio.timeout(min(0.5, max(until - time.monotonic(), 0.01))):
                    data = await reader.read(4096)
                if not data:
                    ctx.counters[f"{label}_closed_by_victim"] += 1
                    return
            except TimeoutError:
                pass
            except OSError:
                ctx.counters[f"{label}_closed_by_victim"] += 1
                return
            if drip is not None and time.monotonic() >= next_drip:
                next_drip += DRIP_EVERY
                writer.write(drip)

    ctx.counters[f"{label}_closed_by_victim"] += 0

    async def one(i: int) -> None:
        try:
            reader, writer = await open_socket(HOST, port, attacker_host((first_host + i) % hosts))
        except (OSError, TimeoutError):
            ctx.counters[f"{label}_connect_failed"] += 1
            return
        writers.append(writer)
        ctx.counters[f"{label}_opened"] += 1
        writer.write(first)
        await watch(reader, writer)

    try:
        start = time.monotonic()
        for i in range(count):
            if time.monotonic() >= until:
                break
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.transport.abort()


