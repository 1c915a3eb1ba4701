"""Requests: which piece to ask whom for, and what to do when it does not come. Sans-IO.

How this works. Every turn the wanted pieces (just ahead of each cursor, earliest first) that nobody is fetching
yet are asked of a holder: a trusted one if any, the one with the fewest requests outstanding, then the fastest.
The broadcaster's nodes are spared when someone else has the piece (``seeder_grace``, see core.py), and also when
the only other holders turned a request of ours away a moment ago (REJECT: over their upload limit): they are
asked again after ``reject_backoff``, and the broadcaster's nodes only once the piece has been known for
``viewer_patience`` (it is due then).

Withholding. A peer may announce pieces and never deliver them, to stall the players that wait for them. Three
signals catch it, none of them a timing assertion about honest peers:

- order: a peer answers REQUESTs in the order it got them (PIECE or REJECT, upload.py). An answer to a later
  request while an earlier one is unanswered means the earlier piece was withheld;
- urgency: a piece a reader is waiting for, asked of one peer ``urgent_after`` ago (well before ``skip_after``), is
  asked of another holder if there is one;
- time: a request unanswered after ``request_timeout`` (shorter for a distrusted peer).

Each costs the peer a strike; a delivered piece takes a quarter of one back. A peer with half a strike or more is
distrusted: it is asked only when no trusted peer has the piece, and for a piece past the agreed edge only
``DISTRUST_DELAY`` after the piece was first announced; its requests are moved as soon as a trusted peer announces
the same piece; its claims do not count toward the live edge while a trusted peer's do (reading.py). Strikes wear
off with delivered pieces and with time (``STRIKE_HALF_LIFE``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from swarmcast.swarm.config import SwarmConfig
from swarmcast.swarm.peer import PeerSession
from swarmcast.wire.messages import Cancel, Message, Request

STRIKE_HALF_LIFE = 30.0  # seconds
MIN_REQUEST_TIMEOUT = 0.5  # seconds, for the most distrusted peers
MAX_SPARED = 4096  # fresh pieces we remember a grace and a first announcement for
DISTRUST_DELAY = 0.5  # seconds a piece only distrusted peers announced waits for a trusted holder
_EPSILON = 1e-6  # seconds: a wait computed as a sum ends this much early for ``quiet`` (float rounding)


class Picker:
    def __init__(
        self,
        config: SwarmConfig,
        sessions: dict[int, PeerSession],
        *,
        send: Callable[[PeerSession, Message, float], None],
        trust_changed: Callable[[], None],
        now: float,
    ) -> None:
        self._trust_changed = trust_changed
        self._sessions = sessions
        self._max_requests = config.max_requests_per_peer
        self._timeout = config.request_timeout
        self._urgent_after = config.urgent_after
        self._patience = config.viewer_patience
        self._send = send
        self.pending: dict[int, int] = {}  # piece index -> session key it was requested from
        # Index -> when a piece only the broadcaster's nodes hold may be fetched from them (see seeder_grace).
        self.spare_until: dict[int, float] = {}
        self.first_seen: dict[int, float] = {}  # index -> when a peer first announced it
        self._decayed_at = now
        self.withheld = 0  # requests given up on: for status and tests
        # Pieces given up on once (index -> when), asked next of a peer with a record; bounded like first_seen.
        self.retried: dict[int, float] = {}
        self._quiet: tuple[object, ...] | None = None  # see quiet(): what the last pass that asked nothing read
        self._quiet_until = 0.0
        self._candidates: set[int] = set()

    # -- asking ------------------------------------------------------------------------------------------
    def quiet(self, key: tuple[object, ...], now: float) -> bool:
        """True when a pass now would ask for nothing: the last one asked for nothing, ``key`` (the caller's
        summary of what the pass reads besides the peers: wanted ranges, agreed edge, store size, config) is the
        same, nothing the pass reads of the peers changed since (``changed``), and none of its waits has ended."""
        return self._quiet is not None and now < self._quiet_until and self._quiet == (key, len(self.pending))

    def changed(self) -> None:
        """Something a pass reads changed (a peer's pieces, choke, trust or status, the store): the next one runs.

        Whoever changes a session's ``have``, ``peer_choking``, ``may_download``, ``busy_until`` or status outside
        the picker calls this (core.py does for every message but those listed in its ``QUIET_MESSAGES``)."""
        self._quiet = None

    def heard(self, session: PeerSession, index: int) -> None:
        """``session`` announces ``index`` (before it is noted): only news that can lead to a request wakes the
        next pass up: a piece the last pass looked for a holder of, or the peer's first piece."""
        if self._quiet is not None and (not session.have or index in self._candidates):
            self._quiet = None

    def fill(
        self,
        now: float,
        wanted: Iterable[int],
        have_piece: Callable[[int], bool],
        spared: Callable[[PeerSession], bool],
        agreed: int | None,
        key: tuple[object, ...] = (),
    ) -> None:
        # Most calls find every wanted piece held or on order already: the peers we may ask are listed only once
        # a piece needs one (the list is the same either way: nothing changes before the first request).
        sources: list[PeerSession] | None = None
        could_fetch_first = False
        pending = self.pending
        max_requests = self._max_requests
        # What a pass that asks for nothing depends on, so the next ones can be skipped (``quiet``): the pieces it
        # looked for a holder of, and the earliest moment one of its waits (a REJECT backoff, the patience, the
        # distrust delay, a grace) ends. ``_EPSILON`` keeps that moment on the safe side of float rounding.
        candidates: set[int] = set()
        due = float("inf")
        asked = False
        for index in wanted:
            if index in pending or have_piece(index):
                continue
            candidates.add(index)
            if sources is None:
                sources = [s for s in self._sessions.values() if s.may_download and not s.peer_choking and s.have]
                if not sources:
                    break
                could_fetch_first = any(not spared(s) and s.trusted for s in sources)
            holders = [s for s in sources if index in s.have and len(s.requests_out) < max_requests]
            if not holders:
                continue
            # Peers that turned a request of ours away in the last second (over their upload limit) are not asked
            # again until then: asking each capped holder in turn cost a REQUEST and a REJECT per piece per peer.
            ready = [s for s in holders if s.busy_until <= now]
            if len(ready) < len(holders):
                due = min(due, *[s.busy_until for s in holders if s.busy_until > now])
            if self._patience > 0 and not any(not spared(s) for s in ready) and any(not spared(s) for s in holders):
                seen = self.first_seen.setdefault(index, now)
                if now - seen < self._patience:
                    # Only viewers that turned us away a moment ago hold it besides the broadcaster's nodes: one of
                    # them will have upload again soon, and the piece is not due yet; the broadcaster's upload is the
                    # bill.
                    due = min(due, seen + self._patience - _EPSILON)
                    continue
            holders = ready
            if not holders:
                continue
            trusted = [s for s in holders if s.trusted]
            if index in self.retried:
                # Withheld once already: ask a peer with a record (the broadcaster's nodes first), even one we would
                # otherwise spare, rather than the next fresh peer that claims it (five Sybils that announce every
                # piece first would each hold it for urgent_after, and the reader would skip).
                proven = [s for s in trusted if s.is_seeder or s.down.total > 0]
                if proven:
                    best = min(proven, key=lambda s: (not s.is_seeder, len(s.requests_out)))
                    self._ask(best, index, now)
                    asked = True
                    continue
            if trusted:
                holders = trusted
            elif agreed is None or index > agreed:
                seen = self.first_seen.setdefault(index, now)
                if now - seen < DISTRUST_DELAY:
                    # Only peers that withheld before claim it, and no majority says it exists yet: give a trusted
                    # peer a moment to announce it. (Never longer: a lone source with a strike must still be asked.)
                    due = min(due, seen + DISTRUST_DELAY - _EPSILON)
                    continue
            # Spare the broadcaster's nodes when someone else has the piece: their upload is the broadcaster's bill.
            others = [s for s in holders if not spared(s)]
            if others:
                holders = others
            elif could_fetch_first:
                spare_until = self.spare_until.get(index, 0.0)
                if now < spare_until:
                    due = min(due, spare_until)
                    continue  # fresh, held only by the broadcaster: another peer may fetch it first and pass it on
            best = min(holders, key=lambda s: (len(s.requests_out), -s.down.rate(now)))
            self._ask(best, index, now)
            asked = True
        if asked:
            self._quiet = None
        else:
            self._quiet = (key, len(self.pending))
            self._quiet_until = due
            self._candidates = candidates

    def _ask(self, session: PeerSession, index: int, now: float) -> None:
        session.requests_out[index] = now
        self.pending[index] = session.key
        self._send(session, Request(index), now)

    def note_have(self, session: PeerSession, index: int, now: float, grace: Callable[[int], float]) -> None:
        if index not in self.spare_until:
            # First news of a fresh piece: our moment to let others take it from the broadcaster first.
            if len(self.spare_until) >= MAX_SPARED:
                self._quiet = None
                _forget_older_half(self.spare_until)
                _forget_older_half(self.first_seen)
            self.spare_until[index] = now + grace(index)
            self.first_seen[index] = now
        key = self.pending.get(index)
        if key is None or key == session.key or not session.trusted:
            return
        holder = self._sessions.get(key)
        if holder is not None and not holder.trusted:
            # A distrusted peer has it on order and a trusted one now has it too: ask the trusted one.
            self._give_up(holder, index, now, strike=0.0)

    def stored(self, index: int) -> None:
        self._quiet = None
        self.spare_until.pop(index, None)
        self.first_seen.pop(index, None)
        self.retried.pop(index, None)

    # -- answers -----------------------------------------------------------------------------------------
    def answered(self, session: PeerSession, index: int, now: float, *, delivered: bool) -> bool:
        """A PIECE (``delivered``) or REJECT for ``index`` came from ``session``; False when we had not asked."""
        if index not in session.requests_out:
            return False
        # Answers come in request order (requests_out keeps it): whatever we asked before this and is still
        # unanswered was withheld.
        skipped = []
        for earlier in session.requests_out:
            if earlier == index:
                break
            skipped.append(earlier)
        del session.requests_out[index]
        self._quiet = None
        if self.pending.get(index) == session.key:
            del self.pending[index]
        if delivered:
            self._set_strikes(session, max(0.0, session.strikes - 0.25))
        for earlier in skipped:
            self._give_up(session, earlier, now, strike=1.0)
        return True

    def choked(self, session: PeerSession) -> None:
        self._quiet = None
        for index in session.requests_out:
            self.pending.pop(index, None)
        session.requests_out.clear()

    def forget(self, session: PeerSession) -> None:
        self._quiet = None  # a peer left (or may no longer be downloaded from)
        for index in list(session.requests_out):
            if self.pending.get(index) == session.key:
                del self.pending[index]

    # -- giving up ---------------------------------------------------------------------------------------
    def expire(self, now: float, waiting: set[int]) -> None:
        """Give up on requests that took too long, and move those readers wait for when another holder exists."""
        if now - self._decayed_at >= 1.0:
            factor = 0.5 ** ((now - self._decayed_at) / STRIKE_HALF_LIFE)
            self._decayed_at = now
            for session in self._sessions.values():
                if session.strikes:
                    self._set_strikes(session, session.strikes * factor if session.strikes > 0.01 else 0.0)
        for session in list(self._sessions.values()):
            if not session.requests_out:
                continue
            timeout = self._timeout
            if not session.trusted:
                timeout = max(MIN_REQUEST_TIMEOUT, timeout / (1 + session.strikes))
            for index, sent in list(session.requests_out.items()):
                age = now - sent
                if age >= timeout:
                    # It did not come in time: assume the peer lost it, so the next request goes elsewhere.
                    self._give_up(session, index, now, strike=1.0)
                elif age >= self._urgent_after and index in waiting and self._another_holder(session, index, now):
                    self._give_up(session, index, now, strike=1.0)

    def _set_strikes(self, session: PeerSession, value: float) -> None:
        trusted = session.trusted
        session.strikes = value
        if session.trusted != trusted:
            self._quiet = None
            self._trust_changed()  # its claims join or leave the live-edge vote

    def _another_holder(self, session: PeerSession, index: int, now: float) -> bool:
        return any(
            s is not session and s.may_download and not s.peer_choking and index in s.have and s.busy_until <= now
            and len(s.requests_out) < self._max_requests
            for s in self._sessions.values()
        )  # fmt: skip

    def _give_up(self, session: PeerSession, index: int, now: float, *, strike: float) -> None:
        if session.requests_out.pop(index, None) is None:
            return
        self._quiet = None
        if self.pending.get(index) == session.key:
            del self.pending[index]
        session.have.discard(index)
        session.random_access.discard(index)
        self._set_strikes(session, session.strikes + strike)
        if strike:
            self.withheld += 1
            if len(self.retried) >= MAX_SPARED:
                _forget_older_half(self.retried)
            self.retried.setdefault(index, now)
        self._send(session, Cancel(index), now)


def support_grace(own_id: bytes, fellows: list[bytes], index: int, seeder_grace: float) -> float:
    """How long a support node lets a fresh piece wait before asking the source for it.

    Support nodes split the stream: each piece belongs to one of the support nodes connected to each other (by
    index, over their sorted peer ids), which fetches it from the source at once; the others wait twice the grace
    for it to arrive through their fellow before asking the source themselves. (Viewers draw their grace at
    random, so the first few to ask take a fresh piece from a support node and the rest from them.)"""
    ids = sorted([own_id, *fellows])
    return 0.0 if ids[index % len(ids)] == own_id else 2 * seeder_grace


def _forget_older_half(table: dict[int, float]) -> None:
    """Bound a per-index table: pieces announced and never stored (lies, or lost) would otherwise pile up."""
    for index in sorted(table)[: len(table) // 2 + 1]:
        del table[index]
