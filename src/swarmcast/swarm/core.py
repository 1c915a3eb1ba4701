"""One broadcast's swarm, as a sans-IO state machine: peers, live window, requests, choking, PEX.

How this works. The owner attaches a ``PeerSession`` once both handshakes are exchanged, feeds each connection's
events to ``handle_events`` and calls ``tick(now)`` a few times a second; the swarm answers by queueing messages
on the connections and flushing them to each session's ``PeerLink``. It never reads a clock or opens a socket:
the asyncio node and the simulator in bench/ drive the same code.

- Live window: ``PieceStore`` holds the newest pieces under a byte cap. Every stored piece is announced with HAVE.
- Cursors: each player (engine) or the keep-up sweeper (support node) owns a ``Cursor``: the next index it needs.
  Requests go out for the pieces just ahead of every cursor, earliest first (earliest deadline first). A cursor
  that waits too long for a piece while later ones exist skips to the next random-access piece, so one lost piece
  never freezes a player and a player that stops reading never holds back the swarm.
- Choking: up to ``upload_slots`` interested peers are unchoked, free slots at once (fast start); every rechoke
  interval the peers that gave us most are kept, plus a quarter of the slots as optimistic unchokes. A source
  serves only seeders (support nodes) while any is interested, so its upload stays near one copy of the stream.
- Capacity: ``upload_limit`` (bytes/s, a token bucket) is what a home uplink can give; a request beyond it gets a
  REJECT and the requester asks someone else for a while. Slots say how many may ask, the limit how much we give.
- Sparing the broadcaster: a fresh piece that only the broadcaster's nodes hold (the source, for a support node;
  source and support nodes, for an engine) is fetched from them only after a random grace of up to
  ``seeder_grace``, and only if some other peer could have fetched it first. The first viewers to ask take it from
  a support node, the rest from them: the broadcaster's upload stays flat while the audience grows.
- Misbehaviour (a bad signature, a request for a piece we never announced, a malformed frame) bans the peer from
  this broadcast by peer id and address; nothing it sent is stored or forwarded.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import Enum

from swarmcast.swarm import standby
from swarmcast.swarm.peer import Address, PeerSession
from swarmcast.swarm.rates import RateMeter
from swarmcast.swarm.store import PieceStore, StoredPiece
from swarmcast.transport import Descriptor, PieceVerifier, TransportError
from swarmcast.wire.connection import ConnectionClosed, Event, HandshakeReceived, MessageReceived
from swarmcast.wire.errors import ErrorCode, ProtocolError
from swarmcast.wire.messages import (
    MAX_PEX_PEERS,
    MAX_WINDOW_PIECES,
    Cancel,
    Choke,
    GoodbyeReason,
    Have,
    Interested,
    KeepAlive,
    Message,
    Metadata,
    MetadataRequest,
    NotInterested,
    Pex,
    Piece,
    PieceFlags,
    Reject,
    Request,
    Unchoke,
    Window,
)

log = logging.getLogger("swarmcast.swarm")

PREFERRED_EXTRA_PEERS = 2  # support nodes named by a source may be dialled this far beyond target_peers
NEWCOMER_GRACE = 10.0  # seconds a newly joined peer may hold an extra upload slot
HOUSEKEEPING_INTERVAL = 1.0  # seconds between connection timers, back-pressure checks and rechoke checks


class Role(Enum):
    SOURCE = "source"
    SUPPORT = "support"
    ENGINE = "engine"


@dataclass(frozen=True)
class SwarmConfig:
    role: Role
    max_peers: int = 60
    target_peers: int = 12
    upload_slots: int = 8
    upload_limit: int = 0  # bytes/s given to peers; 0 = no limit
    seeder_grace: float = 0.3
    max_requests_per_peer: int = 16
    request_timeout: float = 2.0
    lookahead_pieces: int = 96
    skip_after: float = 2.5
    max_lag_pieces: int = 50  # a reader this far behind the newest piece known jumps to live (10 s of 0.2 s pieces)
    rechoke_interval: float = 5.0
    optimistic_interval: float = 10.0
    pex_interval: float = 20.0
    send_buffer_limit: int = 4 * 1024 * 1024
    stall_timeout: float = 10.0
    max_candidates: int = 500
    dial_backoff_max: float = 8.0
    download_from: frozenset[Address] | None = None


@dataclass
class Cursor:
    """A reader's place in the stream: ``position`` is the next index it needs (None until it has started)."""

    position: int | None = None
    waiting_since: float | None = None
    skipped: int = 0
    started: bool = False  # has delivered a piece; until then a start point that does not come is re-chosen


@dataclass
class _Candidate:
    failures: int = 0
    next_try: float = 0.0
    pinned: bool = False  # an address we were told to use (source, --download-from): never forgotten
    preferred: bool = False  # a support node a source pointed us to: dialled first, even with the peer set full


@dataclass
class SwarmStats:
    downloaded: int = 0
    downloaded_from_source: int = 0
    downloaded_from_seeders: int = 0  # support nodes (and the source): the broadcaster's own upload
    uploaded: int = 0
    bytes_sent: int = 0
    payload_sent: int = 0
    banned: int = 0
    bad_pieces: int = 0
    skipped_pieces: int = 0
    rejected_over_limit: int = 0
    down: RateMeter = field(default_factory=RateMeter)
    up: RateMeter = field(default_factory=RateMeter)


class Swarm:
    def __init__(
        self,
        *,
        content_id: bytes,
        peer_id: bytes,
        config: SwarmConfig,
        store: PieceStore,
        descriptor: Descriptor | None,
        now: float,
        rng: random.Random | None = None,
    ) -> None:
        self.content_id = content_id
        self.peer_id = peer_id
        self.config = config
        self.store = store
        self.descriptor: Descriptor | None = None
        self._verifier: PieceVerifier | None = None
        self._descriptor_bytes = b""
        self.sessions: dict[int, PeerSession] = {}
        self.cursors: list[Cursor] = []
        self._sweeper: Cursor | None = None if config.role is Role.ENGINE else Cursor()
        self._pending: dict[int, int] = {}  # piece index -> session key it was requested from
        self._dirty: set[PeerSession] = set()  # sessions with queued bytes not yet written to their link
        self.flush_soon: Callable[[], None] | None = None  # see _flush_dirty
        self._flush_scheduled = False
        self._candidates: dict[Address, _Candidate] = {}
        self._banned_ids: set[bytes] = set()
        self._banned_addresses: set[Address] = set()
        self._rng = rng or random.Random()
        self._last_rechoke = now
        self._last_optimistic = now
        self._optimistic: set[int] = set()
        self._newcomers: dict[int, float] = {}  # session key -> end of its newcomer grace
        # Index -> when a piece only the broadcaster's nodes hold may be fetched from them (see seeder_grace).
        self._spare_until: dict[int, float] = {}
        self._upload_tokens = float(config.upload_limit)
        self._upload_tokens_at = now
        self._last_pex = now
        self._last_housekeeping = now
        self._closed = False
        self.stats = SwarmStats()
        self.piece_listeners: list[Callable[[int], None]] = []
        self.descriptor_listeners: list[Callable[[Descriptor], None]] = []
        if descriptor is not None:
            self._set_descriptor(descriptor)

    # -- descriptor --------------------------------------------------------------------------------------
    def _set_descriptor(self, descriptor: Descriptor) -> None:
        self.descriptor = descriptor
        self._descriptor_bytes = descriptor.encode()
        self._verifier = PieceVerifier(descriptor.public_key, self.content_id)
        for listener in list(self.descriptor_listeners):
            listener(descriptor)

    # -- peers -------------------------------------------------------------------------------------------
    def is_banned(self, peer_id: bytes, address: Address) -> bool:
        return peer_id in self._banned_ids or address in self._banned_addresses

    def can_accept(self) -> bool:
        return not self._closed and len(self.sessions) < self.config.max_peers

    def attach(self, session: PeerSession, now: float) -> bool:
        """Take a peer whose handshake matched; False (and a goodbye) when it may not join."""
        handshake = session.handshake
        reason: GoodbyeReason | None = None
        if handshake.peer_id == self.peer_id:
            reason = GoodbyeReason.DUPLICATE
            self._candidates.pop(session.address, None)
        elif self.is_banned(handshake.peer_id, session.address):
            reason = GoodbyeReason.BANNED
        elif any(s.handshake.peer_id == handshake.peer_id for s in self.sessions.values()):
            reason = GoodbyeReason.DUPLICATE
        elif not self.can_accept():
            reason = GoodbyeReason.TOO_MANY_PEERS
        if reason is not None:
            session.connection.close(reason, now)
            session.flush()
            session.link.close()
            return False
        self.sessions[session.key] = session
        candidate = self._candidates.get(session.address)
        if candidate is not None:
            candidate.failures = 0
        self._send(session, self._window_message(), now)
        if self.descriptor is None:
            session.metadata_requested = True
            self._send(session, MetadataRequest(), now)
        if self.config.role is not Role.SOURCE and session.may_download:
            session.sent_interested = True
            self._send(session, Interested(), now)
        if self._sessions_for_pex():
            self._send(session, Pex(self._pex_list(exclude=session)), now)
        self._after_change(now)
        self._flush_dirty()
        return True

    def detach(self, session: PeerSession, now: float, reason: str) -> None:
        if self.sessions.pop(session.key, None) is None:
            return
        log.info("peer %s:%d left: %s", session.address[0], session.address[1], reason)
        for index in list(session.requests_out):
            self._pending.pop(index, None)
        self._optimistic.discard(session.key)
        self._newcomers.pop(session.key, None)
        self._after_change(now)

    def ban(self, session: PeerSession, error: ProtocolError, now: float) -> None:
        log.warning("banning peer %s:%d: %s", session.address[0], session.address[1], error)
        self.stats.banned += 1
        self._banned_ids.add(session.handshake.peer_id)
        if session.address[1] > 0:  # port 0: the peer does not listen, so its address names nobody
            self._banned_addresses.add(session.address)
        self._candidates.pop(session.address, None)
        session.connection.close(GoodbyeReason.BANNED, now)
        session.flush()
        session.link.close()
        self.detach(session, now, f"banned ({error.code.name})")

    # -- candidates to dial ------------------------------------------------------------------------------
    def add_candidates(self, addresses: Iterable[Address], *, pinned: bool = False, preferred: bool = False) -> None:
        for address in addresses:
            if address in self._banned_addresses:
                continue
            if self.config.download_from is not None and address not in self.config.download_from:
                continue
            candidate = self._candidates.get(address)
            if candidate is None:
                if len(self._candidates) >= self.config.max_candidates:
                    continue
                candidate = self._candidates[address] = _Candidate()
            candidate.pinned = candidate.pinned or pinned
            candidate.preferred = candidate.preferred or preferred

    def dial_failed(self, address: Address, now: float) -> None:
        candidate = self._candidates.get(address)
        if candidate is None:
            return
        candidate.failures += 1
        if candidate.failures > 6 and not candidate.pinned:
            del self._candidates[address]
            return
        candidate.next_try = now + min(self.config.dial_backoff_max, 0.5 * 2 ** min(candidate.failures, 10))

    def addresses_to_dial(self, now: float, connecting: set[Address]) -> list[Address]:
        """Candidates worth a connection attempt now (the owner dials them and reports failures)."""
        connected = {s.address for s in self.sessions.values()}
        room = self.config.target_peers - len(self.sessions) - len(connecting)
        pinned_missing = [
            a for a, c in self._candidates.items() if c.pinned and a not in connected and a not in connecting
        ]
        chosen: list[Address] = [a for a in pinned_missing if self._candidates[a].next_try <= now]
        # Support nodes a source named: a viewer the source will not serve needs one, whatever else it has.
        preferred = [
            a for a, c in self._candidates.items()
            if c.preferred and not c.pinned and a not in connected and a not in connecting and c.next_try <= now
        ]  # fmt: skip
        self._rng.shuffle(preferred)
        extra = preferred[: max(0, room + PREFERRED_EXTRA_PEERS)]
        chosen.extend(extra)
        room -= len(extra)
        if room > 0:
            others = [
                a
                for a, c in self._candidates.items()
                if not c.pinned and not c.preferred and a not in connected and a not in connecting and c.next_try <= now
            ]
            self._rng.shuffle(others)
            chosen.extend(others[:room])
        for address in chosen:
            # Until the attempt reports back, do not hand out the same address again.
            self._candidates[address].next_try = now + 1.0
        return chosen

    # -- cursors -----------------------------------------------------------------------------------------
    def open_cursor(self) -> Cursor:
        cursor = Cursor()
        self.cursors.append(cursor)
        return cursor

    def close_cursor(self, cursor: Cursor) -> None:
        if cursor in self.cursors:
            self.cursors.remove(cursor)

    def next_piece(self, cursor: Cursor, now: float) -> StoredPiece | None:
        """The next piece for this reader, in order, or None when it must wait; skips holes that time out."""
        if cursor.position is None:
            start = self._start_index()
            if start is None:
                return None
            cursor.position = start
        oldest = self.store.oldest
        if oldest is not None and cursor.position < oldest and cursor.position not in self.store:
            # The reader fell out of the window (it read too slowly): rejoin at the newest random-access piece.
            self._skip(cursor, self._latest_random_access(), now)
            return None
        if cursor.started and self._too_far_behind(cursor.position):
            # Pieces still trickle in, but slower than the stream: jump to live rather than lag for ever.
            self._skip(cursor, self._latest_random_access(), now)
        piece = self.store.get(cursor.position)
        if piece is not None:
            cursor.position += 1
            cursor.waiting_since = None
            cursor.started = True
            return piece
        if not cursor.started:
            # The start point was announced but has not come (a peer lied, or left): choose again.
            if cursor.waiting_since is None:
                cursor.waiting_since = now
            elif now - cursor.waiting_since >= self.config.skip_after:
                cursor.position = None
                cursor.waiting_since = None
            return None
        newest = self._newest_known()
        if newest is None or newest <= cursor.position:
            cursor.waiting_since = None
            return None
        if cursor.waiting_since is None:
            cursor.waiting_since = now
        elif now - cursor.waiting_since >= self.config.skip_after:
            self._skip(cursor, self._next_random_access_after(cursor.position), now)
        return None

    def _too_far_behind(self, position: int) -> bool:
        newest = self._newest_known()
        return newest is not None and newest - position > self.config.max_lag_pieces

    def _skip(self, cursor: Cursor, target: int | None, now: float) -> None:
        if target is None or cursor.position is None or target <= cursor.position:
            return
        log.info("skipping pieces %d..%d (not received in time)", cursor.position, target - 1)
        cursor.skipped += target - cursor.position
        self.stats.skipped_pieces += target - cursor.position
        cursor.position = target
        cursor.waiting_since = now

    def _start_index(self) -> int | None:
        return self._latest_random_access()

    def _latest_random_access(self) -> int | None:
        known = self.store.random_access_indices()
        for session in self.sessions.values():
            if session.may_download and session.random_access:
                known.append(max(session.random_access))
        return max(known) if known else None

    def _next_random_access_after(self, index: int) -> int | None:
        best: int | None = None
        for candidate in self.store.random_access_indices():
            if candidate > index:
                best = candidate
                break
        for session in self.sessions.values():
            if not session.may_download:
                continue
            later = [i for i in session.random_access if i > index]
            if later and (best is None or min(later) < best):
                best = min(later)
        return best

    def _newest_known(self) -> int | None:
        values = [s.newest_have for s in self.sessions.values() if s.newest_have is not None and s.may_download]
        if self.store.newest is not None:
            values.append(self.store.newest)
        return max(values) if values else None

    # -- hot standby (swarm/standby.py) -------------------------------------------------------------------
    def set_role(self, role: Role, now: float) -> None:
        """A standby taking over as the source (SUPPORT -> SOURCE), or following again (SOURCE -> SUPPORT)."""
        self.config = replace(self.config, role=role)
        self._pending.clear()
        standby.after_role_change(self, role, now)

    # -- local pieces (the source) -----------------------------------------------------------------------
    def add_local_piece(self, piece: StoredPiece, now: float) -> None:
        self._store_and_announce(piece, None, now)
        self._flush_dirty()

    # -- events ------------------------------------------------------------------------------------------
    def handle_events(self, session: PeerSession, events: Iterable[Event], now: float) -> None:
        for event in events:
            if session.key not in self.sessions:
                break
            if isinstance(event, MessageReceived):
                try:
                    self._handle_message(session, event.message, now)
                except ProtocolError as error:
                    self.ban(session, error, now)
            elif isinstance(event, ConnectionClosed):
                if event.error is not None:
                    self.ban(session, event.error, now)
                else:
                    session.flush()  # e.g. our GOODBYE(TIMEOUT)
                    self.detach(session, now, event.reason)
                    session.link.close()
            elif isinstance(event, HandshakeReceived):  # pragma: no cover - the owner consumes it
                continue
        self._fill_requests(now)
        self._flush_dirty()

    def _handle_message(self, session: PeerSession, message: Message, now: float) -> None:
        match message:
            case Have(index, flags):
                self._note_have(session, index, flags)
                if index not in self.store and index not in self._spare_until and len(self._spare_until) < 4096:
                    # First news of a fresh piece: our moment to let others take it from the broadcaster first.
                    self._spare_until[index] = now + self._grace_for(index)
            case Window(first, have, random_access):
                session.have = {first + i for i, bit in enumerate(have) if bit}
                session.random_access = {first + i for i, bit in enumerate(random_access) if bit and have[i]}
                session.newest_have = max(session.have) if session.have else None
            case Request(index):
                self._serve_request(session, index, now)
            case Piece():
                self._receive_piece(session, message, now)
            case Reject(index):
                if session.requests_out.pop(index, None) is not None:
                    self._pending.pop(index, None)
                    # Busy (over its upload limit or slots) or lost it: ask others first for a while.
                    session.busy_until = now + 1.0
                session.have.discard(index)
                session.random_access.discard(index)
            case Cancel():
                pass  # pieces are sent whole at once, so there is nothing queued to cancel
            case Choke():
                session.peer_choking = True
                for index in session.requests_out:
                    self._pending.pop(index, None)
                session.requests_out.clear()
            case Unchoke():
                session.peer_choking = False
            case Interested():
                session.peer_interested = True
                if self.config.role is Role.SOURCE and session.is_seeder:
                    self._rechoke(now)  # viewers served until now make way for the support node
                self._unchoke_if_free(session, now)
            case NotInterested():
                session.peer_interested = False
            case Pex(peers):
                self.add_candidates(peers, preferred=session.is_source)
            case MetadataRequest():
                self._send(session, Metadata(self._descriptor_bytes), now)
            case Metadata(data):
                self._receive_metadata(session, data)
            case KeepAlive():
                pass

    def _note_have(self, session: PeerSession, index: int, flags: PieceFlags) -> None:
        session.have.add(index)
        if flags & PieceFlags.RANDOM_ACCESS:
            session.random_access.add(index)
        if session.newest_have is None or index > session.newest_have:
            session.newest_have = index
        if len(session.have) > 2 * MAX_WINDOW_PIECES:
            # Keep the newest window's worth; a peer cannot make us hold more whatever order it announces in.
            session.forget_before(sorted(session.have)[-MAX_WINDOW_PIECES])

    def _serve_request(self, session: PeerSession, index: int, now: float) -> None:
        newest = self.store.newest
        oldest = self.store.oldest
        # A request for a piece we never announced is a protocol violation; one for a piece that has just left
        # our window is an honest race and gets a REJECT.
        if newest is None or index > newest or (oldest is not None and index < oldest - MAX_WINDOW_PIECES):
            raise ProtocolError(ErrorCode.REQUEST_OUTSIDE_WINDOW, f"request for piece {index} outside our window")
        piece = self.store.get(index)
        if (
            session.am_choking
            or piece is None
            or session.link.write_buffer_size() > self.config.send_buffer_limit
            or not self._take_upload_tokens(len(piece.data), now)
        ):
            self._send(session, Reject(index), now)
            return
        self._send(session, Piece(piece.index, piece.flags, piece.signature, piece.data), now)
        session.up.add(len(piece.data), now)
        self.stats.up.add(len(piece.data), now)
        self.stats.uploaded += len(piece.data)

    def _take_upload_tokens(self, size: int, now: float) -> bool:
        """Token bucket for ``upload_limit``: up to one second's worth may be sent in a burst."""
        limit = self.config.upload_limit
        if limit <= 0:
            return True
        self._upload_tokens = min(float(limit), self._upload_tokens + (now - self._upload_tokens_at) * limit)
        self._upload_tokens_at = now
        if self._upload_tokens <= 0:
            self.stats.rejected_over_limit += 1
            return False
        self._upload_tokens -= size  # may go below zero: a piece is sent whole, the debt is paid back first
        return True

    def _receive_piece(self, session: PeerSession, piece: Piece, now: float) -> None:
        if session.requests_out.pop(piece.index, None) is None:
            return  # unsolicited (or after we gave up on it): ignored, never stored or forwarded
        self._pending.pop(piece.index, None)
        if self._verifier is None:
            return
        if not self._verifier.verify(piece.index, piece.flags, piece.data, piece.signature):
            self.stats.bad_pieces += 1
            raise ProtocolError(ErrorCode.BAD_SIGNATURE, f"piece {piece.index} fails its signature")
        session.down.add(len(piece.data), now)
        self.stats.down.add(len(piece.data), now)
        self.stats.downloaded += len(piece.data)
        if session.is_source:
            self.stats.downloaded_from_source += len(piece.data)
        if session.is_seeder:
            self.stats.downloaded_from_seeders += len(piece.data)
        self._note_have(session, piece.index, piece.flags)
        self._store_and_announce(StoredPiece(piece.index, piece.flags, piece.signature, piece.data), session, now)

    def _store_and_announce(self, piece: StoredPiece, origin: PeerSession | None, now: float) -> None:
        if piece.index in self.store:
            return
        evicted = self.store.add(piece)
        self._spare_until.pop(piece.index, None)
        if piece.index in evicted:
            return
        have = Have(piece.index, piece.flags)
        for session in self.sessions.values():
            # No HAVE to a peer that told us it has the piece, nor to a source (it never downloads): in a live
            # swarm most peers get a piece at about the same time, so this halves the control traffic.
            if session is not origin and piece.index not in session.have and not session.is_source:
                self._send(session, have, now)
        if piece.index % 64 == 0:  # every few seconds is enough to keep the sets bounded
            floor = piece.index - MAX_WINDOW_PIECES
            for session in self.sessions.values():
                session.forget_before(floor)
        for listener in list(self.piece_listeners):
            listener(piece.index)

    def _receive_metadata(self, session: PeerSession, data: bytes) -> None:
        if self.descriptor is not None or not data:
            return
        if hashlib.sha1(data, usedforsecurity=False).digest() != self.content_id:
            raise ProtocolError(ErrorCode.BAD_METADATA, "descriptor does not match the content id")
        try:
            descriptor = Descriptor.decode(data)
        except TransportError as error:
            raise ProtocolError(ErrorCode.BAD_METADATA, str(error)) from None
        log.info("received the descriptor of %s from %s:%d", self.content_id.hex(), *session.address)
        self._set_descriptor(descriptor)

    # -- requests ----------------------------------------------------------------------------------------
    def _wanted_ranges(self) -> list[tuple[int, int]]:
        newest = self._newest_known()
        if newest is None:
            return []
        cursors = list(self.cursors)
        if self._sweeper is not None and self.config.role is not Role.SOURCE:
            cursors.append(self._sweeper)
        ranges = []
        for cursor in cursors:
            if cursor.position is None and cursor is not self._sweeper:
                # A new player: choose its start as soon as a peer's WINDOW or HAVE names one, not when the player
                # next polls, so the first requests go out in the same turn as the news.
                cursor.position = self._start_index()
            if cursor.position is not None:
                ranges.append((cursor.position, min(newest, cursor.position + self.config.lookahead_pieces)))
        return ranges

    def _fill_requests(self, now: float) -> None:
        if self.descriptor is None or self.config.role is Role.SOURCE:
            return
        wanted = sorted({i for low, high in self._wanted_ranges() for i in range(low, high + 1)})
        if not wanted:
            return
        sources = [
            s for s in self.sessions.values() if s.may_download and not s.peer_choking and s.have
        ]
        if not sources:
            return
        spared = self._spared_predicate()
        could_fetch_first = any(not spared(s) for s in sources)
        for index in wanted:
            if index in self.store or index in self._pending:
                continue
            holders = [
                s for s in sources if index in s.have and len(s.requests_out) < self.config.max_requests_per_peer
            ]
            if not holders:
                continue
            # Peers that turned a request of ours away in the last second (over their upload limit) are not asked
            # again until then: asking each capped holder in turn cost a REQUEST and a REJECT per piece per peer.
            holders = [s for s in holders if s.busy_until <= now]
            if not holders:
                continue
            # Spare the broadcaster's nodes when someone else has the piece: their upload is the broadcaster's bill.
            others = [s for s in holders if not spared(s)]
            if others:
                holders = others
            elif could_fetch_first and now < self._spare_until.get(index, 0.0):
                continue  # fresh, held only by the broadcaster: another peer may fetch it first and pass it on
            best = min(holders, key=lambda s: (len(s.requests_out), -s.down.rate(now)))
            best.requests_out[index] = now
            self._pending[index] = best.key
            self._send(best, Request(index), now)

    def _grace_for(self, index: int) -> float:
        """How long a fresh piece held only by nodes we spare may wait for someone else to fetch it first.

        Viewers draw at random, so the first few to ask take it from a support node and the rest from them. Support
        nodes split the stream: each piece belongs to one of the support nodes connected to each other (by index,
        over their sorted peer ids), which fetches it from the source at once; the others wait twice the grace for
        it to arrive through their fellow before asking the source themselves."""
        if self.config.role is not Role.SUPPORT:
            return self.config.seeder_grace * self._rng.random()
        fellows = sorted(
            [self.peer_id] + [s.handshake.peer_id for s in self.sessions.values() if s.is_seeder and not s.is_source]
        )
        return 0.0 if fellows[index % len(fellows)] == self.peer_id else 2 * self.config.seeder_grace

    def _spared_predicate(self) -> Callable[[PeerSession], bool]:
        """Whose upload we spare: a support node spares the source, an engine every broadcaster's node."""
        if self.config.role is Role.ENGINE:
            return lambda s: s.is_seeder
        return lambda s: s.is_source

    # -- periodic work -----------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Called a few times a second. Requests (timeouts, graces ending) are handled on every call; timers,
        back-pressure, choking and PEX once a second: with a hundred viewer engines on one machine, the per-peer
        housekeeping ten times a second was a good part of each engine's CPU time."""
        housekeeping = now - self._last_housekeeping >= HOUSEKEEPING_INTERVAL
        if housekeeping:
            self._last_housekeeping = now
            for session in list(self.sessions.values()):
                for event in session.connection.handle_timer(now):
                    self.handle_events(session, [event], now)
            self._check_backlog(now)
            if now - self._last_rechoke >= self.config.rechoke_interval:
                self._rechoke(now)
            if now - self._last_pex >= self.config.pex_interval:
                self._last_pex = now
                for session in self.sessions.values():
                    self._send(session, Pex(self._pex_list(exclude=session)), now)
        self._expire_requests(now)
        self._advance_sweeper(now)
        self._fill_requests(now)
        if housekeeping:
            self._flush_all()
        else:
            self._flush_dirty()

    def wants_peers(self) -> bool:
        """Fewer peers than the target: the owner should look for candidates to dial on every tick."""
        return len(self.sessions) < self.config.target_peers

    def _expire_requests(self, now: float) -> None:
        for session in self.sessions.values():
            expired = [i for i, sent in session.requests_out.items() if now - sent >= self.config.request_timeout]
            for index in expired:
                del session.requests_out[index]
                self._pending.pop(index, None)
                # It did not come in time: assume the peer lost it, so the next request goes elsewhere.
                session.have.discard(index)
                session.random_access.discard(index)
                self._send(session, Cancel(index), now)

    def _advance_sweeper(self, now: float) -> None:
        sweeper = self._sweeper
        if sweeper is None or self.config.role is Role.SOURCE:
            return
        for _ in range(MAX_WINDOW_PIECES):
            if self.next_piece(sweeper, now) is None:
                break

    def _check_backlog(self, now: float) -> None:
        for session in list(self.sessions.values()):
            if session.link.write_buffer_size() > self.config.send_buffer_limit:
                if session.backlogged_since is None:
                    session.backlogged_since = now
                elif now - session.backlogged_since >= self.config.stall_timeout:
                    self.ban(session, ProtocolError(ErrorCode.TOO_SLOW, "peer stopped reading"), now)
            else:
                session.backlogged_since = None

    def _eligible(self, session: PeerSession) -> bool:
        """Whom we may upload to. A source with support nodes serves only them: its upload is the broadcaster's bill,
        and the support nodes (and viewers among themselves) fan the stream out."""
        if self.config.role is not Role.SOURCE or session.is_seeder:
            return True
        return not any(s.is_seeder and s.peer_interested for s in self.sessions.values())

    def _unchoke_if_free(self, session: PeerSession, now: float) -> None:
        if not session.am_choking or not self._eligible(session) or self.config.upload_slots <= 0:
            return
        unchoked = sum(1 for s in self.sessions.values() if not s.am_choking)
        if unchoked < self.config.upload_slots:
            self._set_choke(session, choke=False, now=now)
            return
        # Slots full: a peer that has just joined gets one of a few extra newcomer slots for NEWCOMER_GRACE
        # seconds, so a new viewer starts at once instead of waiting for a rechoke or an optimistic draw;
        # by the time the grace ends it competes like everyone else.
        self._newcomers = {k: t for k, t in self._newcomers.items() if t > now and k in self.sessions}
        if now - session.connected_at < NEWCOMER_GRACE and len(self._newcomers) < self._newcomer_slots():
            self._newcomers[session.key] = session.connected_at + NEWCOMER_GRACE
            self._set_choke(session, choke=False, now=now)

    def _newcomer_slots(self) -> int:
        return max(1, self.config.upload_slots // 4)

    def _rechoke(self, now: float) -> None:
        self._last_rechoke = now
        interested = [s for s in self.sessions.values() if s.peer_interested and self._eligible(s)]
        slots = self.config.upload_slots
        if len(interested) <= slots:
            keep = {s.key for s in interested}
        else:
            role = self.config.role

            def score(s: PeerSession) -> tuple[bool, float]:
                if role is Role.SOURCE:  # seeders first (they fan out), then whoever we exchange most with
                    return (s.is_seeder, s.down.rate(now) + s.up.rate(now))
                if role is Role.SUPPORT:
                    # Viewers give a support node nothing, so reciprocity would rank them at random and choke
                    # at every rechoke the viewers that rely on it; keep serving those it serves most.
                    return (False, s.up.rate(now))
                return (False, s.down.rate(now))  # a viewer reciprocates the peers that give it most

            # A quarter of the slots (at least one) go round at random, so a newcomer with nothing to give yet, or
            # a viewer that cannot upload, is never starved for long by peers that all reciprocate.
            n_optimistic = max(1, slots // 4) if slots > 0 else 0
            ranked = sorted(interested, key=score, reverse=True)
            keep = {s.key for s in ranked[: slots - n_optimistic]}
            rest = [s.key for s in interested if s.key not in keep]
            self._optimistic &= set(rest)
            if now - self._last_optimistic >= self.config.optimistic_interval:
                self._optimistic = set()
                self._last_optimistic = now
            missing = n_optimistic - len(self._optimistic)
            if missing > 0:
                pool = [k for k in rest if k not in self._optimistic]
                self._optimistic |= set(self._rng.sample(pool, min(missing, len(pool))))
            keep |= self._optimistic
            keep |= {k for k, until in self._newcomers.items() if until > now and k in {s.key for s in interested}}
        for session in self.sessions.values():
            self._set_choke(session, choke=session.key not in keep, now=now)

    def _set_choke(self, session: PeerSession, *, choke: bool, now: float) -> None:
        if session.am_choking == choke:
            return
        session.am_choking = choke
        session.unchoked_at = now
        self._send(session, Choke() if choke else Unchoke(), now)

    # -- helpers -----------------------------------------------------------------------------------------
    def _window_message(self) -> Window:
        indices = self.store.indices()
        if not indices:
            return Window(0, (), ())
        first = max(indices[0], indices[-1] - MAX_WINDOW_PIECES + 1)
        count = indices[-1] - first + 1
        have = tuple((first + i) in self.store for i in range(count))
        random_access = tuple(
            bool((self.store.flags(first + i) or PieceFlags.NONE) & PieceFlags.RANDOM_ACCESS) for i in range(count)
        )
        return Window(first, have, random_access)

    def _sessions_for_pex(self) -> list[PeerSession]:
        return [s for s in self.sessions.values() if s.address[1] > 0]

    def _pex_list(self, *, exclude: PeerSession) -> tuple[Address, ...]:
        seeders = [s.address for s in self._sessions_for_pex() if s.is_seeder and s is not exclude]
        if self.config.role is Role.SOURCE and not exclude.is_seeder and seeders:
            # A source names only its support nodes to viewers (it serves only them when it has any): a viewer
            # that found the source first must reach one, not only other viewers who may all be busy.
            return tuple(seeders[:MAX_PEX_PEERS])
        peers = [s.address for s in self._sessions_for_pex() if s is not exclude]
        self._rng.shuffle(peers)
        return tuple(peers[:MAX_PEX_PEERS])

    def _send(self, session: PeerSession, message: Message, now: float) -> None:
        before = session.connection.bytes_sent
        session.connection.send(message, now)
        self._dirty.add(session)
        self.stats.bytes_sent += session.connection.bytes_sent - before
        if isinstance(message, Piece):
            self.stats.payload_sent += len(message.data)

    def _flush_dirty(self) -> None:
        """Write out what was queued since the last flush; only the sessions we sent to, not every peer per event.

        With ``flush_soon`` set, the owner is asked once to call ``flush`` a little later (the node: after the
        current event-loop turn), so the HAVEs for pieces that arrived from several peers in the same turn go out
        in one write per peer rather than one each: fewer system calls, the bulk of a viewer's CPU time.
        """
        if self.flush_soon is None:
            self.flush()
        elif self._dirty and not self._flush_scheduled:
            self._flush_scheduled = True
            self.flush_soon()

    def flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        for session in dirty:
            session.flush()

    def _flush_all(self) -> None:
        # Timers queue keep-alives inside the connections themselves, so the periodic tick flushes everyone.
        self._dirty.clear()
        for session in list(self.sessions.values()):
            session.flush()

    def _after_change(self, now: float) -> None:
        for session in self.sessions.values():
            if session.peer_interested:
                self._unchoke_if_free(session, now)

    # -- status ------------------------------------------------------------------------------------------
    @property
    def peer_count(self) -> int:
        return len(self.sessions)

    def close(self, now: float) -> None:
        """Say goodbye to every peer (SHUTDOWN) and drop them."""
        self._closed = True
        for session in list(self.sessions.values()):
            session.connection.close(GoodbyeReason.SHUTDOWN, now)
            session.flush()
            session.link.close()
        self.sessions.clear()
        self._pending.clear()

    def stats_snapshot(self, now: float) -> dict[str, object]:
        """Counters for status pages and benchmarks (bytes; rates in bytes/s)."""
        stats = self.stats
        return {
            "content_id": self.content_id.hex(),
            "peers": len(self.sessions),
            "downloaded": stats.downloaded,
            "downloaded_from_source": stats.downloaded_from_source,
            "downloaded_from_seeders": stats.downloaded_from_seeders,
            "uploaded": stats.uploaded,
            "bytes_sent": stats.bytes_sent,
            "payload_sent": stats.payload_sent,
            "speed_down": round(stats.down.rate(now)),
            "speed_up": round(stats.up.rate(now)),
            "banned": stats.banned,
            "bad_pieces": stats.bad_pieces,
            "skipped_pieces": stats.skipped_pieces,
            "cache_bytes": self.store.size_bytes,
            "cache_pieces": len(self.store),
            "newest_piece": self.store.newest,
        }
