"""A support node tells a few viewers of a fresh piece at once and the others later, if they still need it
(swarm/fanout.py)."""

from __future__ import annotations

import random

from swarmcast.swarm.core import Role, Swarm
from swarmcast.wire.messages import Have, Interested, PieceFlags, Unchoke
from tests.unit.memswarm import Broadcast, MemoryNetwork, ScriptedPeer


def _support_with_viewers(
    net: MemoryNetwork, bc: Broadcast, count: int, *, front_peers: int = 2, announce_delay: float = 0.5
) -> tuple[Swarm, list[ScriptedPeer]]:
    support = bc.make_swarm(Role.SUPPORT, rng=random.Random(1), front_peers=front_peers,
                            announce_delay=announce_delay)  # fmt: skip
    net.connect(support, bc.source, 8621, 7764)
    viewers = []
    for i in range(count):
        peer = ScriptedPeer(net, support, ip=f"127.0.1.{i + 2}", port=7000 + i)
        peer.send(Interested(), Unchoke())  # a viewer that uploads: it unchokes the support node
        viewers.append(peer)
    net.pump()
    for peer in viewers:
        peer.receive()
    return support, viewers


def _told(peer: ScriptedPeer, index: int) -> bool:
    peer.receive()
    return any(isinstance(m, Have) and m.index == index for m in peer.inbox)


def test_a_fresh_piece_is_announced_to_the_front_at_once_and_to_the_others_later() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support, viewers = _support_with_viewers(net, bc, 5, front_peers=2, announce_delay=0.5)
    bc.emit(net.now, random_access=True)
    net.pump()
    net.advance(0.05, [bc.source, support])
    assert 0 in support.store  # its own share, straight from the source
    told = [peer for peer in viewers if _told(peer, 0)]
    assert len(told) == 2
    net.advance(0.25, [bc.source, support])
    assert [peer for peer in viewers if _told(peer, 0)] == told  # the others wait: a viewer may pass it on
    waiting = [peer for peer in viewers if peer not in told]
    got_it_elsewhere = waiting[0]
    got_it_elsewhere.send(Have(0, PieceFlags.RANDOM_ACCESS))
    net.advance(0.3, [bc.source, support])
    assert all(_told(peer, 0) for peer in waiting[1:])  # the delay ran out: the viewers that still lack it
    assert not _told(got_it_elsewhere, 0)  # a viewer that said it holds the piece is not told again
    assert support.fanout.deferred_announced == len(waiting) - 1


def test_without_a_delay_every_viewer_is_told_at_once() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support, viewers = _support_with_viewers(net, bc, 4, announce_delay=0.0)
    bc.emit(net.now, random_access=True)
    net.pump()
    net.advance(0.05, [bc.source, support])
    assert 0 in support.store
    assert all(_told(peer, 0) for peer in viewers)


def test_a_piece_from_a_fellow_support_node_is_announced_late_only() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support, viewers = _support_with_viewers(net, bc, 3, front_peers=2, announce_delay=0.5)
    fellow = bc.make_swarm(Role.SUPPORT, rng=random.Random(2))
    net.connect(fellow, support, 8622, 8621)
    net.pump()
    assert any(s.is_seeder for s in support.sessions.values() if not s.is_source)
    fellow.add_local_piece(bc.piece(0, b"x" * 500, PieceFlags.RANDOM_ACCESS), net.now)
    net.pump()
    net.advance(0.05, [support, fellow])
    assert 0 in support.store  # taken from the fellow at once (support nodes split the stream)
    assert not any(_told(peer, 0) for peer in viewers)  # the fellow put it into the viewers' mesh already
    net.advance(0.6, [support, fellow])
    assert all(_told(peer, 0) for peer in viewers)


def test_a_viewer_that_uploads_nothing_is_not_a_front_viewer() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT, rng=random.Random(1), front_peers=1, announce_delay=0.5)
    net.connect(support, bc.source, 8621, 7764)
    leech = ScriptedPeer(net, support, ip="127.0.1.2", port=7000)
    leech.send(Interested())  # never unchokes anyone: no upload
    uploader = ScriptedPeer(net, support, ip="127.0.1.3", port=7001)
    uploader.send(Interested(), Unchoke())
    net.pump()
    for index in range(5):
        bc.emit(net.now, random_access=index == 0)
        net.pump()
        net.advance(0.05, [bc.source, support])
        assert _told(uploader, index)
        assert not _told(leech, index)
    net.advance(0.6, [bc.source, support])
    assert all(_told(leech, index) for index in range(5))


def test_viewers_in_a_mesh_take_most_of_the_stream_from_each_other() -> None:
    """Five viewers connected to each other and to one support node: with late announcements the support node
    uploads far fewer copies than when it tells everyone at once, and every viewer still gets every piece."""

    def run(announce_delay: float) -> tuple[int, list[int]]:
        random.seed(7)
        net = MemoryNetwork()
        bc = Broadcast()
        support = bc.make_swarm(Role.SUPPORT, rng=random.Random(1), front_peers=1, announce_delay=announce_delay)
        net.connect(support, bc.source, 8621, 7764)
        viewers = [bc.make_swarm(Role.ENGINE, rng=random.Random(10 + i)) for i in range(5)]
        for i, viewer in enumerate(viewers):
            net.connect(viewer, support, 7000 + i, 8621)
            for j in range(i):
                net.connect(viewer, viewers[j], 7000 + i, 7000 + j)
        net.pump()
        cursors = [viewer.open_cursor() for viewer in viewers]
        got = [0] * len(viewers)
        nodes = [bc.source, support, *viewers]
        for step in range(60):
            if step < 40:
                bc.emit(net.now, random_access=step % 5 == 0)
            net.advance(0.1, nodes)
            for k, (viewer, cursor) in enumerate(zip(viewers, cursors, strict=True)):
                while viewer.next_piece(cursor, net.now) is not None:
                    got[k] += 1
        to_viewers = sum(viewer.stats.downloaded_from_seeders for viewer in viewers)
        return to_viewers, got

    at_once, got_at_once = run(0.0)
    late, got_late = run(0.5)
    assert min(got_late) >= 35 and min(got_at_once) >= 35
    assert late * 2 < at_once
