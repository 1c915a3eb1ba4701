"""The viewer engine: joins broadcasts on demand and plays them to any number of local players.

One P2P host (``--port``) carries every broadcast the engine has joined; the playback API (``--http-port``)
lives in swarmcast.http.engine_api. What a client can make the engine hold (broadcasts, lookups of unknown
content ids, JSON sessions, streams) is bounded by the rules in swarmcast.node.engine_limits; a reaper applies
them every ``REAP_INTERVAL``: broadcasts that never produced a piece are left as soon as nobody waits for them,
playing ones ``IDLE_SECONDS`` after their last player, JSON sessions nobody uses expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import urlsplit

from aiohttp import web

from swarmcast.discovery.tracker_client import check_tracker_url
from swarmcast.media.ts import latest_clock_us
from swarmcast.metrics.histogram import DELAY_BUCKETS, STARTUP_BUCKETS, Histogram
from swarmcast.node.admission import AdmissionConfig
from swarmcast.node.config import CacheConfig
from swarmcast.node.engine_limits import (
    BroadcastState,
    Session,
    SessionTable,
    StreamCounter,
    check_join,
    should_leave,
)
from swarmcast.node.hls_fallback import OriginFallback
from swarmcast.node.host import PeerHost
from swarmcast.node.joiner import JoinError, LocalFiles, Membership
from swarmcast.node.shared import make_store, new_peer_id
from swarmcast.swarm.core import Cursor, Role, Swarm, SwarmConfig
from swarmcast.swarm.peer import Address
from swarmcast.transport import Descriptor
from swarmcast.wire.messages import PieceFlags

log = logging.getLogger("swarmcast.engine")

POLL_INTERVAL = 0.25
REAP_INTERVAL = 1.0
# Pieces a viewer engine keeps behind the newest one (the store's window; --live-window-pieces). A player, ours or
# a peer's, more than max_lag_pieces (50, 10 s of 0.2 s pieces) behind jumps to live, so no one reads a piece much
# older than that: 100 (about 20 s) is twice as much. The broadcaster's nodes keep MAX_WINDOW_PIECES under
# their byte cap; an engine keeping as much held up to --live-cache-size (200 MiB) after a quarter of an hour.
ENGINE_WINDOW_PIECES = 100
MIN_ENGINE_WINDOW_PIECES = 16


@dataclass(frozen=True)
class EngineConfig:
    http_port: int = 6878
    http_bind: str = "127.0.0.1"
    port: int = 8621
    bind: str = "0.0.0.0"
    trackers: tuple[str, ...] = ()
    cache: CacheConfig = field(default_factory=CacheConfig)
    window_pieces: int = ENGINE_WINDOW_PIECES
    startup_timeout: float = 30.0
    player_write_timeout: float = 30.0
    upload_slots: int = 16
    upload_limit: int = 0  # bytes/s; 0 = no limit
    max_peers: int = 60
    # Which local paths url= may name: none unless --allow-local-transport-files or --transport-files-dir.
    local_files: LocalFiles = field(default_factory=LocalFiles)
    # Host names the API answers besides IP addresses and localhost (DNS rebinding); "*" = any.
    http_allowed_hosts: tuple[str, ...] = ()
    # Connection limits of the P2P port, per remote address and in total (node/admission.py).
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)


ENGINE_TARGET_PEERS = 8


class EngineBroadcast:
    def __init__(self, membership: Membership, *, now: float) -> None:
        self.membership = membership
        self.swarm: Swarm = membership.swarm
        self.players = 0
        self.delivered = 0
        self.joined = now
        self.last_active = now
        self.source_clock: SourceClock | None = None
        self.closed = asyncio.Event()  # set when the engine leaves the broadcast: its players end
        self._new_piece = asyncio.Event()
        self._has_piece = False
        self.swarm.piece_listeners.append(self._on_piece)
        self.fallback: OriginFallback | None = None  # a public HLS broadcast's origin fallback (hls_fallback.py)
        # For /metrics (metrics/collectors.py): each player's wait for its first piece, and the delay behind the
        # source's clock of each stamped keyframe a player got.
        self.startup_seconds = Histogram(STARTUP_BUCKETS)
        self.delay_seconds = Histogram(DELAY_BUCKETS)

    def start_fallback(self, descriptor: Descriptor, local_ip: str | None) -> None:
        if descriptor.hls_manifest and self.fallback is None:
            self.fallback = OriginFallback(self.swarm, descriptor, local_ip=local_ip)
            self.fallback.start()

    def _on_piece(self, _index: int) -> None:
        self._has_piece = True
        self._new_piece.set()

    @property
    def infohash(self) -> str:
        return self.swarm.content_id.hex()

    @property
    def state(self) -> BroadcastState:
        if self._has_piece:
            return BroadcastState.PLAYING
        return BroadcastState.STARTING if self.swarm.descriptor is not None else BroadcastState.LOOKUP

    def startup_problem(self) -> str:
        """Why this broadcast has produced nothing yet, for the error a waiting player gets."""
        if self.swarm.descriptor is None:
            return "could not get the broadcast's descriptor from any peer"
        return "no peers found" if self.swarm.peer_count == 0 else "no data from peers"

    async def pieces(
        self, stopped: Callable[[], bool], on_discontinuity: Callable[[], None] | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Verified piece data in order, from a random-access point, for one player, until ``stopped()``.

        ``on_discontinuity`` is called before a piece that does not continue the one before: after a run of pieces
        was skipped (the data jumps ahead to a random-access piece), or flagged DISCONTINUITY (the source's input
        restarted: timestamps may start again). An HLS output marks a discontinuity there."""
        cursor: Cursor = self.swarm.open_cursor()
        skipped, delivered = 0, False
        arrived = time.monotonic()
        if self.players == 0 and self.state is not BroadcastState.PLAYING:
            self.joined = time.monotonic()  # the startup timeout counts from the first player that waits
        self.players += 1
        try:
            while not stopped() and not self.closed.is_set():
                piece = self.swarm.next_piece(cursor, time.monotonic())
                if piece is None:
                    self._new_piece.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(POLL_INTERVAL):
                            await self._new_piece.wait()
                    continue
                if not delivered:
                    self.startup_seconds.observe(time.monotonic() - arrived)
                jumped = delivered and (cursor.skipped != skipped or bool(piece.flags & PieceFlags.DISCONTINUITY))
                skipped, delivered = cursor.skipped, True
                if on_discontinuity is not None and jumped:
                    on_discontinuity()
                self.delivered += len(piece.data)
                # The source's stamp travels in the random-access piece with its keyframe: scan only those.
                stamp = latest_clock_us(piece.data) if piece.flags & PieceFlags.RANDOM_ACCESS else None
                if stamp is not None:
                    self.source_clock = SourceClock(stamp / 1e6, time.time())
                    self.delay_seconds.observe(self.source_clock.delay)
                self.last_active = time.monotonic()
                yield piece.data
        finally:
            self.players -= 1
            self.last_active = time.monotonic()
            self.swarm.close_cursor(cursor)


@dataclass(frozen=True)
class SourceClock:
    """The newest wall-clock stamp the test signal (or any stamping source) put in the stream, and when we played it."""

    stamped: float
    played: float

    @property
    def delay(self) -> float:
        return self.played - self.stamped


PlaybackSession = Session[EngineBroadcast]


def check_trackers(trackers: tuple[str, ...]) -> None:
    """JoinError naming the first tracker URL we could not announce to (they come from clients' magnet links)."""
    for url in trackers:
        try:
            check_tracker_url(url)
            port = urlsplit(url).port  # ValueError past 65535, which the announcer would only meet in its task
        except ValueError as error:
            message = str(error)
            raise JoinError(message if repr(url) in message else f"bad tracker URL {url[:200]!r}: {message}") from None
        if port == 0:
            raise JoinError(f"tracker URL {url[:200]!r} has port 0")


class Engine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.peer_id = new_peer_id()
        self.host = PeerHost(
            bind=config.bind, port=config.port, peer_id=self.peer_id, app=web.Application(), admission=config.admission
        )
        self.broadcasts: dict[bytes, EngineBroadcast] = {}
        self.sessions: SessionTable[EngineBroadcast] = SessionTable()
        self.streams = StreamCounter()
        self._lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None

    @property
    def local_files(self) -> LocalFiles:
        return self.config.local_files

    async def start(self) -> None:
        await self.host.start()
        self._reaper = asyncio.create_task(self._reap(), name="engine-reaper")

    async def join(
        self,
        content_id: bytes,
        *,
        descriptor: Descriptor | None = None,
        trackers: tuple[str, ...] = (),
        node: Address | None = None,
    ) -> EngineBroadcast:
        """The broadcast, joined if need be; JoinError (the client's fault) or EngineBusyError (a limit is reached)."""
        check_trackers(trackers)
        async with self._lock:
            now = time.monotonic()
            broadcast = self.broadcasts.get(content_id)
            if broadcast is None:
                all_trackers = tuple(self.config.trackers) + trackers
                if descriptor is not None:
                    check_trackers(descriptor.trackers)
                    all_trackers += descriptor.trackers
                if descriptor is None and not all_trackers and node is None:
                    raise JoinError("a content id alone needs a tracker (--tracker or tr= in a magnet link)")
                states = [b.state for b in self.broadcasts.values()]
                check_join(
                    BroadcastState.LOOKUP if descriptor is None else BroadcastState.STARTING,
                    lookups=states.count(BroadcastState.LOOKUP),
                    broadcasts=len(states) - states.count(BroadcastState.LOOKUP),
                )
                swarm = Swarm(
                    content_id=content_id,
                    peer_id=self.peer_id,
                    config=SwarmConfig(
                        role=Role.ENGINE,
                        # A viewer dials 8 peers and is dialled by about as many: enough paths for the stream,
                        # and each connection costs a HAVE per piece (CPU and bytes) on both sides.
                        target_peers=ENGINE_TARGET_PEERS,
                        upload_slots=self.config.upload_slots,
                        upload_limit=self.config.upload_limit,
                        max_peers=self.config.max_peers,
                    ),
                    store=make_store(self.config.cache, content_id, self.host.port, self.config.window_pieces),
                    descriptor=descriptor,
                    now=now,
                )
                if node is not None:
                    swarm.add_candidates([node], pinned=True)
                membership = Membership(self.host, swarm, all_trackers)
                membership.start()
                broadcast = self.broadcasts[content_id] = EngineBroadcast(membership, now=now)
                local_ip = None if self.config.bind in ("0.0.0.0", "::") else self.config.bind
                if descriptor is not None:
                    broadcast.start_fallback(descriptor, local_ip)
                else:
                    swarm.descriptor_listeners.append(partial(broadcast.start_fallback, local_ip=local_ip))
                log.info("joined broadcast %s (%s)", content_id.hex(), broadcast.state.value)
            else:
                if node is not None:
                    broadcast.swarm.add_candidates([node], pinned=True)
                if trackers:
                    try:
                        broadcast.membership.add_trackers(trackers)
                    except ValueError as error:  # the announcer's tracker cap: the broadcast plays on without it
                        log.info("not adding trackers to %s: %s", content_id.hex(), error)
            broadcast.last_active = now
            return broadcast

    def new_session(self, broadcast: EngineBroadcast) -> PlaybackSession:
        """A JSON session; EngineBusyError when the table is full of sessions in use (none is evicted)."""
        return self.sessions.add(broadcast, time.monotonic())

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            await self.reap(time.monotonic())

    async def reap(self, now: float) -> None:
        self.sessions.expire(now)
        for content_id, broadcast in list(self.broadcasts.items()):
            state = broadcast.state
            leave = should_leave(
                state, players=broadcast.players, sessions=self.sessions.count(broadcast), joined=broadcast.joined,
                last_active=broadcast.last_active, now=now, startup_timeout=self.config.startup_timeout,
            )  # fmt: skip
            if leave:
                log.info("leaving %s broadcast %s", "idle" if state is BroadcastState.PLAYING else
                         f"unstarted ({state.value})", content_id.hex())  # fmt: skip
                await self.leave(content_id)

    async def leave(self, content_id: bytes) -> None:
        broadcast = self.broadcasts.pop(content_id, None)
        if broadcast is None:
            return
        broadcast.closed.set()
        self.sessions.remove_broadcast(broadcast)
        if broadcast.fallback is not None:
            await broadcast.fallback.close()
        await broadcast.membership.close()

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        for content_id in list(self.broadcasts):
            await self.leave(content_id)
        await self.host.close()
