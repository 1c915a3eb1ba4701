"""The live edge: which piece indices a peer may name, and where the stream is now.

How this works. Peers' claims (HAVE, WINDOW) are only claims; signed pieces are facts. Two questions:

- *Could an honest peer hold piece i?* Only if i is at most our newest verified piece (its signature proves the
  source cut it), plus what the source could have cut since (seconds elapsed x ``MAX_PIECE_RATE``), plus
  ``INDEX_SLACK`` for the jumps honest numbering makes: a restarted source continues at its reserved block's end
  (node/metadata.py, blocks of 1,000), a hot standby continues at last + 1 plus the time it was silent. A claim
  beyond that is a protocol error (IMPLAUSIBLE_INDEX): the peer is banned and its claim forgotten. Before we hold
  any verified piece, only MAX_INDEX bounds a claim; claims already held are checked when the first piece arrives.
- *Where is the live edge?* What a majority of peers agree on: the lower median of each trusted peer's newest
  claim (one vote per peer), and never below our own newest verified piece. Start points and skip targets are
  chosen at or below it, so one liar cannot move a cursor: it would need half the peers. Requests may go up to
  ``EDGE_MARGIN`` past it, because the peers that got a piece first are, by definition, ahead of the median.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from swarmcast.swarm.peer import PeerSession
from swarmcast.wire.errors import ErrorCode, ProtocolError

MAX_PIECE_RATE = 50.0  # pieces/s a source may cut: 5/s at 0.2 s pieces, more with very frequent keyframes
INDEX_SLACK = 4096  # > 2 x the restart reservation block (node/metadata.py RESERVE_BLOCK = 1000)
EDGE_MARGIN = 16  # pieces past the agreed edge worth requesting from the peers that have them first


class LiveEdge:
    def __init__(self) -> None:
        self.verified: int | None = None  # newest piece we verified (or cut, at the source)
        self.verified_at = 0.0

    def note_verified(self, index: int, now: float) -> bool:
        """A verified piece is in; True when it is the first one (claims held so far need checking)."""
        first = self.verified is None
        if self.verified is None or index > self.verified:
            self.verified = index
            self.verified_at = now
        return first

    def limit(self, now: float) -> int | None:
        """The highest index an honest peer could hold now; None before we verified anything."""
        if self.verified is None:
            return None
        return self.verified + INDEX_SLACK + int(max(0.0, now - self.verified_at) * MAX_PIECE_RATE)

    def check(self, index: int, now: float) -> None:
        limit = self.limit(now)
        if limit is not None and index > limit:
            raise ProtocolError(
                ErrorCode.IMPLAUSIBLE_INDEX, f"piece {index} is past any live edge (newest verified {self.verified})"
            )

    def implausible(self, sessions: Sequence[PeerSession], now: float) -> list[PeerSession]:
        """Peers whose newest claim is past ``limit`` (claims made before we had anything to check them against)."""
        limit = self.limit(now)
        if limit is None:
            return []
        return [s for s in sessions if s.newest_have is not None and s.newest_have > limit]

    def agreed(self, claims: Iterable[int]) -> int | None:
        """The edge a majority of peers reached (lower median of their newest claims), at least what we verified."""
        return self.agreed_sorted(sorted(claims))

    def agreed_sorted(self, ordered: Sequence[int]) -> int | None:
        """``agreed`` for claims in ascending order."""
        median = ordered[(len(ordered) - 1) // 2] if ordered else None
        if median is None:
            return self.verified
        if self.verified is None:
            return median
        return max(median, self.verified)
