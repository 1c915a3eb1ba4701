"""The swarm state machine, driven in memory with a virtual clock."""

from __future__ import annotations

import random

from swarmcast.swarm.core import NEWCOMER_GRACE, Cursor, Role, Swarm
from swarmcast.swarm.peer import PeerSession
from swarmcast.wire.codec import FrameDecoder
from swarmcast.wire.messages import Have, Message, PieceFlags, Request
from tests.unit.memswarm import Broadcast, MemoryLink, MemoryNetwork


def test_engine_receives_pieces_in_order_from_source() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    engine = bc.make_swarm(Role.ENGINE)
    net.connect(engine, bc.source, 7000, 7764)
    produced = [bc.emit(net.now, random_access=(i % 10 == 0)) for i in range(12)]
    net.pump()
    cursor = engine.open_cursor()
    got = []
    for _ in range(40):
        net.advance(0.1, [bc.source, engine])
        while (piece := engine.next_piece(cursor, net.now)) is not None:
            got.append(piece)
        if len(got) < 30:
            produced.append(bc.emit(net.now, random_access=(bc.next_index % 10 == 0)))
    assert got, "engine received nothing"
    assert got[0].index == 10  # starts at the newest random-access piece
    by_index = {p.index: p for p in produced}
    assert [p.index for p in got] == list(range(10, 10 + len(got)))
    assert all(p.data == by_index[p.index].data for p in got)


def test_relay_through_support_node() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT)
    engine = bc.make_swarm(Role.ENGINE)
    net.connect(support, bc.source, 8621, 7764)
    net.connect(engine, support, 7000, 8621)
    bc.emit(net.now, random_access=True)
    cursor = engine.open_cursor()
    got = []
    for _ in range(30):
        bc.emit(net.now, random_access=(bc.next_index % 10 == 0))
        net.advance(0.1, [bc.source, support, engine])
        while (piece := engine.next_piece(cursor, net.now)) is not None:
            got.append(piece.index)
    assert len(got) >= 20
    assert got == list(range(got[0], got[0] + len(got)))
    assert engine.stats.downloaded > 0 and support.stats.uploaded > 0


def test_metadata_fetched_by_content_id() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    engine = bc.make_swarm(Role.ENGINE, with_descriptor=False)
    assert engine.descriptor is None
    net.connect(engine, bc.source, 7000, 7764)
    net.pump()
    assert engine.descriptor == bc.descriptor


def test_forged_piece_bans_peer_and_is_not_stored() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    mallory = Broadcast()  # same shape, different key: its signatures do not verify for bc
    mallory.content_id = bc.content_id
    fake_source = bc.make_swarm(Role.SOURCE)
    engine = bc.make_swarm(Role.ENGINE)
    net.connect(engine, fake_source, 7000, 7001)
    forged = mallory.piece(0, b"x" * 500)
    from swarmcast.swarm.store import StoredPiece
    from swarmcast.wire.messages import PieceFlags
    fake_source.add_local_piece(StoredPiece(0, PieceFlags.RANDOM_ACCESS, forged.signature, forged.data), net.now)
    cursor = engine.open_cursor()
    for _ in range(5):
        net.advance(0.1, [fake_source, engine])
        assert engine.next_piece(cursor, net.now) is None
    assert engine.stats.banned == 1
    assert engine.peer_count == 0
    assert 0 not in engine.store


def test_a_lying_have_does_not_freeze_a_new_player() -> None:
    from swarmcast.wire.connection import MessageReceived
    from swarmcast.wire.messages import Have, PieceFlags

    net = MemoryNetwork()
    bc = Broadcast()
    engine = bc.make_swarm(Role.ENGINE)
    liar = bc.make_swarm(Role.SUPPORT)
    net.connect(engine, bc.source, 7000, 7764)
    liar_session, _ = net.connect(engine, liar, 7000, 7001)
    bc.emit(net.now, random_access=True)
    net.pump()
    # A claim of a far-future random-access piece that nobody will ever deliver.
    engine.handle_events(liar_session, [MessageReceived(Have(10**12, PieceFlags.RANDOM_ACCESS))], net.now)
    cursor = engine.open_cursor()
    got = []
    for _ in range(80):
        bc.emit(net.now, random_access=(bc.next_index % 10 == 0))
        net.advance(0.1, [bc.source, engine])
        while (piece := engine.next_piece(cursor, net.now)) is not None:
            got.append(piece.index)
    assert got, "the player never started"
    assert max(got) < 10**12


def test_idle_timeout_sends_goodbye() -> None:
    from swarmcast.wire.connection import IDLE_TIMEOUT
    from swarmcast.wire.messages import Goodbye, GoodbyeReason

    net = MemoryNetwork()
    bc = Broadcast()
    engine = bc.make_swarm(Role.ENGINE)
    _, source_side = net.connect(engine, bc.source, 7000, 7764)
    net.pump()
    link = net.pairs[0][2]  # the engine's outgoing link
    link.stalled = True  # nothing the engine sends arrives, so the source hears nothing from it
    net.now += IDLE_TIMEOUT + 1
    bc.source.tick(net.now)
    source_link = net.pairs[0][5]
    from swarmcast.wire.codec import FrameDecoder

    sent = FrameDecoder().feed(b"".join(source_link.outbox)[-6:])
    assert sent == [Goodbye(GoodbyeReason.TIMEOUT)]
    assert bc.source.peer_count == 0
    assert source_side.connection.state.name == "CLOSED"


def test_source_with_support_nodes_serves_only_them() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    viewer = bc.make_swarm(Role.ENGINE)
    support = bc.make_swarm(Role.SUPPORT)
    _, viewer_at_source = net.connect(viewer, bc.source, 7000, 7764)
    net.pump()
    assert not viewer_at_source.am_choking  # no support node yet: the source serves viewers itself
    _, support_at_source = net.connect(support, bc.source, 8621, 7764)
    net.pump()
    assert viewer_at_source.am_choking
    assert not support_at_source.am_choking
    # The viewer still gets the stream, through the support node.
    net.connect(viewer, support, 7000, 8621)
    cursor = viewer.open_cursor()
    got = []
    for _ in range(30):
        bc.emit(net.now, random_access=(bc.next_index % 10 == 0))
        net.advance(0.1, [bc.source, support, viewer])
        while (piece := viewer.next_piece(cursor, net.now)) is not None:
            got.append(piece.index)
    assert len(got) >= 15
    assert viewer.stats.downloaded_from_source == 0



def _sent(link: MemoryLink) -> list[Message]:
    """Every message ever written to a link after the handshake."""
    return FrameDecoder().feed(b"".join(link.history))


def _link(net: MemoryNetwork, session: PeerSession) -> MemoryLink:
    return next(link for _a, s, link, _b, _s, _l in net.pairs if s is session)


def _start(swarm: Swarm, now: float) -> Cursor:
    """A player that has asked for its first piece, so the swarm knows where it stands."""
    cursor = swarm.open_cursor()
    swarm.next_piece(cursor, now)
    return cursor


class _Midpoint(random.Random):
    """random() is always 0.5: a grace of exactly half of seeder_grace."""

    def random(self) -> float:
        return 0.5


def test_upload_limit_rejects_requests_beyond_it() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    capped = bc.make_swarm(Role.ENGINE, upload_limit=1500)  # 1.5 pieces of 1000 bytes a second
    viewer = bc.make_swarm(Role.ENGINE, reject_backoff=1.0)
    net.connect(capped, bc.source, 7000, 7764)
    bc.emit(net.now, random_access=True)
    net.pump()
    cursor = _start(capped, net.now)
    for _ in range(5):
        bc.emit(net.now)
    for _ in range(3):
        net.advance(0.1, [capped])
        while capped.next_piece(cursor, net.now) is not None:
            pass
    assert len(capped.store) == 6
    viewer_at_capped, _ = net.connect(viewer, capped, 7001, 7000)
    net.pump()
    _start(viewer, net.now)
    net.advance(0.1, [viewer])
    # The bucket (1500 B) pays for the first piece and, going below zero, the second; the rest get REJECT.
    assert capped.stats.uploaded == 2000
    assert capped.stats.rejected_over_limit >= 1
    assert viewer_at_capped.busy_until > net.now  # after a REJECT the viewer waits before asking it again
    requests_before = sum(isinstance(m, Request) for m in _sent(_link(net, viewer_at_capped)))
    bc.emit(net.now)
    for _ in range(3):
        net.advance(0.1, [viewer, capped])
        capped.next_piece(cursor, net.now)
    assert 6 in capped.store  # the new piece is there to ask for, but not within a second of the REJECT
    assert sum(isinstance(m, Request) for m in _sent(_link(net, viewer_at_capped))) == requests_before
    net.advance(1.5, [viewer, capped])
    bc.emit(net.now)  # a new piece, once the bucket has refilled: served (and piece 6 with it)
    for _ in range(5):
        net.advance(0.1, [viewer, capped])
        capped.next_piece(cursor, net.now)
    assert capped.stats.uploaded >= 3000


def test_zero_upload_slots_never_unchoke() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    leech = bc.make_swarm(Role.ENGINE, upload_slots=0)
    viewer = bc.make_swarm(Role.ENGINE)
    _, at_leech = net.connect(viewer, leech, 7001, 7000)
    net.advance(6.0, [leech, viewer])  # past a rechoke
    assert at_leech.peer_interested and at_leech.am_choking


def test_no_have_to_a_peer_that_announced_the_piece_nor_to_the_source() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    viewer = bc.make_swarm(Role.ENGINE)
    leech = bc.make_swarm(Role.ENGINE, upload_slots=0)  # announces pieces, never serves them
    viewer_at_source, _ = net.connect(viewer, bc.source, 7000, 7764)
    net.connect(leech, bc.source, 7001, 7764)
    viewer_at_leech, _ = net.connect(viewer, leech, 7000, 7001)
    bc.emit(net.now, random_access=True)
    net.pump()
    leech_cursor = _start(leech, net.now)
    net.advance(0.1, [leech])
    assert leech.next_piece(leech_cursor, net.now) is not None  # the leech has piece 0 and said so
    viewer_cursor = _start(viewer, net.now)
    net.advance(0.1, [viewer])
    assert viewer.next_piece(viewer_cursor, net.now) is not None  # from the source: the leech chokes us
    assert not any(isinstance(m, Have) for m in _sent(_link(net, viewer_at_leech)))
    assert not any(isinstance(m, Have) for m in _sent(_link(net, viewer_at_source)))


def test_fresh_piece_held_only_by_a_support_node_is_left_to_other_viewers_first() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT)
    viewer = bc.make_swarm(Role.ENGINE, seeder_grace=10.0, rng=_Midpoint())  # waits 5 s for others
    other = bc.make_swarm(Role.ENGINE, seeder_grace=0.0)
    net.connect(support, bc.source, 8621, 7764)
    net.connect(viewer, support, 7000, 8621)
    net.connect(viewer, other, 7000, 7001)
    net.connect(other, support, 7001, 8621)
    nodes = [bc.source, support, viewer, other]
    bc.emit(net.now, random_access=True)
    other_cursor = other.open_cursor()
    for _ in range(10):
        net.advance(0.1, nodes)
        if other.next_piece(other_cursor, net.now) is not None:
            break
    assert 0 in other.store  # the other viewer took piece 0 from the support node and told ours
    start = net.now
    cursors = {viewer: _start(viewer, net.now), other: other_cursor}
    for step in range(8):  # 0.8 s, well inside the viewer's 5 s grace; the other viewer has none
        if step < 4:
            bc.emit(net.now)
        net.advance(0.1, nodes)
        for swarm, cursor in cursors.items():
            while swarm.next_piece(cursor, net.now) is not None:
                pass
    assert net.now - start < 5.0
    assert {0, 1, 2} <= set(viewer.store.indices())
    assert viewer.stats.downloaded > 0 and viewer.stats.downloaded_from_seeders == 0  # all via the other viewer
    assert other.stats.downloaded_from_seeders == other.stats.downloaded


def test_flush_soon_defers_writes_until_flush() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    engine = bc.make_swarm(Role.ENGINE)
    engine_side, _ = net.connect(engine, bc.source, 7000, 7764)
    bc.emit(net.now, random_access=True)
    net.pump()
    cursor = _start(engine, net.now)
    net.advance(0.1, [engine])
    assert engine.next_piece(cursor, net.now) is not None
    asked: list[int] = []
    engine.flush_soon = lambda: asked.append(1)
    link = _link(net, engine_side)
    bc.emit(net.now)
    net.pump(rounds=1)  # the source's HAVE reaches the engine, which queues a REQUEST but does not write it
    assert asked == [1] and not link.outbox
    engine.flush()
    assert any(isinstance(m, Request) for m in FrameDecoder().feed(b"".join(link.outbox)))


def test_support_node_keeps_serving_the_viewers_it_serves_most() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT, upload_slots=4)  # 3 kept by score + 1 optimistic
    at_support = [net.connect(bc.make_swarm(Role.ENGINE), support, 7000 + i, 8621)[1] for i in range(8)]
    net.pump()
    assert all(s.peer_interested for s in at_support)
    relied_on = at_support[5:]
    for session in relied_on:
        session.up.add(500_000, net.now)  # as if it had been fetching the stream from the support node
    for step in range(5):  # several rechokes: the optimistic slot moves, the served viewers stay
        net.advance(5.0, [support])
        for session in relied_on:
            session.up.add(500_000, net.now)
        assert not any(s.am_choking for s in relied_on)
        if net.now > NEWCOMER_GRACE:  # before that, one newcomer also held an extra slot
            assert sum(not s.am_choking for s in at_support) == 4, step


def test_a_newcomer_is_unchoked_at_once_when_the_slots_are_full() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT, upload_slots=4)
    for i in range(6):
        net.connect(bc.make_swarm(Role.ENGINE), support, 7000 + i, 8621)
    net.advance(NEWCOMER_GRACE + 1.0, [support])  # the first comers' grace is over; all slots are taken
    assert sum(not s.am_choking for s in support.sessions.values()) == 4
    _, newcomer = net.connect(bc.make_swarm(Role.ENGINE), support, 7100, 8621)
    net.pump()
    assert not newcomer.am_choking  # an extra newcomer slot, not a wait for the next rechoke
    net.advance(NEWCOMER_GRACE + 5.0, [support])
    assert sum(not s.am_choking for s in support.sessions.values()) == 4  # back to the slot count after its grace


def test_a_reader_far_behind_live_jumps_to_the_newest_random_access_piece() -> None:
    bc = Broadcast()
    engine = bc.make_swarm(Role.ENGINE, max_lag_pieces=20)
    for i in range(5):
        engine.add_local_piece(bc.piece(i, b"x" * 10, PieceFlags.RANDOM_ACCESS if i == 0 else PieceFlags.NONE), 0.0)
    cursor = engine.open_cursor()
    first = engine.next_piece(cursor, 0.0)
    assert first is not None and first.index == 0
    # The stream runs on while this reader is slow: 30 more pieces, a random-access one at 30.
    for i in range(5, 35):
        engine.add_local_piece(bc.piece(i, b"x" * 10, PieceFlags.RANDOM_ACCESS if i == 30 else PieceFlags.NONE), 1.0)
    piece = engine.next_piece(cursor, 1.0)
    assert piece is not None and piece.index == 30
    assert cursor.skipped == 29


def test_support_nodes_split_the_stream_from_the_source_between_them() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    a, b = bc.make_swarm(Role.SUPPORT), bc.make_swarm(Role.SUPPORT)
    net.connect(a, bc.source, 8621, 7764)
    net.connect(b, bc.source, 8622, 7764)
    net.connect(a, b, 8621, 8622)
    nodes = [bc.source, a, b]
    for step in range(40):
        if step < 20:
            bc.emit(net.now, random_access=(step % 10 == 0))
        net.advance(0.1, nodes)
    assert set(range(20)) <= set(a.store.indices()) and set(range(20)) <= set(b.store.indices())
    # Each piece left the source about once (not twice): the support node it belongs to passed it to the other.
    # The first piece or two go to both, before either has anything and so counts as a place to wait for.
    assert bc.source.stats.uploaded <= 22 * 1000
    assert a.stats.uploaded > 0 and b.stats.uploaded > 0


def test_a_source_points_viewers_to_its_support_nodes() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT)
    other_viewer = bc.make_swarm(Role.ENGINE)
    net.connect(support, bc.source, 8621, 7764)
    net.pump()  # the support node's credential reaches the source: it is a support node from then on
    net.connect(other_viewer, bc.source, 7001, 7764)
    viewer = bc.make_swarm(Role.ENGINE, target_peers=1)
    net.connect(viewer, bc.source, 7000, 7764)
    net.pump()
    # The source's PEX named only the support node, and the viewer dials it although its one peer slot is taken.
    assert viewer.addresses_to_dial(net.now, set()) == [("127.0.0.1", 8621)]
