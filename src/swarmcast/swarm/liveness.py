"""Which peers to let go: those that stopped reading, and those that hold a slot and move nothing. Sans-IO.

A connection's own timers (wire/connection.py) only see bytes: a peer that sends keep-alives and nothing else is
alive for ever there. Here a peer is judged by pieces: one that moves no piece either way for ``useless_timeout``
while it holds a slot is dropped (a plain goodbye, not a ban: it broke no rule). A slot is an upload slot we gave
it (unchoked: it could ask and does not), or, for a viewer engine whose peer set is full, a connection that could
go to a peer that trades. Only while pieces flow (one came in or was cut within the timeout): in an outage nobody
is useful, and nobody is dropped for it. Support nodes and the source expect nothing from viewers, so an idle
viewer they choke is kept (it costs a HAVE per piece), and viewers that download from them are useful by
definition. Addresses we were told to use (the source, --download-from) are never dropped for idling.
"""

from __future__ import annotations

from collections.abc import Iterable

from swarmcast.swarm.config import Role, SwarmConfig
from swarmcast.swarm.edge import LiveEdge
from swarmcast.swarm.peer import Address, PeerSession

STALL_FACTOR = 3  # no byte leaving our buffers for this many stall_timeouts: the peer stopped reading


def stalled(sessions: Iterable[PeerSession], now: float, config: SwarmConfig) -> list[PeerSession]:
    """Peers that stopped reading: more than ``send_buffer_limit`` queued for ``stall_timeout``, or bytes waiting
    in the transport's buffer and none of them leaving it for ``STALL_FACTOR`` x ``stall_timeout``.

    The second test exists because upload.py never queues much more than the limit, so a peer that asks and never
    reads would otherwise hold its queue, and our memory, until it is dropped as useless. It waits longer because
    our own uplink, when saturated, also holds a connection's bytes back for a while (the simulator's FIFO uplink
    did for 10 s under load); a kernel send buffer that takes nothing for 30 s means a peer with a closed window."""
    found = []
    for session in list(sessions):
        written = session.connection.bytes_sent - session.queued_bytes()
        if session.queued_bytes() > config.send_buffer_limit:
            stuck_for = config.stall_timeout
        elif session.link.write_buffer_size() > 0 and written <= session.written_mark:
            stuck_for = STALL_FACTOR * config.stall_timeout
        else:
            session.written_mark = written
            session.backlogged_since = None
            continue
        if session.backlogged_since is None:
            session.backlogged_since = now
        elif now - session.backlogged_since >= stuck_for:
            found.append(session)
    return found


def useless(
    sessions: dict[int, PeerSession], now: float, config: SwarmConfig, edge: LiveEdge, pinned: set[Address]
) -> list[PeerSession]:
    timeout = config.useless_timeout
    if timeout <= 0 or edge.verified is None or now - edge.verified_at >= timeout:
        return []
    crowded = config.role is Role.ENGINE and len(sessions) >= config.target_peers
    return [
        s for s in sessions.values()
        if now - s.last_useful >= timeout and s.address not in pinned and (not s.am_choking or crowded)
    ]  # fmt: skip


# A full swarm makes room for a newcomer by dropping the peer that has moved no piece either way for longest, once
# that is at least this long: silent peers from many addresses otherwise hold every place until useless_timeout.
REPLACE_IDLE_AFTER = 10.0


def replaceable(
    sessions: dict[int, PeerSession], now: float, edge: LiveEdge, pinned: set[Address]
) -> PeerSession | None:
    """The peer a newcomer may take the place of when the swarm is full, or None.

    Only while pieces flow (during an outage every peer is idle and none is worse than a newcomer), never the
    broadcaster's nodes nor the addresses we were told to use."""
    if edge.verified is None or now - edge.verified_at >= REPLACE_IDLE_AFTER:
        return None
    idle = [
        s for s in sessions.values()
        if now - s.last_useful >= REPLACE_IDLE_AFTER and not s.is_seeder and s.address not in pinned
    ]  # fmt: skip
    return min(idle, key=lambda s: s.last_useful, default=None)


def displaced_by_upstream(sessions: dict[int, PeerSession], pinned: set[Address]) -> PeerSession | None:
    """The peer that gives its place to one we dialled at a pinned address: of the peers that dialled us (never the
    broadcaster's nodes nor pinned addresses), the one that moved no piece for longest; None if there is none."""
    inbound = [s for s in sessions.values() if not s.outbound and not s.is_seeder and s.address not in pinned]
    return min(inbound, key=lambda s: s.last_useful, default=None)
