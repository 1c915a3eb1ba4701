"""Serving REQUESTs, sans-IO: what we give a peer is bounded in pieces and in bytes at the time we queue it.

How this works. A REQUEST is answered at once, in order, with the PIECE or a REJECT (never silently: the
requester's withholding check relies on the order, see picker.py). Before a piece is queued:

- the index must lie in our window (past our newest piece: a protocol error; just behind the oldest: REJECT);
- a piece already queued for this peer and not yet out of our buffers is not queued again (REJECT): ten thousand
  requests for one piece in one read cost thirteen bytes each, not a copy of the piece each;
- at most ``max_serving`` pieces may be in our buffers for one peer (honest requesters keep 16 outstanding);
- what we hold for the peer (the connection's queue plus the transport's buffer, counted when we queue, not when
  the socket is next checked) plus this piece must stay within ``send_buffer_limit``;
- the upload limit's token bucket must allow it.

So one peer costs at most ``send_buffer_limit`` plus one piece of memory, whatever it sends; the REQUEST budget
(budget.py) drops a peer that keeps asking far beyond that.
"""

from __future__ import annotations

from swarmcast.swarm.config import SwarmConfig
from swarmcast.swarm.peer import PeerSession
from swarmcast.swarm.store import PieceStore, StoredPiece
from swarmcast.wire.errors import ErrorCode, ProtocolError
from swarmcast.wire.messages import MAX_WINDOW_PIECES


class Uploader:
    def __init__(self, config: SwarmConfig, store: PieceStore, now: float) -> None:
        self._store = store
        self._limit = limit = config.upload_limit
        self._send_buffer_limit = config.send_buffer_limit
        self._max_serving = config.max_serving
        self._tokens = float(limit)
        self._tokens_at = now
        self.rejected_over_limit = 0
        self.rejected_duplicate = 0
        self.rejected_queue_full = 0

    def choose(self, session: PeerSession, index: int, now: float) -> StoredPiece | None:
        """The piece to send for this request, or None for a REJECT; raises for a request we never invited."""
        store = self._store
        newest, oldest = store.newest, store.oldest
        # A request for a piece we never announced is a protocol violation; one for a piece that has just left
        # our window is an honest race and gets a REJECT.
        if newest is None or index > newest or (oldest is not None and index < oldest - MAX_WINDOW_PIECES):
            raise ProtocolError(ErrorCode.REQUEST_OUTSIDE_WINDOW, f"request for piece {index} outside our window")
        if session.am_choking or index not in store:
            return None
        if session.pieces_in_flight() >= self._max_serving:
            self.rejected_queue_full += 1
            return None
        if any(queued == index for _end, queued in session.serving):
            self.rejected_duplicate += 1
            return None
        piece = store.get(index)
        if piece is None:
            return None
        if session.queued_bytes() + len(piece.data) > self._send_buffer_limit:
            self.rejected_queue_full += 1
            return None
        if not self._take_tokens(len(piece.data), now):
            return None
        return piece

    def queued(self, session: PeerSession, index: int) -> None:
        """The piece for ``index`` was just queued on the session's connection."""
        session.serving.append((session.connection.bytes_sent, index))

    def set_limit(self, limit: int, now: float) -> None:
        """A new ``upload_limit`` (bytes/s; 0 = none), in force for the next request; the bucket starts full."""
        if limit != self._limit:
            self._limit, self._tokens, self._tokens_at = limit, float(limit), now

    def _take_tokens(self, size: int, now: float) -> bool:
        """Token bucket for ``upload_limit``: up to one second's worth may be sent in a burst."""
        limit = self._limit
        if limit <= 0:
            return True
        self._tokens = min(float(limit), self._tokens + (now - self._tokens_at) * limit)
        self._tokens_at = now
        if self._tokens <= 0:
            self.rejected_over_limit += 1
            return False
        self._tokens -= size  # may go below zero: a piece is sent whole, the debt is paid back first
        return True
