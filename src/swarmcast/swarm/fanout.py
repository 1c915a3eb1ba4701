"""Whom a support node tells of a fresh piece, and when: its upload goes where the viewers' cannot. Sans-IO.

How this works. A viewer asks for a piece only from peers that announced it (HAVE). A support node that announced
every fresh piece to all its viewers at once was asked for it by every viewer whose grace ran out before another
viewer had it: 4-10 copies of the stream came from the support nodes while the viewers had upload to spare
(docs/benchmarks.md, "Scheduling"). So a support node announces a fresh piece at once only to

- the broadcaster's other nodes (they split the stream from the source, picker.support_grace), and
- ``front`` viewers for a piece it took from the source (its own share), none for one it took from a fellow
  support node or a viewer (someone else already put that piece into the viewers' mesh);

and to every other viewer only ``delay`` seconds later, and then only to those that have not told it they hold the
piece meanwhile (their HAVE): the support node serves what the viewers could not pass on in time, not what nobody
had been asked for yet.

Front viewers are those that upload (they unchoke us: a viewer with no upload slots never does), scored by how many
of our other viewers announced the piece back to us by the time the delay ran out (the piece's spread through the
viewer's neighbourhood: a viewer with spare upload passes it on, a capped one does not). Untried viewers are tried
first, and one in ``EXPLORE`` choices is random, so a viewer whose upload grows (or one that joined) is found.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from swarmcast.swarm.peer import PeerSession

MAX_DEFERRED = 512  # fresh pieces waiting for their late announcement (2.5 pieces/s x delay: a few in practice)
SCORE_WEIGHT = 0.25  # share of the newest spread in a viewer's score (an exponential moving average)
EXPLORE = 5  # one front choice in this many is a random uploader


@dataclass(slots=True)
class Deferred:
    due: float
    index: int
    flags: int
    front: tuple[int, ...]  # session keys told at once (their spread is measured at ``due``)


class Fanout:
    def __init__(self, *, enabled: bool, delay: float, rng: random.Random) -> None:
        self.enabled = enabled and delay > 0
        self._delay = delay
        self._rng = rng
        self._deferred: deque[Deferred] = deque()
        self.scores: dict[int, float] = {}  # session key -> mean spread of the pieces it was a front for
        self.deferred_announced = 0  # late HAVEs sent (status, tests)
        self.spared_announcements = 0  # late HAVEs not needed: the viewer had told us it held the piece

    def now_recipients(
        self, sessions: Iterable[PeerSession], index: int, origin: PeerSession | None, now: float, flags: int,
        front_size: int,
    ) -> list[PeerSession]:  # fmt: skip
        """The peers to send HAVE(index) now; the rest are remembered and told at ``now + delay`` if still needed."""
        candidates = [s for s in sessions if s is not origin and index not in s.have and not s.is_source]
        if not self.enabled:
            return candidates
        now_list = [s for s in candidates if s.is_seeder]
        viewers = [s for s in candidates if not s.is_seeder]
        front = self._choose_front(viewers, front_size)
        now_list += front
        if viewers and len(self._deferred) < MAX_DEFERRED:
            self._deferred.append(Deferred(now + self._delay, index, flags, tuple(s.key for s in front)))
        elif viewers:
            now_list += [s for s in viewers if s not in front]  # no room to remember: tell them now
        return now_list

    def _choose_front(self, viewers: list[PeerSession], size: int) -> list[PeerSession]:
        uploaders = [s for s in viewers if not s.peer_choking and s.peer_interested and not s.am_choking]
        if size > len(uploaders):  # fewer uploaders than we can serve: the others that we unchoke too
            uploaders += [s for s in viewers if s.peer_interested and not s.am_choking and s not in uploaders]
        if not uploaders or size <= 0:
            return []
        scores = self.scores
        untried = [s for s in uploaders if s.key not in scores]
        chosen: list[PeerSession] = []
        for _ in range(min(size, len(uploaders))):
            pool = [s for s in uploaders if s not in chosen]
            if untried:
                pick = untried.pop(self._rng.randrange(len(untried)))
            elif self._rng.randrange(EXPLORE) == 0:
                pick = self._rng.choice(pool)
            else:
                pick = max(pool, key=lambda s: scores.get(s.key, 0.0))
            chosen.append(pick)
        return chosen

    def due(
        self, now: float, sessions: dict[int, PeerSession], stored: Callable[[int], bool]
    ) -> list[tuple[int, int, list[PeerSession]]]:
        """Late announcements whose time came: (index, flags, viewers still to tell). Scores the fronts on the way."""
        out = []
        deferred = self._deferred
        while deferred and deferred[0].due <= now:
            entry = deferred.popleft()
            index = entry.index
            viewers = [s for s in sessions.values() if not s.is_seeder and not s.is_source]
            told = set(entry.front)
            holders = sum(1 for s in viewers if s.key not in told and index in s.have)
            if entry.front:
                credit = holders / len(entry.front)
                for key in entry.front:
                    if key in sessions:
                        old = self.scores.get(key)
                        self.scores[key] = credit if old is None else old + SCORE_WEIGHT * (credit - old)
            rest = [s for s in viewers if s.key not in told and index not in s.have]
            self.spared_announcements += holders
            self.deferred_announced += len(rest)
            if rest and stored(index):
                out.append((index, entry.flags, rest))
        return out

    def forget(self, session: PeerSession) -> None:
        self.scores.pop(session.key, None)

    def set_enabled(self, enabled: bool) -> None:
        """A hot standby that takes over as the source announces everything at once (and late HAVEs still due are
        dropped: every peer is told of every later piece at once, and of the earlier ones by their holders)."""
        self.enabled = enabled and self._delay > 0
        if not self.enabled:
            self._deferred.clear()
