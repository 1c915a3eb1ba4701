"""The asyncio side of the peer protocol: one TCP port for peers and HTTP, dialing, and the swarm clock.

The first bytes of an accepted connection decide what it is: the protocol magic ``SWCP`` makes it a peer
connection, anything else is handed to aiohttp as an HTTP connection (the Ace Stream tooling expects a node's web
interface on the node's own port). Everything protocol-related happens in the sans-IO ``Connection`` and
``Swarm``; this module only moves bytes, reads the clock and owns the tasks.

Admission (node/admission.py) is consulted at accept, when the first bytes decide the side, when an HTTP request's
headers are complete and when a handshake names a swarm; it also names the connections whose deadline passed (the
tick loop closes them) and those evicted for a newcomer. Each connection registers how to close it under its
admission key (``on_expiry``) and releases the key in connection_lost (``forget``). Before admission, the access
policy (node/access.py: private node, ip filter) decides by address alone at accept and before every dial; it
counts live connections under the same keys (``track``), and ``close_refused`` closes those a change of its rules
refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import resource
import time
from collections.abc import Callable
from typing import cast

from aiohttp import web

from swarmcast.node.access import AccessPolicy
from swarmcast.node.admission import Admission, AdmissionConfig
from swarmcast.node.demux import DemuxProtocol
from swarmcast.swarm.core import Swarm
from swarmcast.swarm.peer import Address, PeerSession
from swarmcast.wire.connection import Connection, ConnectionClosed, HandshakeReceived
from swarmcast.wire.messages import GoodbyeReason, Handshake, HandshakeFlags

log = logging.getLogger("swarmcast.node")

TICK_INTERVAL = 0.1
DIAL_TIMEOUT = 5.0
MAX_CONCURRENT_DIALS = 32
# Open files the connection budgets never use: dials in progress, the disk cache, tracker clients, logs, and the
# sockets one accept batch takes before admission sees them (asyncio accepts up to its backlog, 100, at a time).
DESCRIPTOR_RESERVE = 160
REFUSAL_LOG_INTERVAL = 10.0
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

    def __init__(
        self, host: PeerHost, *, key: int | None = None, outbound_swarm: Swarm | None = None, initial: bytes = b""
    ) -> None:
        self._host = host
        self._key = key  # the admission key; outbound connections get theirs in connection_made
        self._outbound_swarm = outbound_swarm
        self._initial = initial
        self._connection = Connection(now=time.monotonic())
        self._transport: asyncio.Transport | None = None
        self._session: PeerSession | None = None
        self._swarm: Swarm | None = None
        self._remote_ip = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = self._transport.get_extra_info("peername")
        self._remote_ip = str(peer[0]) if peer else ""
        now = time.monotonic()
        if self._key is None:
            self._key = self._host.admission.outbound(self._remote_ip, now)
            if self._key is None:
                self._host.note_refusal("peer connections", self._remote_ip)
                self._transport.abort()
                return
            self._host.track(self._key, self._remote_ip, self._transport, inbound=False)
        self._host.connections.add(self)
        # Until a swarm takes it, no one runs this connection's timers: admission's handshake deadline does.
        self._host.on_expiry(self._key, self._handshake_expired)
        if self._outbound_swarm is not None:
            self._connection.send_handshake(self._host.handshake_for(self._outbound_swarm), now)
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
                self._handshake_failed(f"bad handshake: {event.reason}")
                self._abort()
                return

    def _handshake_expired(self) -> None:
        if self._session is None:
            log.debug("no handshake from %s in time", self._remote_ip)
            self._handshake_failed("no handshake in time")
            self._abort()

    def _handshake_failed(self, why: str) -> None:
        if self._outbound_swarm is not None and self._transport is not None:
            peer = self._transport.get_extra_info("peername")
            log.debug("dialled %s: %s", peer, why)
            # A dialled address that does not answer our protocol (wrong bytes, wrong content id, or silence until
            # the handshake deadline) counts as a failed dial: it backs off and is forgotten (swarm/dialer.py).
            if peer:
                self._outbound_swarm.handshake_failed((str(peer[0]), int(peer[1])), time.monotonic())

    def _attach(self, handshake: Handshake, now: float) -> bool:
        assert self._transport is not None
        assert self._key is not None
        swarm = self._host.swarms.get(handshake.content_id)
        if self._outbound_swarm is not None and handshake.content_id != self._outbound_swarm.content_id:
            self._handshake_failed("answered for another content id")
            swarm = None
        reason: GoodbyeReason | None = None
        if swarm is None:
            reason = GoodbyeReason.UNKNOWN_CONTENT
        else:
            verdict = self._host.admission.attach(self._key, swarm.content_id, now, handshake.listen_port)
            self._host.evict(verdict.evict)  # --close-connections-from-same-peer: the peer's older connection
            if not verdict.admitted:
                self._host.note_refusal(verdict.reason, self._remote_ip)
                reason = GoodbyeReason.TOO_MANY_PEERS
        if reason is not None:
            if self._outbound_swarm is None:
                ours = self._host.handshake_for(swarm) if swarm is not None else Handshake(
                    handshake.content_id, self._host.peer_id, self._host.port
                )
                self._connection.send_handshake(ours, now)
            self._connection.close(reason, now)
            self._transport.write(self._connection.data_to_send())
            self._abort()
            return False
        assert swarm is not None
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
        if self._key is not None:
            self._host.forget(self._key)
        self._host.connections.discard(self)
        if self._session is not None and self._swarm is not None:
            self._swarm.detach(self._session, time.monotonic(), "connection lost")


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
        admission: AdmissionConfig | None = None,
        access: AccessPolicy | None = None,
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
        self._admission_config = admission or AdmissionConfig()
        self.admission = Admission(self._admission_config)
        # Who may connect at all (node/access.py): consulted at accept, before admission, and before dialling.
        self.access = access or AccessPolicy()
        self._expiry: dict[int, Callable[[], None]] = {}  # admission key -> how to close that connection
        self._transports: dict[int, asyncio.Transport] = {}  # admission key -> its socket, for its whole life
        self._refusals: dict[str, int] = {}  # since the last log line
        self.refusals_total: dict[str, int] = {}  # since start, for the monitor (a handful of fixed reasons)
        # Who may use the web interface (node/webaccess.py); anyone unless the node role says otherwise.
        self.web_allowed: Callable[[str, str], bool] = lambda _ip, _local_ip: True
        self._refusal_logged = 0.0
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True,
            keepalive_timeout=self._admission_config.http_idle_timeout,
        )  # fmt: skip
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._dialing: dict[bytes, set[Address]] = {}
        self._tick_task: asyncio.Task[None] | None = None
        self._last_dial_scan = 0.0

    def http_server(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None
        return cast(asyncio.Protocol, server())

    def peer_protocol(self, key: int) -> asyncio.Protocol:
        """The protocol of an accepted peer connection (admission key ``key``), for the demux."""
        return PeerProtocol(self, key=key)

    def handshake_for(self, swarm: Swarm) -> Handshake:
        return Handshake(swarm.content_id, self.peer_id, self._advertise_port or self.port, self.flags)

    # -- admission glue ---------------------------------------------------------------------------------------------

    def on_expiry(self, key: int, close: Callable[[], None]) -> None:
        """How to close connection ``key`` when admission expires or evicts it."""
        self._expiry[key] = close

    def track(self, key: int, ip: str, transport: asyncio.Transport, groups: tuple[str, ...] = (), *,
              inbound: bool = True) -> None:  # fmt: skip
        """Connection ``key`` is live: the access policy counts it (limit_groups) and may have it closed later."""
        self._transports[key] = transport
        self.access.hold(key, ip, groups, inbound=inbound)

    def forget(self, key: int) -> None:
        """Connection ``key`` is gone."""
        self._expiry.pop(key, None)
        self._transports.pop(key, None)
        self.access.release(key)
        self.admission.release(key)

    def evict(self, keys: tuple[int, ...]) -> None:
        for key in keys:
            close = self._expiry.pop(key, None)
            if close is not None:
                close()
            transport = self._transports.get(key)
            if transport is not None:  # an established peer's expiry hook does nothing: close its socket
                transport.abort()

    def close_refused(self, keys: list[int], why: str) -> None:
        """Close live connections the access policy no longer allows (after /app/update or a filter reload)."""
        for key in keys:
            transport = self._transports.get(key)
            if transport is not None:
                peer = transport.get_extra_info("peername")
                log.info("closing the connection of %s: %s", peer[0] if peer else "?", why)
                transport.abort()
            self.forget(key)

    def note_refusal(self, reason: str, ip: str) -> None:
        """Count a refused connection; a summary is logged at most every REFUSAL_LOG_INTERVAL seconds."""
        self._refusals[reason] = self._refusals.get(reason, 0) + 1
        self.refusals_total[reason] = self.refusals_total.get(reason, 0) + 1
        log.debug("refused a connection from %s: %s", ip, reason)

    def _expire(self, now: float) -> None:
        for key in self.admission.expired(now):
            close = self._expiry.pop(key, None)
            if close is not None:
                close()
        if self._refusals and now - self._refusal_logged >= REFUSAL_LOG_INTERVAL:
            summary = ", ".join(f"{count} over {reason}" for reason, count in sorted(self._refusals.items()))
            log.warning("refused connections in the last %.0f s: %s", REFUSAL_LOG_INTERVAL, summary)
            self._refusals.clear()
            self._refusal_logged = now

    def _fit_to_descriptors(self) -> None:
        """Shrink the connection budgets to what the open-file limit leaves after the reserve."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return
        try:
            in_use = len(os.listdir("/proc/self/fd"))
        except OSError:
            in_use = 64
        available = max(soft - in_use - DESCRIPTOR_RESERVE, 3)
        fitted = self._admission_config.fitted(available)
        if fitted is not self._admission_config:
            log.warning(
                "open-file limit %d: connection budgets cut to %d peer, %d pending, %d HTTP", soft,
                fitted.max_connections, fitted.max_pending, fitted.max_http_connections,
            )  # fmt: skip
            self.admission.config = fitted

    async def start(self) -> None:
        self._fit_to_descriptors()
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
            self._expire(now)
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
            if not self.admission.may_dial(swarm.content_id, address[0]) or not self.access.may_dial(address[0]):
                continue
            dialing.add(address)
            task = asyncio.create_task(self._dial_one(swarm, address), name=f"dial {address}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _dial_one(self, swarm: Swarm, address: Address) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(DIAL_TIMEOUT):
                await loop.create_connection(
                    lambda: PeerProtocol(self, outbound_swarm=swarm), address[0], address[1],
                    local_addr=self.local_address,
                )  # fmt: skip
        except (OSError, TimeoutError) as error:
            log.debug("dial %s:%d failed: %s", address[0], address[1], error)
            swarm.dial_failed(address, time.monotonic())
        finally:
            dialing = self._dialing.get(swarm.content_id)
            if dialing is not None:
                dialing.discard(address)

    @property
    def local_address(self) -> tuple[str, int] | None:
        """Dial from the address we listen on when it is a specific one: that is the address peers must see (and
        the one trackers should see: tracker clients of this host should connect from it too)."""
        if self.bind in ("", "0.0.0.0", "::"):
            return None
        return (self.bind, 0)

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
