"""Upload slots: whom we unchoke, sans-IO.

Up to ``upload_slots`` interested peers are unchoked, free slots at once (fast start); every rechoke interval the
peers that gave us most are kept, plus a quarter of the slots as optimistic unchokes. A source serves only seeders
(support nodes) while any is interested, so its upload stays near one copy of the stream. A newcomer gets one of a
few extra slots for ``NEWCOMER_GRACE`` seconds so that it starts at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from swarmcast.swarm.config import Role, SwarmConfig
from swarmcast.swarm.peer import PeerSession
from swarmcast.swarm.upload_to import UploadTargets
from swarmcast.wire.messages import Choke, Message, Unchoke

NEWCOMER_GRACE = 10.0  # seconds a newly joined peer may hold an extra upload slot


class Choker:
    def __init__(
        self,
        config: SwarmConfig,
        sessions: dict[int, PeerSession],
        *,
        score: Callable[[PeerSession, float], tuple[bool, float]],
        send: Callable[[PeerSession, Message, float], None],
        rng: random.Random,
        now: float,
        targets: UploadTargets | None = None,
    ) -> None:
        self._sessions = sessions
        self._targets = targets or UploadTargets()
        self._slots = config.upload_slots
        # Ace Stream's --core-sandbox-max-peers and --core-max-fast-peers set these two (docs/operators.md);
        # unset, each is a quarter of the slots, worked out when used since the slots may change at run time.
        self._optimistic_slots = config.optimistic_slots
        self._newcomer_slots = config.newcomer_slots
        self.rechoke_interval = config.rechoke_interval
        self._optimistic_interval = config.optimistic_interval
        self._is_source = config.role is Role.SOURCE
        self._score = score
        self._send = send
        self._rng = rng
        self.last_rechoke = now
        self._last_optimistic = now
        self._optimistic: set[int] = set()
        self._newcomers: dict[int, float] = {}  # session key -> end of its newcomer grace

    def _share(self, configured: int | None) -> int:
        return max(1, self._slots // 4) if configured is None else configured

    def set_role(self, role: Role) -> None:
        """A hot standby taking over as the source (or following again): whom it may serve changes with it."""
        self._is_source = role is Role.SOURCE

    def set_slots(self, slots: int, now: float) -> None:
        """The operator changed the slot count (/app/update): rechoke at once, then fill what is free."""
        self._slots = slots
        # Optimistic and newcomer slots granted under the old count must not outnumber what the new one allows.
        optimistic = max(1, slots // 4) if slots > 0 else 0
        while len(self._optimistic) > optimistic:
            self._optimistic.pop()
        if slots <= 0:
            self._newcomers.clear()
        self.rechoke(now)
        self.after_change(now)

    def in_use(self) -> int:
        """Upload slots taken: the peers we unchoked."""
        return sum(1 for s in self._sessions.values() if not s.am_choking)

    def forget(self, session: PeerSession) -> None:
        self._optimistic.discard(session.key)
        self._newcomers.pop(session.key, None)

    def eligible(self, session: PeerSession) -> bool:
        """Whom we may upload to. A source with support nodes serves only them: its upload is the broadcaster's bill,
        and the support nodes (and viewers among themselves) fan the stream out. With ``--upload-to``, only the peers
        it names (upload_to.py)."""
        if not self._targets.allows(session.remote_ip):
            return False
        if not self._is_source or session.is_seeder:
            return True
        return not any(s.is_seeder and s.peer_interested for s in self._sessions.values())

    def unchoke_if_free(self, session: PeerSession, now: float) -> None:
        if not session.am_choking or not self.eligible(session) or self._slots <= 0:
            return
        unchoked = sum(1 for s in self._sessions.values() if not s.am_choking)
        if unchoked < self._slots:
            self.set_choke(session, choke=False, now=now)
            return
        # Slots full: a peer that has just joined gets one of a few extra newcomer slots for NEWCOMER_GRACE
        # seconds, so a new viewer starts at once instead of waiting for a rechoke or an optimistic draw;
        # by the time the grace ends it competes like everyone else.
        self._newcomers = {k: t for k, t in self._newcomers.items() if t > now and k in self._sessions}
        if now - session.connected_at < NEWCOMER_GRACE and len(self._newcomers) < self._share(self._newcomer_slots):
            self._newcomers[session.key] = session.connected_at + NEWCOMER_GRACE
            self.set_choke(session, choke=False, now=now)

    def after_change(self, now: float) -> None:
        for session in self._sessions.values():
            if session.peer_interested:
                self.unchoke_if_free(session, now)

    def rechoke(self, now: float) -> None:
        self.last_rechoke = now
        interested = [s for s in self._sessions.values() if s.peer_interested and self.eligible(s)]
        slots = self._slots
        if len(interested) <= slots:
            keep = {s.key for s in interested}
        else:
            # A quarter of the slots (at least one) go round at random, so a newcomer with nothing to give yet, or
            # a viewer that cannot upload, is never starved for long by peers that all reciprocate.
            n_optimistic = min(self._share(self._optimistic_slots), slots) if slots > 0 else 0
            ranked = sorted(interested, key=lambda s: self._score(s, now), reverse=True)
            keep = {s.key for s in ranked[: slots - n_optimistic]}
            rest = [s.key for s in interested if s.key not in keep]
            self._optimistic &= set(rest)
            if now - self._last_optimistic >= self._optimistic_interval:
                self._optimistic = set()
                self._last_optimistic = now
            missing = n_optimistic - len(self._optimistic)
            if missing > 0:
                pool = [k for k in rest if k not in self._optimistic]
                self._optimistic |= set(self._rng.sample(pool, min(missing, len(pool))))
            keep |= self._optimistic
            keep |= {k for k, until in self._newcomers.items() if until > now and k in {s.key for s in interested}}
        for session in self._sessions.values():
            self.set_choke(session, choke=session.key not in keep, now=now)

    def set_choke(self, session: PeerSession, *, choke: bool, now: float) -> None:
        if session.am_choking == choke:
            return
        session.am_choking = choke
        session.unchoked_at = now
        self._send(session, Choke() if choke else Unchoke(), now)
