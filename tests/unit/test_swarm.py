"""The swarm state machine, driven in memory with a virtual clock."""

from __future__ import annotations

from swarmcast.swarm.core import Role
from tests.unit.memswarm import Broadcast, MemoryNetwork


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
