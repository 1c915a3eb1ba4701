"""A session's ``have`` set holds what can still matter, not the whole stream (swarm/peer.py, ``trim_knowledge``).

Before, they were trimmed only to the newest MAX_WINDOW_PIECES (8,192: 27 min of a stream of 0.2 s pieces), so
they grew with the stream; they were most of a simulated peer's memory (docs/benchmarks.md, part M)."""

from __future__ import annotations

import random

from swarmcast.swarm.core import Role, Swarm, SwarmConfig
from swarmcast.swarm.peer import HAVE_SLACK, knowledge_floor
from swarmcast.swarm.store import PieceStore
from swarmcast.wire.messages import MAX_WINDOW_PIECES, Have, PieceFlags, Window
from tests.unit.memswarm import Broadcast, MemoryNetwork, ScriptedPeer

WINDOW = 20


def _viewer(bc: Broadcast) -> Swarm:
    store = PieceStore(max_bytes=10_000_000, window_pieces=WINDOW)
    return Swarm(content_id=bc.content_id, peer_id=random.randbytes(20), config=SwarmConfig(role=Role.ENGINE),
                 store=store, descriptor=bc.descriptor, now=0.0)  # fmt: skip


def test_a_peers_announcements_older_than_the_window_are_forgotten() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    viewer = _viewer(bc)
    net.connect(viewer, bc.source, 7000, 8621)
    holder = ScriptedPeer(net, viewer, ip="127.0.1.2", port=7001)  # chokes us: announces, is never asked
    cursor = viewer.open_cursor()
    sizes = []
    for _ in range(200):
        piece = bc.emit(net.now, random_access=True)
        holder.send(Have(piece.index, PieceFlags.RANDOM_ACCESS))
        net.advance(0.2, [bc.source, viewer])
        while viewer.next_piece(cursor, net.now) is not None:
            pass
        sizes.append(len(holder.session.have))
    assert viewer.store.newest == 199 and len(viewer.store) == WINDOW  # the viewer kept up
    oldest = viewer.store.oldest
    assert oldest is not None
    # Never more than the window plus the slack (the old code held all 200), and nothing older than the store.
    assert max(sizes) <= WINDOW + 1 + HAVE_SLACK
    assert min(holder.session.have) >= oldest - HAVE_SLACK
    assert all(i >= oldest - HAVE_SLACK for i in holder.session.random_access)
    assert 199 in holder.session.have and holder.session.newest_have == 199


def test_a_window_message_keeps_only_what_can_still_matter() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    viewer = _viewer(bc)
    net.connect(viewer, bc.source, 7000, 8621)
    cursor = viewer.open_cursor()
    for _ in range(60):
        bc.emit(net.now, random_access=True)
        net.advance(0.2, [bc.source, viewer])
        while viewer.next_piece(cursor, net.now) is not None:
            pass
    assert viewer.store.oldest == 60 - WINDOW
    peer = ScriptedPeer(net, viewer, ip="127.0.1.3", port=7002)
    peer.send(Window(0, (True,) * 60, (True,) * 60))  # a peer with a longer window than ours
    assert peer.session.have == set(range(60 - WINDOW, 60)) and peer.session.newest_have == 59
    assert peer.session.random_access == set(range(60 - WINDOW, 60))


def test_a_flood_of_announcements_stays_bounded_by_a_window() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    viewer = _viewer(bc)  # no piece yet: no floor known, only the hard bound applies
    peer = ScriptedPeer(net, viewer, ip="127.0.1.4", port=7003)
    session = peer.session
    session.have = set(range(3 * MAX_WINDOW_PIECES))
    session.trim_knowledge(knowledge_floor(viewer.store.oldest, [None], []))
    assert session.have == set(range(2 * MAX_WINDOW_PIECES, 3 * MAX_WINDOW_PIECES))
    assert session.have_trim_at == MAX_WINDOW_PIECES + MAX_WINDOW_PIECES // 4  # O(1) per HAVE, amortised


def test_the_floor_is_the_oldest_of_the_store_the_readers_and_the_requests_out() -> None:
    assert knowledge_floor(None, [5], [3]) is None  # nothing stored yet: keep every claim (a newcomer's start)
    assert knowledge_floor(100, [None], []) == 100
    assert knowledge_floor(100, [120, 90], []) == 90  # a reader behind the store's oldest piece still wants 90 on
    assert knowledge_floor(100, [120], [130, 95]) == 95  # a request still out
