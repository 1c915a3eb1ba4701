"""The viewer engine: joins broadcasts on demand and plays them to any number of local players.

One P2P host (``--port``) carries every broadcast the engine has joined; the playback API (``--http-port``)
lives in swarmcast.http.engine_api. A broadcast is left when no player has read it for ``IDLE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from aiohttp import web

from swarmcast.media.ts import latest_clock_us
from swarmcast.node.config import CacheConfig
from swarmcast.node.host import PeerHost
from swarmcast.node.joiner import JoinError, Membership
from swarmcast.node.shared import make_store, new_peer_id
from swarmcast.swarm.core import Cursor, Role, Swarm, SwarmConfig
from swarmcast.swarm.peer import Address
from swarmcast.transport import Descriptor
from swarmcast.wire.messages import PieceFlags

log = logging.getLogger("swarmcast.engine")

IDLE_SECONDS = 30.0
MAX_BROADCASTS = 16
MAX_SESSIONS = 256
POLL_INTERVAL = 0.25


@dataclass(frozen=True)
class EngineConfig:
    http_port: int = 6878
    http_bind: str = "127.0.0.1"
    port: int = 8621
    bind: str = "0.0.0.0"
    trackers: tuple[str, ...] = ()
    cache: CacheConfig = field(default_factory=CacheConfig)
    startup_timeout: float = 30.0
    player_write_timeout: float = 30.0
    upload_slots: int = 16
    upload_limit: int = 0  # bytes/s; 0 = no limit
    max_peers: int = 60


ENGINE_TARGET_PEERS = 8


class EngineBroadcast:
    def __init__(self, membership: Membership) -> None:
        self.membership = membership
        self.swarm: Swarm = membership.swarm
        self.players = 0
        self.delivered = 0
        self.last_active = time.monotonic()
        self.source_clock: SourceClock | None = None
        self._new_piece = asyncio.Event()
        self.swarm.piece_listeners.append(lambda _index: self._new_piece.set())

    @property
    def infohash(self) -> str:
        return self.swarm.content_id.hex()

    async def pieces(self, stopped: asyncio.Event) -> AsyncGenerator[bytes, None]:
        """Verified piece data in order, from a random-access point, for one player."""
        cursor: Cursor = self.swarm.open_cursor()
        self.players += 1
        try:
            while not stopped.is_set():
                piece = self.swarm.next_piece(cursor, time.monotonic())
                if piece is None:
                    self._new_piece.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(POLL_INTERVAL):
                            await self._new_piece.wait()
                    continue
                self.delivered += len(piece.data)
                # The source's stamp travels in the random-access piece with its keyframe: scan only those.
                stamp = latest_clock_us(piece.data) if piece.flags & PieceFlags.RANDOM_ACCESS else None
                if stamp is not None:
                    self.source_clock = SourceClock(stamp / 1e6, time.time())
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


@dataclass
class PlaybackSession:
    session_id: str
    broadcast: EngineBroadcast
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    created: float = field(default_factory=time.monotonic)


class Engine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.peer_id = new_peer_id()
        self.host = PeerHost(bind=config.bind, port=config.port, peer_id=self.peer_id, app=web.Application())
        self.broadcasts: dict[bytes, EngineBroadcast] = {}
        self.sessions: dict[str, PlaybackSession] = {}
        self._lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.host.start()
        self._reaper = asyncio.create_task(self._reap_idle(), name="engine-reaper")

    async def join(
        self,
        content_id: bytes,
        *,
        descriptor: Descriptor | None = None,
        trackers: tuple[str, ...] = (),
        node: Address | None = None,
    ) -> EngineBroadcast:
        async with self._lock:
            broadcast = self.broadcasts.get(content_id)
            if broadcast is None:
                if len(self.broadcasts) >= MAX_BROADCASTS:
                    raise JoinError(f"the engine already plays {MAX_BROADCASTS} broadcasts")
                all_trackers = tuple(self.config.trackers) + trackers
                if descriptor is not None:
                    all_trackers += descriptor.trackers
                if descriptor is None and not all_trackers and node is None:
                    raise JoinError("a content id alone needs a tracker (--tracker or tr= in a magnet link)")
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
                    store=make_store(self.config.cache, content_id, self.host.port),
                    descriptor=descriptor,
                    now=time.monotonic(),
                )
                if node is not None:
                    swarm.add_candidates([node], pinned=True)
                membership = Membership(self.host, swarm, all_trackers)
                membership.start()
                broadcast = self.broadcasts[content_id] = EngineBroadcast(membership)
                log.info("joined broadcast %s", content_id.hex())
            else:
                if node is not None:
                    broadcast.swarm.add_candidates([node], pinned=True)
                if trackers:
                    broadcast.membership.add_trackers(trackers)
            broadcast.last_active = time.monotonic()
            return broadcast

    def new_session(self, broadcast: EngineBroadcast) -> PlaybackSession:
        if len(self.sessions) >= MAX_SESSIONS:
            oldest = min(self.sessions.values(), key=lambda s: s.created)
            oldest.stopped.set()
            del self.sessions[oldest.session_id]
        session = PlaybackSession(secrets.token_hex(16), broadcast)
        self.sessions[session.session_id] = session
        return session

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            now = time.monotonic()
            for content_id, broadcast in list(self.broadcasts.items()):
                if broadcast.players == 0 and now - broadcast.last_active > IDLE_SECONDS:
                    log.info("leaving idle broadcast %s", content_id.hex())
                    del self.broadcasts[content_id]
                    for sid, session in list(self.sessions.items()):
                        if session.broadcast is broadcast:
                            session.stopped.set()
                            del self.sessions[sid]
                    await broadcast.membership.close()

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        for session in self.sessions.values():
            session.stopped.set()
        for broadcast in list(self.broadcasts.values()):
            await broadcast.membership.close()
        self.broadcasts.clear()
        await self.host.close()
