"""The asyncio side of the peer protocol: one TCP port for peers and HTTP, dialing, and the swarm clock.

The first bytes of an accepted connection decide what it is: the protocol magic ``SWCP`` makes it a peer
connection, anything else is handed to aiohttp as an HTTP connection (the Ace Stream tooling expects a node's web
interface on the node's own port). Everything protocol-related happens in the sans-IO ``Connection`` and
``Swarm``; this module only moves bytes, reads the clock and owns the tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from typing import cast

from aiohttp import web

from swarmcast.swarm.core import Swarm
from swarmcast.swarm.peer import Address, PeerSession
from swarmcast.wire.connection import HANDSHAKE_TIMEOUT, Connection, ConnectionClosed, HandshakeReceived
from swarmcast.wire.messages import PROTOCOL_MAGIC, GoodbyeReason, Handshake, HandshakeFlags

log = logging.getLogger("swarmcast.node")

TICK_INTERVAL = 0.1
DIAL_TIMEOUT = 5.0
FIRST_BYTES_TIMEOUT = 10.0
MAX_CONNECTIONS = 1024
MAX_CONCURRENT_DIALS = 32
ABORT_BUFFER_SIZE = 256 * 1024
_session_keys = itertools.count(1)


class TransportLink:
    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        # A peer that stopped reading would keep a graceful close (which flushes first) open for ever.
        if self._transport.get_write_buffer_size() > ABORT_BUFFER_SIZE:
            self._transport.abort()
        else:
            self._transport.close()

    def write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()


class PeerProtocol(asyncio.Protocol):
    """One peer connection, inbound or outbound, until its swarm takes it."""

    def __init__(self, host: PeerHost, *, outbound_swarm: Swarm | None = None, initial: bytes = b"") -> None:
        self._host = host
        self._outbound_swarm = outbound_swarm
        self._initial = initial
        self._connection = Connection(now=time.monotonic())
        self._transport: asyncio.Transport | None = None
        self._session: PeerSession | None = None
        self._swarm: Swarm | None = None
        self._remote_ip = ""
        self._handshake_timer: asyncio.TimerHandle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = self._transport.get_extra_info("peername")
        self._remote_ip = str(peer[0]) if peer else ""
        self._host.connections.add(self)
        # Until a swarm takes it, no one runs this connection's timers: give up on a silent handshake here.
        self._handshake_timer = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT, self._handshake_expired)
        if self._outbound_swarm is not None:
            self._connection.send_handshake(self._host.handshake_for(self._outbound_swarm), time.monotonic())
            self._transport.write(self._connection.data_to_send())
        if self._initial:
            self.data_received(self._initial)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        events = self._connection.receive_data(data, now)
        if self._session is not None and self._swarm is not None:
            self._swarm.handle_events(self._session, events, now)
            return
        for position, event in enumerate(events):
            if isinstance(event, HandshakeReceived):
                if not self._attach(event.handshake, now):
                    return
                assert self._swarm is not None
                assert self._session is not None
                self._swarm.handle_events(self._session, events[position + 1 :], now)
                return
            if isinstance(event, ConnectionClosed):
                self._abort()
                return

    def _handshake_expired(self) -> None:
        if self._session is None:
            log.debug("no handshake from %s in %.0f s", self._remote_ip, HANDSHAKE_TIMEOUT)
            self._abort()

    def _attach(self, handshake: Handshake, now: float) -> bool:
        assert self._transport is not None
        swarm = self._host.swarms.get(handshake.content_id)
        if self._outbound_swarm is not None and handshake.content_id != self._outbound_swarm.content_id:
            swarm = None
        if swarm is None:
            if self._outbound_swarm is None:
                self._connection.send_handshake(
                    Handshake(handshake.content_id, self._host.peer_id, self._host.port), now
                )
            self._connection.close(GoodbyeReason.UNKNOWN_CONTENT, now)
            self._transport.write(self._connection.data_to_send())
            self._abort()
            return False
        if self._outbound_swarm is None:
            self._connection.send_handshake(self._host.handshake_for(swarm), now)
        address: Address = (self._remote_ip, handshake.listen_port)
        local = self._transport.get_extra_info("sockname")
        allowed = swarm.config.download_from
        session = PeerSession(
            key=next(_session_keys),
            connection=self._connection,
            link=TransportLink(self._transport),
            handshake=handshake,
            remote_ip=self._remote_ip,
            local_ip=str(local[0]) if local else "",  # the address a credential of ours must name
            outbound=self._outbound_swarm is not None,
            may_download=allowed is None or address in allowed,
            now=now,
        )
        self._session, self._swarm = session, swarm
        if not swarm.attach(session, now):
            self._session = self._swarm = None
            return False
        return True

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._handshake_timer.cancel()
        self._host.connections.discard(self)
        if self._session is not None and self._swarm is not None:
            self._swarm.detach(self._session, time.monotonic(), "connection lost")


class DemuxProtocol(asyncio.Protocol):
    """Looks at the first bytes of an accepted connection and hands it to the peer protocol or to aiohttp."""

    def __init__(self, host: PeerHost) -> None:
        self._host = host
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if len(self._host.connections) >= MAX_CONNECTIONS:
            self._transport.close()
            return
        self._timer = asyncio.get_running_loop().call_later(FIRST_BYTES_TIMEOUT, self._transport.close)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        prefix = self._buffer[: len(PROTOCOL_MAGIC)]
        if PROTOCOL_MAGIC.startswith(prefix) and len(prefix) < len(PROTOCOL_MAGIC):
            return  # could still be either
        if self._timer is not None:
            self._timer.cancel()
        protocol: asyncio.Protocol
        if prefix == PROTOCOL_MAGIC:
            protocol = PeerProtocol(self._host)
        else:
            protocol = self._host.http_server()
        self._transport.set_protocol(protocol)
        protocol.connection_made(self._transport)
        protocol.data_received(self._buffer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()


class PeerHost:
    """Owns the listening port, the swarms served on it, outgoing dials and the tick loop."""

    def __init__(
        self,
        *,
        bind: str,
        port: int,
        peer_id: bytes,
        app: web.Application,
        flags: HandshakeFlags = HandshakeFlags.NONE,
        advertise_port: int | None = None,
    ) -> None:
        self.bind = bind
        self.port = port
        self.peer_id = peer_id
        self.flags = flags
        self._advertise_port = advertise_port
        self.app = app
        self.swarms: dict[bytes, Swarm] = {}
        self.connections: set[PeerProtocol] = set()
        self.tick_hooks: list[Callable[[float], None]] = []
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._dialing: dict[bytes, set[Address]] = {}
        self._tick_task: asyncio.Task[None] | None = None
        self._last_dial_scan = 0.0

    def http_server(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None
        return cast(asyncio.Protocol, server())

    def handshake_for(self, swarm: Swarm) -> Handshake:
        return Handshake(swarm.content_id, self.peer_id, self._advertise_port or self.port, self.flags)

    async def start(self) -> None:
        await self._runner.setup()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: DemuxProtocol(self), self.bind, self.port, reuse_address=True)
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]
        self._tick_task = asyncio.create_task(self._tick_loop(), name="swarm-tick")

    def add_swarm(self, swarm: Swarm) -> None:
        self.swarms[swarm.content_id] = swarm
        loop = asyncio.get_running_loop()

        def flush_soon() -> None:
            loop.call_soon(swarm.flush)

        swarm.flush_soon = flush_soon
        swarm.authority.wall_offset = time.time() - time.monotonic()  # credentials expire in Unix time
        self._dialing[swarm.content_id] = set()

    def remove_swarm(self, swarm: Swarm) -> None:
        swarm.close(time.monotonic())
        self.swarms.pop(swarm.content_id, None)
        self._dialing.pop(swarm.content_id, None)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL)
            now = time.monotonic()
            wall_offset = time.time() - now  # follows steps of the wall clock; credentials expire in Unix time
            for swarm in list(self.swarms.values()):
                try:
                    swarm.authority.wall_offset = wall_offset
                    swarm.tick(now)
                    # Candidates are scanned on every tick only while peers are missing (startup, churn).
                    if swarm.wants_peers() or now - self._last_dial_scan >= 1.0:
                        self._dial(swarm, now)
                except Exception:  # a bug in one swarm must not stop the others; it is logged loudly
                    log.exception("swarm tick failed")
            if now - self._last_dial_scan >= 1.0:
                self._last_dial_scan = now
            for hook in list(self.tick_hooks):
                hook(now)

    def dial_now(self, swarm: Swarm) -> None:
        """Dial the swarm's candidates at once (new ones just arrived) rather than on the next tick."""
        if swarm.content_id in self.swarms:
            self._dial(swarm, time.monotonic())

    def _dial(self, swarm: Swarm, now: float) -> None:
        dialing = self._dialing.setdefault(swarm.content_id, set())
        if len(self._tasks) >= MAX_CONCURRENT_DIALS:
            return
        for address in swarm.addresses_to_dial(now, dialing):
            if len(self._tasks) >= MAX_CONCURRENT_DIALS:
                break
            dialing.add(address)
            task = asyncio.create_task(self._dial_one(swarm, address), name=f"dial {address}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _dial_one(self, swarm: Swarm, address: Address) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(DIAL_TIMEOUT):
                await loop.create_connection(
                    lambda: PeerProtocol(self, outbound_swarm=swarm), address[0], address[1]
                )
        except (OSError, TimeoutError) as error:
            log.debug("dial %s:%d failed: %s", address[0], address[1], error)
            swarm.dial_failed(address, time.monotonic())
        finally:
            dialing = self._dialing.get(swarm.content_id)
            if dialing is not None:
                dialing.discard(address)

    async def close(self) -> None:
        """Goodbye to every peer, stop listening, wait for our tasks."""
        now = time.monotonic()
        for swarm in list(self.swarms.values()):
            swarm.close(now)
        if self._tick_task is not None:
            self._tick_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        tasks = [t for t in [self._tick_task, *self._tasks] if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection._abort()
        # Give the transports a moment to flush the goodbyes before the loop goes away.
        with contextlib.suppress(Exception):
            await asyncio.sleep(0.05)
        await self._runner.cleanup()
