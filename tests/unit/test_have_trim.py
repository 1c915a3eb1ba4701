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
    assert cursor.position == 200
    # Never more than the slack past what the reader still wants (the old code held all 200), nothing older.
    assert max(sizes) <= HAVE_SLACK + 1
    assert min(holder.session.have) >= 200 - HAVE_SLACK - 1
    assert all(i >= 200 - HAVE_SLACK - 1 for i in holder.session.random_access)
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
    assert cursor.position == 60
    # A peer with a longer window than ours, two pieces ahead of us: only those two can still matter to us.
    peer.send(Window(0, (True,) * 62, (True,) * 62))
    assert peer.session.have == {60, 61} and peer.session.newest_have == 61
    assert peer.session.random_access == {60, 61}


def test_a_flood_of_announcements_stays_bounded_by_a_window() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    viewer = _viewer(bc)  # no piece yet: no floor known, only the hard bound applies
    peer = ScriptedPeer(net, viewer, ip="127.0.1.4", port=7003)
    session = peer.session
    session.have = set(range(3 * MAX_WINDOW_PIECES))
    session.trim_knowledge(knowledge_floor(viewer.store.oldest, [None], [], readers_only=True))
    assert session.have == set(range(2 * MAX_WINDOW_PIECES, 3 * MAX_WINDOW_PIECES))
    assert session.have_trim_at == MAX_WINDOW_PIECES + MAX_WINDOW_PIECES // 4  # O(1) per HAVE, amortised


def test_the_floor_is_the_oldest_of_the_readers_and_the_requests_out_or_of_the_store() -> None:
    # A viewer engine: its readers' positions and its requests still out decide.
    assert knowledge_floor(None, [None], [3], readers_only=True) is None  # nothing stored or read: keep every claim
    assert knowledge_floor(100, [120, 130], [], readers_only=True) == 120
    assert knowledge_floor(100, [120], [130, 115], readers_only=True) == 115  # a request still out
    assert knowledge_floor(100, [None], [], readers_only=True) == 100  # no reader has started: the store decides
    # A support node tells viewers of anything in its store: the store's oldest piece decides, or an older reader.
    assert knowledge_floor(100, [120], [], readers_only=False) == 100
    assert knowledge_floor(100, [90], [], readers_only=False) == 90
    assert knowledge_floor(None, [90], [], readers_only=False) is None
