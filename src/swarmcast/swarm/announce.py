"""What we tell peers about ourselves and others: the WINDOW of our store, the addresses in our PEX."""

from __future__ import annotations

import random

from swarmcast.swarm.peer import Address, PeerSession
from swarmcast.swarm.store import PieceStore
from swarmcast.wire.messages import MAX_PEX_PEERS, MAX_WINDOW_PIECES, PieceFlags, Window


def window_message(store: PieceStore) -> Window:
    indices = store.indices()
    if not indices:
        return Window(0, (), ())
    first = max(indices[0], indices[-1] - MAX_WINDOW_PIECES + 1)
    count = indices[-1] - first + 1
    have = tuple((first + i) in store for i in range(count))
    random_access = tuple(
        bool((store.flags(first + i) or PieceFlags.NONE) & PieceFlags.RANDOM_ACCESS) for i in range(count)
    )
    return Window(first, have, random_access)


def listening(sessions: dict[int, PeerSession]) -> list[PeerSession]:
    """Peers others can dial (port 0: the peer does not listen, so its address names nobody)."""
    return [s for s in sessions.values() if s.address[1] > 0]


def pex_list(
    sessions: dict[int, PeerSession], *, exclude: PeerSession, is_source: bool, rng: random.Random
) -> tuple[Address, ...]:
    peers = listening(sessions)
    seeders = [s.address for s in peers if s.is_seeder and s is not exclude]
    if is_source and not exclude.is_seeder and seeders:
        # A source names only its support nodes to viewers (it serves only them when it has any): a viewer
        # that found the source first must reach one, not only other viewers who may all be busy.
        return tuple(seeders[:MAX_PEX_PEERS])
    addresses = [s.address for s in peers if s is not exclude]
    rng.shuffle(addresses)
    return tuple(addresses[:MAX_PEX_PEERS])
