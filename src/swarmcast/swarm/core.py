"""One broadcast's swarm, as a sans-IO state machine: peers, live window, cursors; the policies it composes.

How this works. The owner attaches a ``PeerSession`` once both handshakes are exchanged, feeds each connection's
events to ``handle_events`` and calls ``tick(now)`` a few times a second; the swarm answers by queueing messages
on the connections and flushing them to each session's ``PeerLink``. It never reads a clock or opens a socket:
the asyncio node and the simulator in bench/ drive the same code. Each policy is a module of its own:

- reading.py: readers' cursors (in order, skipping holes that time out) and the live edge they follow;
- edge.py: which indices a peer may name (a HAVE far past the newest verified piece is a ban) and the live edge a
  majority of peers agree on, which is where start points and skip targets are taken from;
- picker.py: which piece to ask whom for, sparing the broadcaster's nodes (``seeder_grace``), and withholding (a
  peer that announced and did not deliver is asked less, its requests move elsewhere before the reader's deadline);
- upload.py: serving requests under per-peer caps in pieces and bytes, and the upload limit;
- choking.py: upload slots; dialer.py: candidates, backoff, addresses never dialled; budget.py: per-peer
  message budgets; liveness.py: peers that stopped reading or move nothing; announce.py: our WINDOW and PEX.

Misbehaviour (a bad signature, a request for a piece we never announced, an implausible index, a malformed frame,
a flood) bans the peer from this broadcast by peer id and address; nothing it sent is stored or forwarded. A peer
that is merely useless (no piece either way for ``useless_timeout`` while it holds a slot) is dropped.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import replace

from swarmcast.swarm import announce, liveness, settings, standby, status
from swarmcast.swarm.authority import Authority
from swarmcast.swarm.budget import DEFAULT_TRANSFER_RATE, MessageBudget
from swarmcast.swarm.choking import NEWCOMER_GRACE, Choker
from swarmcast.swarm.config import Role, SwarmConfig, SwarmStats
from swarmcast.swarm.dialer import PREFERRED_EXTRA_PEERS, Dialer
from swarmcast.swarm.edge import LiveEdge
from swarmcast.swarm.fanout import Fanout
from swarmcast.swarm.outbox import Outbox
from swarmcast.swarm.peer import Address, PeerSession, knowledge_floor
from swarmcast.swarm.picker import Picker, support_grace
from swarmcast.swarm.reading import Cursor, Reading
from swarmcast.swarm.rotation import Rotation
from swarmcast.swarm.store import PieceStore, StoredPiece
from swarmcast.swarm.upload import Uploader
from swarmcast.swarm.upload_to import UploadTargets
from swarmcast.transport import Descriptor, PieceVerifier, TransportError
from swarmcast.wire.connection import ConnectionClosed, Event, HandshakeReceived, MessageReceived
from swarmcast.wire.errors import ErrorCode, ProtocolError
from swarmcast.wire.messages import (
    MAX_WINDOW_PIECES,
    Cancel,
    Choke,
    CredentialMessage,
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

__all__ = ["NEWCOMER_GRACE", "PREFERRED_EXTRA_PEERS", "Cursor", "Role", "Swarm", "SwarmConfig", "SwarmStats"]

HOUSEKEEPING_INTERVAL = 1.0  # seconds between connection timers, back-pressure checks and rechoke checks
LATE_PIECES = 2  # a piece this far behind the newest known is asked of the broadcaster's nodes without a grace
_METADATA = int(PieceFlags.METADATA)
_RANDOM_ACCESS = int(PieceFlags.RANDOM_ACCESS)
STABLE_SESSION = 10.0  # seconds a session must last for its address's failed attempts to be forgiven
# Messages after which a request pass may be skipped: they change nothing Picker.fill reads (HAVE tells the
# picker itself whether it matters: Picker.heard). Every other message, and every timer, wakes the next pass up.
QUIET_MESSAGES: frozenset[type[Message]] = frozenset(
    {Have, Request, KeepAlive, Cancel, Pex, Interested, NotInterested, MetadataRequest}
)


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
        self.stats = SwarmStats()
        self._outbox = Outbox(self.stats)
        self._send = self._outbox.send
        self._rng = rng or random.Random()
        self._now = now  # the latest time the owner told us, for calls that do not pass one
        self.edge = LiveEdge()
        self.dialer = Dialer(config, self._rng)
        self.upload_targets = UploadTargets(config.upload_to)  # --upload-to (upload_to.py)
        self.choker = Choker(config, self.sessions, score=self._score, send=self._send, rng=self._rng, now=now,
                             targets=self.upload_targets)  # fmt: skip
        self.picker = Picker(config, self.sessions, send=self._send, trust_changed=self._claims_changed, now=now)
        self.uploader = Uploader(config, store, now)
        self.reading = Reading(config, store, self.sessions, self.edge)
        self.rotation = Rotation(config.rotation)  # a start node's hand-offs; inert elsewhere
        # Whom a support node tells of a fresh piece at once, and whom later (fanout.py).
        self.fanout = Fanout(enabled=config.role is Role.SUPPORT, delay=config.announce_delay, rng=self._rng)
        self._last_pex = now
        self._last_housekeeping = now
        self._closed = False
        self.piece_listeners: list[Callable[[int], None]] = []
        self._metadata: set[int] = set()  # indices announced as METADATA (HLS segment indexes), bounded
        self.descriptor_listeners: list[Callable[[Descriptor], None]] = []
        # Who is the broadcaster's: verified credentials, not handshake flags (swarm/authority.py).
        self.authority = Authority(content_id, accept_grants=config.role is Role.SUPPORT)
        if descriptor is not None:
            self._set_descriptor(descriptor)

    def _claims_changed(self) -> None:
        self.reading.claims_changed()

    # -- descriptor --------------------------------------------------------------------------------------
    def _set_descriptor(self, descriptor: Descriptor) -> None:
        self.descriptor = descriptor
        self._descriptor_bytes = descriptor.encode()
        self._verifier = PieceVerifier(descriptor.public_key, self.content_id)
        self.authority.set_public_key(descriptor.public_key)  # credentials kept until now are checked next tick
        for listener in list(self.descriptor_listeners):
            listener(descriptor)

    # -- peers -------------------------------------------------------------------------------------------
    def is_banned(self, peer_id: bytes, address: Address) -> bool:
        return self.dialer.is_banned(peer_id, address)

    def can_accept(self) -> bool:
        return not self._closed and len(self.sessions) < self.config.max_peers

    def attach(self, session: PeerSession, now: float) -> bool:
        """Take a peer whose handshake matched; False (and a goodbye) when it may not join."""
        self._now = now
        handshake = session.handshake
        reason: GoodbyeReason | None = None
        if handshake.peer_id == self.peer_id:
            reason = GoodbyeReason.DUPLICATE
            self.dialer.is_self(session.address)
        elif self.is_banned(handshake.peer_id, session.address):
            reason = GoodbyeReason.BANNED
        elif any(s.handshake.peer_id == handshake.peer_id for s in self.sessions.values()):
            reason = GoodbyeReason.DUPLICATE
        elif self.rotation.refuses(session, now) or (not self.can_accept() and not self._make_room(now, session)):
            reason = GoodbyeReason.TOO_MANY_PEERS
        if reason is not None:
            session.connection.close(reason, now)
            session.flush()
            session.link.close()
            return False
        self.sessions[session.key] = session
        if self.config.transfer_rate != DEFAULT_TRANSFER_RATE:
            session.budget = MessageBudget(now, transfer_rate=self.config.transfer_rate)
        self.reading.claims_changed()
        for credential in self.authority.on_attach(session, now):  # first, so the peer knows whom it serves
            self._send(session, credential, now)
        self._send(session, announce.window_message(self.store), now)
        if self.descriptor is None:
            session.metadata_requested = True
            self._send(session, MetadataRequest(), now)
        if self.config.role is not Role.SOURCE and session.may_download:
            session.sent_interested = True
            self._send(session, Interested(), now)
        if announce.listening(self.sessions):
            self._send(session, self._pex_list(session), now)
        self.choker.after_change(now)
        self._outbox.flush_dirty()
        return True

    def detach(self, session: PeerSession, now: float, reason: str) -> None:
        if self.sessions.pop(session.key, None) is None:
            return
        log.info("peer %s:%d left: %s", session.address[0], session.address[1], reason)
        self.reading.claims_changed()
        if now - session.connected_at >= STABLE_SESSION:
            self.dialer.connected(session.address)  # a real peer: its earlier failed attempts are forgiven
        self.picker.forget(session)
        self.choker.forget(session)
        self.rotation.forget(session)
        self.fanout.forget(session)
        self.choker.after_change(now)

    def ban(self, session: PeerSession, error: ProtocolError, now: float) -> None:
        log.warning("banning peer %s:%d: %s", session.address[0], session.address[1], error)
        self.stats.banned += 1
        self.dialer.ban(session.handshake.peer_id, session.address)
        self._drop(session, GoodbyeReason.BANNED, now, f"banned ({error.code.name})")

    def _drop(self, session: PeerSession, reason: GoodbyeReason, now: float, why: str) -> None:
        session.connection.close(reason, now)
        session.flush()
        session.link.close()
        self.detach(session, now, why)

    def set_upload_to(self, ips: Iterable[str] | None, now: float) -> None:
        """Upload only to these IPs from now on (None: to everyone); peers no longer listed are choked at once."""
        self.upload_targets.set(ips)
        self.choker.rechoke(now)
        self.choker.after_change(now)
        self._outbox.flush_dirty()

    # -- candidates to dial ------------------------------------------------------------------------------
    def add_candidates(self, addresses: Iterable[Address], *, pinned: bool = False, preferred: bool = False) -> None:
        self.dialer.add(addresses, now=self._now, pinned=pinned, preferred=preferred)

    def add_startup_nodes(self, addresses: Iterable[Address], now: float) -> None:
        """Start nodes (transport file, metatracker): dialled first while we have not started (dialer.py)."""
        self._now = now
        self.dialer.add(addresses, now=now, startup=True)

    def note_own_address(self, address: Address) -> None:
        """An address that reaches this node (the owner knows its listen address): never dialled."""
        self.dialer.is_self(address)

    def dial_failed(self, address: Address, now: float) -> None:
        """The owner could not connect (refused, timed out)."""
        self.dialer.failed(address, now)

    def handshake_failed(self, address: Address, now: float) -> None:
        """An outbound connection closed before its session attached: not our protocol, wrong content, or refused.

        The attempt already counted when the address was handed out, so this only hastens forgetting it."""
        self.dialer.failed(address, now)

    def addresses_to_dial(self, now: float, connecting: set[Address]) -> list[Address]:
        """Candidates worth a connection attempt now (the owner dials them and reports failures)."""
        self._now = now
        connected = {s.address for s in self.sessions.values()}
        room = min(self.config.target_peers, self.config.max_peers) - len(self.sessions) - len(connecting)
        # Only a viewer starts: until one of its readers has had a piece, start nodes are dialled first.
        starting = self.config.role is Role.ENGINE and not any(c.started for c in self.cursors)
        return self.dialer.to_dial(now, room=room, connected=connected, connecting=connecting, starting=starting)

    # -- cursors (reading.py) ----------------------------------------------------------------------------
    def open_cursor(self) -> Cursor:
        cursor = Cursor()
        self.cursors.append(cursor)
        return cursor

    def close_cursor(self, cursor: Cursor) -> None:
        if cursor in self.cursors:
            self.cursors.remove(cursor)

    def next_piece(self, cursor: Cursor, now: float) -> StoredPiece | None:
        """The next piece for this reader, in order, or None when it must wait; skips holes that time out."""
        piece = self.reading.next_piece(cursor, now)
        while piece is not None and piece.flags & PieceFlags.METADATA:  # HLS segment indexes are not media
            piece = self.reading.next_piece(cursor, now)
        self.stats.skipped_pieces = self.reading.skipped
        return piece

    def _check_claims(self, now: float) -> None:
        """The first verified piece is in: claims made before it are checked as later ones are, on arrival."""
        for session in self.edge.implausible(list(self.sessions.values()), now):
            self.ban(session, ProtocolError(ErrorCode.IMPLAUSIBLE_INDEX, f"claimed piece {session.newest_have}"), now)

    # -- hot standby (swarm/standby.py) -------------------------------------------------------------------
    def set_role(self, role: Role, now: float) -> None:
        """A standby taking over as the source (SUPPORT -> SOURCE), or following again (SOURCE -> SUPPORT)."""
        self.config = replace(self.config, role=role)
        self.choker.set_role(role)
        self.fanout.set_enabled(role is Role.SUPPORT)
        self.picker.pending.clear()
        standby.after_role_change(self, role, now)

    # -- operator settings (swarm/settings.py) --------------------------------------------------------------
    def reconfigure(
        self, now: float, *, max_peers: int | None = None, upload_slots: int | None = None,
        download_from: frozenset[Address] | settings.Unchanged | None = settings.UNCHANGED,
        upload_limit: int | None = None,
    ) -> None:  # fmt: skip
        """New limits on a running swarm (the web interface's /app/update), in force at once."""
        self._now = now
        self.config = settings.updated(self.config, max_peers=max_peers, upload_slots=upload_slots,
                                       download_from=download_from, upload_limit=upload_limit)  # fmt: skip
        for session in settings.apply(self, now, self._send):
            self._drop(session, GoodbyeReason.TOO_MANY_PEERS, now, f"max_peers lowered to {self.config.max_peers}")
        self._fill_requests(now)
        self._outbox.flush_dirty()

    # -- local pieces (the source) -----------------------------------------------------------------------
    def add_local_piece(self, piece: StoredPiece, now: float) -> None:
        self._now = now
        self._store_and_announce(piece, None, now)
        self._outbox.flush_dirty()

    # -- events ------------------------------------------------------------------------------------------
    def handle_events(self, session: PeerSession, events: Iterable[Event], now: float) -> None:
        self._now = now
        for event in events:
            if session.key not in self.sessions:
                break
            if isinstance(event, MessageReceived):
                try:
                    if not session.budget.charge(event.message, now):
                        kind = type(event.message).__name__.upper()
                        raise ProtocolError(ErrorCode.FLOOD, f"too many {kind} messages")
                    self._handle_message(session, event.message, now)
                    if type(event.message) not in QUIET_MESSAGES:
                        self.picker.changed()
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
        self._fill_requests(now, may_skip=True)
        self._outbox.flush_dirty()

    def _handle_message(self, session: PeerSession, message: Message, now: float) -> None:
        match message:
            case Have(index, flags):
                self.edge.check(index, now)
                if self._too_old(index):
                    return
                self.picker.heard(session, index)  # before it is noted: whether the peer had nothing yet
                changes, before, known = self.reading.changes, session.newest_have, session.have
                self._note_have(session, index, flags)
                if session.newest_have != before:
                    self.reading.raised(session, before, changes)  # one insertion, not a count of every claim
                if session.have is not known:
                    self.picker.changed()  # trimmed (a trim builds a new set): pieces a pass read may have left it
                self.rotation.note_have(session, index, now)
                if index not in self.store:
                    self.picker.note_have(session, index, now, self._grace_for)
            case Window(first, have, random_access):
                if True in have:
                    self.edge.check(first + len(have) - 1 - have[::-1].index(True), now)
                session.have = {first + i for i, bit in enumerate(have) if bit}
                session.random_access = {first + i for i, bit in enumerate(random_access) if bit and have[i]}
                session.newest_have = max(session.have) if session.have else None
                session.trim_knowledge(self._knowledge_floor())
                self.reading.claims_changed()
            case Request(index):
                self._serve_request(session, index, now)
            case Piece():
                self._receive_piece(session, message, now)
            case Reject(index):
                if self.picker.answered(session, index, now, delivered=False):
                    # Busy (over its upload limit or slots) or lost it: ask others first for a while.
                    session.busy_until = now + self.config.reject_backoff
                session.have.discard(index)
                session.random_access.discard(index)
            case Choke():
                session.peer_choking = True
                self.picker.choked(session)
            case Unchoke():
                session.peer_choking = False
            case Interested():
                session.peer_interested = True
                if self.config.role is Role.SOURCE and session.is_seeder:
                    self.choker.rechoke(now)  # viewers served until now make way for the support node
                self.choker.unchoke_if_free(session, now)
            case NotInterested():
                session.peer_interested = False
            case Pex(peers):
                named = self.dialer.named_by(session.pex_addresses, peers)
                self.dialer.add(named, now=now, preferred=session.is_source)
            case MetadataRequest():
                self._send(session, Metadata(self._descriptor_bytes), now)
            case Metadata(data):
                self._receive_metadata(session, data)
            case CredentialMessage():
                if self.authority.receive(session, message, now):
                    self._status_changed(now)
            case _:  # KeepAlive, Cancel (pieces are sent whole at once: nothing queued to cancel)
                pass

    def _too_old(self, index: int) -> bool:
        verified = self.edge.verified
        return verified is not None and index < verified - MAX_WINDOW_PIECES

    def _note_have(self, session: PeerSession, index: int, flags: PieceFlags) -> None:
        have = session.have
        have.add(index)
        bits = int(flags)  # int bits: an IntFlag ``&`` runs enum.py in Python (a microsecond per HAVE)
        if bits & _METADATA and len(self._metadata) < MAX_WINDOW_PIECES:
            self._metadata.add(index)  # an HLS segment index: asked for first (_fill_requests)
        if bits & _RANDOM_ACCESS:
            session.random_access.add(index)
        if session.newest_have is None or index > session.newest_have:
            session.newest_have = index
            self.reading.claims_changed()
        if len(have) > session.have_trim_at:  # bounded by what can still matter, O(1) amortised (peer.py)
            session.trim_knowledge(self._knowledge_floor())

    def _knowledge_floor(self) -> int | None:
        positions = [cursor.position for cursor in self._all_cursors()]
        return knowledge_floor(self.store.oldest, positions, self.picker.pending)

    def _serve_request(self, session: PeerSession, index: int, now: float) -> None:
        piece = self.uploader.choose(session, index, now)
        self.stats.rejected_over_limit = self.uploader.rejected_over_limit
        if piece is None:
            self._send(session, Reject(index), now)
            return
        self._send(session, Piece(piece.index, piece.flags, piece.signature, piece.data), now)
        self.uploader.queued(session, index)
        self.rotation.served(session, index, now)
        session.last_useful = now
        session.up.add(len(piece.data), now)
        self.stats.up.add(len(piece.data), now)
        self.stats.uploaded += len(piece.data)
        self.stats.pieces_sent += 1
        if session.is_seeder:
            self.stats.uploaded_to_seeders += len(piece.data)

    def _receive_piece(self, session: PeerSession, piece: Piece, now: float) -> None:
        if not self.picker.answered(session, piece.index, now, delivered=True):
            return  # unsolicited (or after we gave up on it): ignored, never stored or forwarded
        if self._verifier is None:
            return
        if not self._verifier.verify(piece.index, piece.flags, piece.data, piece.signature):
            self.stats.bad_pieces += 1
            raise ProtocolError(ErrorCode.BAD_SIGNATURE, f"piece {piece.index} fails its signature")
        session.last_useful = now
        session.down.add(len(piece.data), now)
        self.stats.down.add(len(piece.data), now)
        self.stats.downloaded += len(piece.data)
        self.stats.pieces_received += 1
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
        self.rotation.stored(now)
        self.picker.stored(piece.index)
        self.reading.verified_changed()
        if self.edge.note_verified(piece.index, now):
            self._check_claims(now)
        if piece.index in evicted:
            return
        have = Have(piece.index, piece.flags)
        # No HAVE to a peer that told us it has the piece, nor to a source (it never downloads): in a live swarm
        # most peers get a piece at about the same time, so this halves the control traffic. A support node tells
        # most viewers later, if they still need it (fanout.py).
        front = self._front_size(origin)
        for session in self.fanout.now_recipients(self.sessions.values(), piece.index, origin, now, piece.flags,
                                                  front):  # fmt: skip
            self._send(session, have, now)
        if piece.index % 64 == 0:  # every few seconds is enough to keep the sets bounded
            floor = piece.index - MAX_WINDOW_PIECES
            for session in self.sessions.values():
                session.forget_before(floor)
            self._metadata = {i for i in self._metadata if i >= floor}
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

    # -- requests (picker.py) ----------------------------------------------------------------------------
    def _all_cursors(self) -> list[Cursor]:
        cursors = list(self.cursors)
        if self._sweeper is not None and self.config.role is not Role.SOURCE:
            cursors.append(self._sweeper)
        return cursors

    def _wanted_ranges(self, newest: int) -> list[tuple[int, int]]:
        ranges = []
        lookahead = self.config.lookahead_pieces
        for cursor in self._all_cursors():
            if not cursor.started and cursor is not self._sweeper:
                # A new player: choose its start as soon as a peer's WINDOW or HAVE names one, not when the player
                # next polls, so the first requests go out in the same turn as the news.
                self.reading.choose_start(cursor)
            if cursor.position is not None:
                ranges.append((cursor.position, min(newest, cursor.position + lookahead)))
        return ranges

    def _fill_requests(self, now: float, *, may_skip: bool = False) -> None:
        """Ask for what the readers want next (picker.py). ``may_skip``: after events that may have changed
        nothing a pass reads, skip it when the picker says it would ask for nothing (``Picker.quiet``)."""
        if self.descriptor is None or self.config.role is Role.SOURCE:
            return
        agreed, newest = self.reading.edge_view()  # choosing a start (in _wanted_ranges) does not move the edge
        if newest is None:
            return
        ranges = self._wanted_ranges(newest)
        if not ranges:
            return
        key = (tuple(ranges), agreed, len(self.store), len(self.sessions), len(self._metadata), self.config)
        if may_skip and self.picker.quiet(key, now):
            return
        wanted: list[int] | range
        if len(ranges) == 1:  # one reader (a player, or a support node's sweeper): in order already
            wanted = range(ranges[0][0], ranges[0][1] + 1)
        else:
            wanted = sorted({i for low, high in ranges for i in range(low, high + 1)})
        if self._metadata:  # HLS segment indexes first: tiny, and what an origin fallback needs (hls_fallback.py)
            wanted = list(wanted)
            wanted.sort(key=lambda i: i not in self._metadata)
        if wanted:
            self.picker.fill(now, wanted, self.store.__contains__, self._spared_predicate(), agreed, key)

    def _front_size(self, origin: PeerSession | None) -> int:
        """How many viewers a support node tells of a fresh piece at once: ``front_peers`` for its own share of the
        stream (from the source, or its own as an HLS signer), none for a piece a fellow support node or a viewer
        passed it (that one is in the viewers' mesh already)."""
        return self.config.front_peers if origin is None or origin.is_source else 0

    def _grace_for(self, index: int) -> float:
        if self.config.role is not Role.SUPPORT:
            newest = self.reading.newest_known()
            if newest is not None and index <= newest - LATE_PIECES:
                # Not a fresh piece: a support node tells us of it late because no viewer passed it on (fanout.py).
                return 0.0
            return self.config.seeder_grace * self._rng.random()
        fellows = [s.handshake.peer_id for s in self.sessions.values() if s.is_seeder and not s.is_source]
        return support_grace(self.peer_id, fellows, index, self.config.seeder_grace)

    def _spared_predicate(self) -> Callable[[PeerSession], bool]:
        """Whose upload we spare: a support node spares the source, an engine every broadcaster's node."""
        if self.config.role is Role.ENGINE:
            return lambda s: s.is_seeder
        return lambda s: s.is_source

    # -- periodic work -----------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Called a few times a second. Requests (timeouts, graces ending) are handled on every call; timers,
        back-pressure, choking, useless peers and PEX once a second: with a hundred viewer engines on one machine,
        the per-peer housekeeping ten times a second was a good part of each engine's CPU time."""
        self._now = now
        housekeeping = now - self._last_housekeeping >= HOUSEKEEPING_INTERVAL
        if housekeeping:
            self._last_housekeeping = now
            for session in list(self.sessions.values()):
                for event in session.connection.handle_timer(now):
                    self.handle_events(session, [event], now)
            self._check_backlog(now)
            self._drop_useless(now)
            if self.rotation.enabled and not self.can_accept():
                self._make_room(now)  # a start node keeps a place ready for the next newcomer (rotation.py)
            self._housekeep_credentials(now)
            if now - self.choker.last_rechoke >= self.config.rechoke_interval:
                self.choker.rechoke(now)
            if now - self._last_pex >= self.config.pex_interval:
                self._last_pex = now
                for session in self.sessions.values():
                    self._send(session, self._pex_list(session), now)
        if self.fanout.enabled:
            for index, flags, late in self.fanout.due(now, self.sessions, self.store.__contains__):
                have = Have(index, PieceFlags(flags))
                for session in late:
                    self._send(session, have, now)
        waiting = {c.position for c in self._all_cursors() if c.position is not None and c.waiting_since is not None}
        self.picker.expire(now, waiting)
        self._advance_sweeper(now)
        if housekeeping:
            self.picker.changed()  # peers dropped, credentials checked or expired: not worth tracking one by one
        self._fill_requests(now, may_skip=True)
        if housekeeping:
            self._outbox.flush_all(self.sessions.values())
        else:
            self._outbox.flush_dirty()

    def _housekeep_credentials(self, now: float) -> None:
        update = self.authority.housekeeping(list(self.sessions.values()), now)
        for session, error in update.offenders:
            self.ban(session, error, now)
        for session, message in update.outgoing:
            if session.key in self.sessions:
                self._send(session, message, now)
        if update.changed:
            self._status_changed(now)

    def _status_changed(self, now: float) -> None:
        """A peer became (or stopped being) the broadcaster's: a source re-deals its slots to support nodes."""
        self.reading.claims_changed()  # the broadcaster's nodes' claims count on their own (reading.py)
        if self.config.role is Role.SOURCE:
            self.choker.rechoke(now)
        self.choker.after_change(now)

    def wants_peers(self) -> bool:
        """Fewer peers than the target: the owner should look for candidates to dial on every tick."""
        return len(self.sessions) < min(self.config.target_peers, self.config.max_peers)

    def _advance_sweeper(self, now: float) -> None:
        sweeper = self._sweeper
        if sweeper is None or self.config.role is Role.SOURCE:
            return
        for _ in range(MAX_WINDOW_PIECES):
            if self.next_piece(sweeper, now) is None:
                break

    def _check_backlog(self, now: float) -> None:
        for session in liveness.stalled(self.sessions.values(), now, self.config):
            self.ban(session, ProtocolError(ErrorCode.TOO_SLOW, "peer stopped reading"), now)

    def _make_room(self, now: float, newcomer: PeerSession | None = None) -> bool:
        """Full: drop the peer idle longest (liveness.replaceable) for a newcomer; False when none may go.

        A peer we dialled at an address we were told to use (our source, ``--download-from``) always gets a place:
        else peers that filled ours first (the moment we started, or while our source restarted) would keep us
        from it, and with no pieces flowing nobody would ever be replaced."""
        if self._closed:
            return False
        pinned = {a for a, c in self.dialer.candidates.items() if c.pinned}
        victim = liveness.replaceable(self.sessions, now, self.edge, pinned)
        if victim is not None:
            self.stats.dropped_useless += 1
            idle = now - victim.last_useful
            self._drop(victim, GoodbyeReason.TOO_MANY_PEERS, now, f"made room for a newcomer (idle {idle:.0f} s)")
            return True
        if newcomer is not None and newcomer.outbound and newcomer.address in pinned:
            victim = liveness.displaced_by_upstream(self.sessions, pinned)
            if victim is not None:
                self._drop(victim, GoodbyeReason.TOO_MANY_PEERS, now, "made room for an address we were told to use")
                return True
        victim = self.rotation.victim(self.sessions, now, pinned)  # a start node hands off a peer it started
        if victim is None:
            return False
        self._drop(victim, GoodbyeReason.TOO_MANY_PEERS, now, f"handed off for a newcomer ({victim.up.total} B served)")
        return True

    def _drop_useless(self, now: float) -> None:
        pinned = {a for a, c in self.dialer.candidates.items() if c.pinned}
        for session in liveness.useless(self.sessions, now, self.config, self.edge, pinned):
            self.stats.dropped_useless += 1
            why = f"useless for {self.config.useless_timeout:.0f} s"
            self._drop(session, GoodbyeReason.TIMEOUT, now, why)

    def _score(self, session: PeerSession, now: float) -> tuple[bool, float]:
        role = self.config.role
        if self.rotation.enabled:  # a start node: newcomers first (rotation.py)
            return self.rotation.score(session, now)
        if role is Role.SOURCE:  # seeders first (they fan out), then whoever we exchange most with
            return (session.is_seeder, session.down.rate(now) + session.up.rate(now))
        if role is Role.SUPPORT:
            # Viewers give a support node nothing, so reciprocity would rank them at random and choke
            # at every rechoke the viewers that rely on it; keep serving those it serves most.
            return (False, session.up.rate(now))
        return (False, session.down.rate(now))  # a viewer reciprocates the peers that give it most

    # -- helpers -----------------------------------------------------------------------------------------
    def _pex_list(self, session: PeerSession) -> Pex:
        return Pex(announce.pex_list(self.sessions, exclude=session, is_source=self.config.role is Role.SOURCE,
                                     rng=self._rng))  # fmt: skip

    @property
    def flush_soon(self) -> Callable[[], None] | None:
        """Set by the owner to defer writes: called once when something is queued (outbox.py)."""
        return self._outbox.flush_soon

    @flush_soon.setter
    def flush_soon(self, callback: Callable[[], None] | None) -> None:
        self._outbox.flush_soon = callback

    def flush(self) -> None:
        """Write out what was queued since the last flush (the owner calls it after ``flush_soon``)."""
        self._outbox.flush()

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
        self.picker.pending.clear()

    def stats_snapshot(self, now: float) -> dict[str, object]:
        """Counters for status pages and benchmarks (bytes; rates in bytes/s): swarm/status.py."""
        return status.snapshot(self, now)
