"""Queueing messages on peers' connections and writing them out in few system calls.

``send`` queues on the connection (and counts bytes); ``flush_dirty`` writes out only the sessions sent to since
the last flush. With ``flush_soon`` set, the owner is asked once to call ``flush`` a little later (the node: after
the current event-loop turn), so the HAVEs for pieces that arrived from several peers in the same turn go out in
one write per peer rather than one each: fewer system calls, the bulk of a viewer's CPU time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from swarmcast.swarm.config import SwarmStats
from swarmcast.swarm.peer import PeerSession
from swarmcast.wire.messages import Message, Piece


class Outbox:
    def __init__(self, stats: SwarmStats) -> None:
        self._stats = stats
        self._dirty: set[PeerSession] = set()  # sessions with queued bytes not yet written to their link
        self.flush_soon: Callable[[], None] | None = None
        self._scheduled = False

    def send(self, session: PeerSession, message: Message, now: float) -> None:
        connection = session.connection
        before = connection.bytes_sent
        connection.send(message, now)
        self._dirty.add(session)
        stats = self._stats
        stats.bytes_sent += connection.bytes_sent - before
        if type(message) is Piece:
            stats.payload_sent += len(message.data)

    def flush_dirty(self) -> None:
        if self.flush_soon is None:
            self.flush()
        elif self._dirty and not self._scheduled:
            self._scheduled = True
            self.flush_soon()

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, set()
        for session in dirty:
            session.flush()

    def flush_all(self, sessions: Iterable[PeerSession]) -> None:
        # Timers queue keep-alives inside the connections themselves, so the periodic tick flushes everyone.
        self._dirty.clear()
        for session in list(sessions):
            session.flush()
