"""Start-node rotation: whom a full start node lets go so that a newcomer finds a free place. Sans-IO.

How this works. A start node (``swarmcast node startup``) is there for the first seconds of each viewer's stream:
it follows the source like a support node and, when it is full, drops a viewer it no longer matters to instead of
refusing a newcomer. It does so when a newcomer's handshake finds it full, and once a second while it is full (its
housekeeping), so that the next newcomer finds a place at once rather than a refusal and a redial seconds later (an
engine backs off 1, 2, 4, 8 s). ``victim`` chooses, in this order:

1. another of the broadcaster's nodes (a support or start node: it holds a credential), while the source is
   connected: they follow the source and need no start, and support nodes dial every peer a tracker names;
2. among the viewers that may go, the one we served most (it has the deepest buffer). A viewer may go when
   - it had its start (at least ``handoff_bytes`` served to it, about 8 s of a 2 Mbit/s stream by default, or
     connected ``handoff_after`` seconds) and plays on without us: it announced (HAVE) a piece we never served it
     in the last ``FLOW_WINDOW`` seconds, or it asked us for under ``PLAYS_ON_SHARE`` of the pieces we got in that
     time (engines ask the broadcaster's nodes last, so a viewer with other suppliers takes most of its stream
     from them); or
   - whatever we gave it, it asked us for under ``INDEPENDENT_SHARE`` of them: it takes its stream elsewhere
     (typically one that found us through a tracker after its start and holds a place for nothing); or
   - it has been connected ``MAX_STAY`` seconds: time enough to find other peers; without a bound a few addresses
     that keep downloading (or viewers nobody else serves) would hold the places for good.

Other peers named in a PEX are no proof that a viewer plays on: they may have nothing to give (viewers that upload
nothing, or whose uplink is full), and a viewer dropped on that ground stalls. Never the source, nor the addresses
the operator named (--download-from). Between pieces (an outage) or for a peer connected under ``FLOW_WINDOW`` the
request share is not judged (taken as 1: it depends on us).

A peer let go is refused for ``GONE_TTL`` seconds (``refuses``): an engine redials the node it took the transport
file from, and it had its start here; without this the free place would go round among the started viewers.

The start node's upload slots go to viewers still starting first (``score``: under ``handoff_bytes`` served ranks
first, then the one served least).

The swarm calls ``served`` for every piece it queues for a peer, ``stored`` for every piece it stores,
``note_have`` for every HAVE and ``forget`` when a peer leaves. Built without a config (every node that is not a
start node) it records nothing, refuses nobody and never names a victim.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from swarmcast.swarm.peer import Address, PeerSession

DEFAULT_HANDOFF_BYTES = 2 * 1024 * 1024  # served to a peer before it may be handed off (8.4 s at 2 Mbit/s)
DEFAULT_HANDOFF_AFTER = 30.0  # seconds connected after which a peer that plays on without us may go anyway
FLOW_WINDOW = 5.0  # seconds of recent traffic looked at to tell whether a peer plays on without us
PLAYS_ON_SHARE = 0.75  # a started peer asking us for less than this share of the recent pieces gets the rest elsewhere
INDEPENDENT_SHARE = 0.5  # any peer asking us for less than this share takes most of its stream elsewhere
MIN_FLOW_PIECES = 5  # pieces we must have got in FLOW_WINDOW for the share to mean anything (not in an outage)
MAX_TRACKED = 256  # piece indices and times remembered per peer (and of our own arrivals): bounded memory
MAX_STAY = 120.0  # seconds after which any viewer may go, even one that still depends on us
GONE_TTL = 120.0  # seconds a handed-off peer's address is remembered
MAX_GONE = 4096  # handed-off addresses remembered (the oldest forgotten first)


@dataclass(frozen=True)
class RotationConfig:
    handoff_bytes: int = DEFAULT_HANDOFF_BYTES
    handoff_after: float = DEFAULT_HANDOFF_AFTER  # 0 = only ``handoff_bytes`` counts


class _PeerRecord:
    __slots__ = ("have_elsewhere_at", "served_at", "served_indices")

    def __init__(self) -> None:
        self.served_indices: deque[int] = deque(maxlen=MAX_TRACKED)
        self.served_at: deque[float] = deque(maxlen=MAX_TRACKED)
        self.have_elsewhere_at = float("-inf")  # when it last announced a piece we did not serve it


class Rotation:
    def __init__(self, config: RotationConfig | None) -> None:
        self.enabled = config is not None
        self.config = config or RotationConfig()
        self._peers: dict[int, _PeerRecord] = {}
        self._stored_at: deque[float] = deque(maxlen=MAX_TRACKED)
        self._gone: dict[Address, float] = {}  # address handed off -> when (insertion order = age)
        self.handed_off = 0  # peers dropped for a newcomer (for the stats)

    def _record(self, session: PeerSession) -> _PeerRecord:
        record = self._peers.get(session.key)
        if record is None:
            record = self._peers[session.key] = _PeerRecord()
        return record

    # -- what the swarm tells us -------------------------------------------------------------------------
    def served(self, session: PeerSession, index: int, now: float) -> None:
        if not self.enabled:
            return
        record = self._record(session)
        record.served_indices.append(index)
        record.served_at.append(now)

    def stored(self, now: float) -> None:
        if self.enabled:
            self._stored_at.append(now)

    def note_have(self, session: PeerSession, index: int, now: float) -> None:
        if not self.enabled:
            return
        record = self._record(session)
        if index not in record.served_indices:
            record.have_elsewhere_at = now

    def forget(self, session: PeerSession) -> None:
        self._peers.pop(session.key, None)

    # -- decisions ---------------------------------------------------------------------------------------
    def started(self, session: PeerSession, now: float) -> bool:
        """We gave it its start: enough bytes, or (with ``handoff_after``) long enough."""
        config = self.config
        if session.up.total >= config.handoff_bytes:
            return True
        return config.handoff_after > 0 and now - session.connected_at >= config.handoff_after

    def plays_on(self, session: PeerSession, now: float) -> bool:
        """It has its own pieces flowing: it would not stall if we let it go."""
        record = self._peers.get(session.key)
        if record is not None and now - record.have_elsewhere_at <= FLOW_WINDOW:
            return True
        return self._asked_share(session, now) < PLAYS_ON_SHARE

    def independent(self, session: PeerSession, now: float) -> bool:
        """It takes most of its stream elsewhere."""
        return self._asked_share(session, now) < INDEPENDENT_SHARE

    def _asked_share(self, session: PeerSession, now: float) -> float:
        """The share of the pieces we got in the last FLOW_WINDOW that it asked us for; 1 (it depends on us, as far
        as we can tell) in an outage or when it is too new to tell."""
        record = self._peers.get(session.key)
        since = now - FLOW_WINDOW
        ours = sum(1 for t in self._stored_at if t >= since)
        if ours < MIN_FLOW_PIECES or now - session.connected_at < FLOW_WINDOW:
            return 1.0
        asked = 0 if record is None else sum(1 for t in record.served_at if t >= since)
        return asked / ours

    def may_go(self, session: PeerSession, now: float, pinned: set[Address]) -> bool:
        """A viewer that got its start and plays on without us."""
        if session.is_seeder or session.address in pinned:
            return False
        if now - session.connected_at >= MAX_STAY:
            return True
        return (self.started(session, now) and self.plays_on(session, now)) or self.independent(session, now)

    def _was_handed_off(self, address: Address, now: float) -> bool:
        when = self._gone.get(address)
        return when is not None and now - when < GONE_TTL

    def _remember(self, address: Address, now: float) -> None:
        self._gone.pop(address, None)
        self._gone[address] = now
        while len(self._gone) > MAX_GONE or (self._gone and now - next(iter(self._gone.values())) >= GONE_TTL):
            del self._gone[next(iter(self._gone))]

    def refuses(self, session: PeerSession, now: float) -> bool:
        """A peer we handed off lately dials again: it had its start here."""
        return self.enabled and self._was_handed_off(session.address, now)

    def victim(self, sessions: dict[int, PeerSession], now: float, pinned: set[Address]) -> PeerSession | None:
        """The peer to hand off for a newcomer, or None when every peer still needs us."""
        if not self.enabled:
            return None
        victim: PeerSession | None = None
        if any(s.is_source for s in sessions.values()):
            fellows = [s for s in sessions.values() if s.is_seeder and not s.is_source and s.address not in pinned]
            victim = min(fellows, key=lambda s: s.connected_at, default=None)
        if victim is None:
            candidates = [s for s in sessions.values() if self.may_go(s, now, pinned)]
            victim = max(candidates, key=lambda s: s.up.total, default=None)
        if victim is not None:
            self.handed_off += 1
            self._remember(victim.address, now)
        return victim

    def score(self, session: PeerSession, now: float) -> tuple[bool, float]:
        """Upload slots (choking.py ranks by this, highest kept): peers still starting first, least served first."""
        return (not self.started(session, now), -float(session.up.total))
