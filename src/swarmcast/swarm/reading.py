"""Readers' cursors and the live edge they follow, sans-IO.

How this works. Each player (engine) or the keep-up sweeper (support node) owns a ``Cursor``: the next index it
needs. ``next_piece`` hands out stored pieces in order; a cursor that waits longer than ``skip_after`` for a piece
while later ones exist skips to the next random-access piece, so one lost piece never freezes a player; a reader
that fell out of the window or lags more than ``max_lag_pieces`` jumps to the newest random-access piece.

Where a reader starts and where it skips to come from the live edge a majority of trusted peers agree on
(edge.py), and from our own verified pieces, never from one peer's claim: a start point past the agreed edge is
chosen again as soon as the other peers' claims come in, and a start point that does not come is chosen again
after ``skip_after``.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass

from swarmcast.swarm.config import SwarmConfig
from swarmcast.swarm.edge import EDGE_MARGIN, LiveEdge
from swarmcast.swarm.peer import PeerSession
from swarmcast.swarm.store import PieceStore, StoredPiece

log = logging.getLogger("swarmcast.swarm")


@dataclass
class Cursor:
    """A reader's place in the stream: ``position`` is the next index it needs (None until it has started)."""

    position: int | None = None
    waiting_since: float | None = None
    skipped: int = 0
    started: bool = False  # has delivered a piece; until then a start point that does not come is re-chosen




class Reading:
    def __init__(
        self, config: SwarmConfig, store: PieceStore, sessions: dict[int, PeerSession], edge: LiveEdge
    ) -> None:
        self._store = store
        self._sessions = sessions
        self._edge = edge
        self._skip_after = config.skip_after
        self._max_lag = config.max_lag_pieces
        self.skipped = 0  # pieces skipped by all readers
        self._view: tuple[int | None, int | None] | None = None
        # The trusted peers' newest claims, sorted, and the broadcaster's nodes' newest: kept between changes of the
        # claims so that one peer's newer claim (a HAVE, many a second per peer) is one insertion, not a pass over
        # every session. Valid while ``_claims_at == changes``.
        self.changes = 0  # claims_changed() calls so far
        self._claims: list[int] = []
        self._vouched: int | None = None
        self._claims_at = -1

    def next_piece(self, cursor: Cursor, now: float) -> StoredPiece | None:
        """The next piece for this reader, in order, or None when it must wait; skips holes that time out."""
        if not cursor.started:
            self.choose_start(cursor)
        if cursor.position is None:
            return None
        oldest = self._store.oldest
        if oldest is not None and cursor.position < oldest and cursor.position not in self._store:
            # The reader fell out of the window (it read too slowly): rejoin at the newest random-access piece.
            self.skip(cursor, self.latest_random_access(), now)
            return None
        if cursor.started and self.too_far_behind(cursor.position):
            # Pieces still trickle in, but slower than the stream: jump to live rather than lag for ever.
            self.skip(cursor, self.latest_random_access(), now)
        piece = self._store.get(cursor.position)
        if piece is not None:
            cursor.position += 1
            cursor.waiting_since = None
            cursor.started = True
            return piece
        if not cursor.started:
            # The start point was announced but has not come (a peer lied, or left): choose again.
            if cursor.waiting_since is None:
                cursor.waiting_since = now
            elif now - cursor.waiting_since >= self._skip_after:
                cursor.position = None
                cursor.waiting_since = None
            return None
        newest = self.newest_known()
        if newest is None or newest <= cursor.position:
            cursor.waiting_since = None
            return None
        if cursor.waiting_since is None:
            cursor.waiting_since = now
        elif now - cursor.waiting_since >= self._skip_after:
            self.skip(cursor, self.next_random_access_after(cursor.position), now)
        return None

    def too_far_behind(self, position: int) -> bool:
        newest = self.newest_known()
        return newest is not None and newest - position > self._max_lag

    def skip(self, cursor: Cursor, target: int | None, now: float) -> None:
        if target is None or cursor.position is None or target <= cursor.position:
            return
        log.info("skipping pieces %d..%d (not received in time)", cursor.position, target - 1)
        cursor.skipped += target - cursor.position
        self.skipped += target - cursor.position
        cursor.position = target
        cursor.waiting_since = now

    # -- the live edge (edge.py): one peer's claims never move a cursor ---------------------------------------
    def claims_changed(self) -> None:
        """A peer's newest claim, its trust, the set of peers or our newest verified piece changed."""
        self._view = None
        self.changes += 1

    def verified_changed(self) -> None:
        """Our newest verified piece changed (the peers' claims did not)."""
        self._view = None

    def raised(self, session: PeerSession, before: int | None, changes: int) -> None:
        """``session``'s newest claim rose from ``before``, and that was the one ``claims_changed`` since
        ``changes``: the kept claims are updated in place instead of counted again."""
        if self._claims_at != changes or self.changes != changes + 1 or not session.may_download:
            return
        claim = session.newest_have
        assert claim is not None
        claims = self._claims
        if session.trusted:
            if before is not None:
                at = bisect.bisect_left(claims, before)
                if at == len(claims) or claims[at] != before:
                    return  # not counted as we thought: count again
                del claims[at]
            bisect.insort(claims, claim)
        if session.is_seeder and (self._vouched is None or claim > self._vouched):
            self._vouched = claim
        self._claims_at = self.changes

    def voters(self) -> list[PeerSession]:
        """The peers whose claims count: the trusted ones, or everyone we may download from if none is."""
        voters = [s for s in self._sessions.values() if s.may_download and s.trusted and s.newest_have is not None]
        return voters or [s for s in self._sessions.values() if s.may_download and s.newest_have is not None]

    def _edge_view(self) -> tuple[int | None, int | None]:
        """(agreed edge, newest worth asking for), computed once per change of the claims: asked on every event."""
        view = self._view
        if view is None:
            if self._claims_at != self.changes:
                self._count_claims()
            claims = self._claims
            newest_claim: int | None
            if claims:
                agreed = self._edge.agreed_sorted(claims)
                newest_claim = claims[-1]
            else:  # nobody trusted (a lone source that was slow once): discounting leaves no one to follow
                fallback = [s.newest_have for s in self.voters() if s.newest_have is not None]
                agreed = self._edge.agreed(fallback)
                newest_claim = max(fallback) if fallback else None
            vouched = self._vouched
            if vouched is not None and (agreed is None or vouched > agreed):
                agreed = vouched
            newest = None
            if agreed is not None:
                newest = agreed if newest_claim is None else max(agreed, min(newest_claim, agreed + EDGE_MARGIN))
            view = self._view = (agreed, newest)
        return view

    def _count_claims(self) -> None:
        claims: list[int] = []
        vouched: int | None = None
        for s in self._sessions.values():
            claim = s.newest_have
            if claim is None or not s.may_download:
                continue
            if s.trusted:
                claims.append(claim)
            # The broadcaster's own nodes (source and support nodes, proven by credential) are believed on their own
            # when they are ahead: a source restarted with its numbering a block further on is ahead of every viewer,
            # and the median of the viewers' claims would hold the edge behind it for ever. (Not when they are
            # behind: a support node cut off from the source must not hold back viewers who can get ahead elsewhere.)
            if s.is_seeder and (vouched is None or claim > vouched):
                vouched = claim
        claims.sort()
        self._claims = claims
        self._vouched = vouched
        self._claims_at = self.changes

    def edge_view(self) -> tuple[int | None, int | None]:
        """(``agreed_edge()``, ``newest_known()``) in one call."""
        return self._view or self._edge_view()

    def agreed_edge(self) -> int | None:
        return self._edge_view()[0]

    def newest_known(self) -> int | None:
        """The newest piece worth asking for: a little past what a majority of peers agree on, never past a claim."""
        return self._edge_view()[1]

    def choose_start(self, cursor: Cursor) -> None:
        """Where a reader that has not started yet begins: re-chosen while the peers' majority says it lies past
        the live edge (the first WINDOW to arrive may be a liar's, before the honest peers' come in)."""
        if cursor.position is not None:
            agreed = self.agreed_edge()
            if agreed is None or cursor.position <= agreed:
                return
        cursor.position = self.latest_random_access()
        cursor.waiting_since = None

    def latest_random_access(self) -> int | None:
        agreed = self.agreed_edge()
        known = self._store.random_access_indices()
        if agreed is not None:
            for session in self.voters():
                claimed = [i for i in session.random_access if i <= agreed]
                if claimed:
                    known.append(max(claimed))
        return max(known) if known else None

    def next_random_access_after(self, index: int) -> int | None:
        best: int | None = None
        for candidate in self._store.random_access_indices():
            if candidate > index:
                best = candidate
                break
        agreed = self.agreed_edge()
        if agreed is None:
            return best
        for session in self.voters():
            later = [i for i in session.random_access if index < i <= agreed]
            if later and (best is None or min(later) < best):
                best = min(later)
        return best

