"""Hostile peers against the swarm state machine, in memory with a virtual clock (issue 7).

Each test replays one attack with a scripted peer (memswarm.ScriptedPeer) and checks the swarm's answer: the
offender is banned or dropped, honest readers go on, and what the peer made us queue stays bounded.
"""

from __future__ import annotations

import random

import pytest

from swarmcast.swarm.core import Role, Swarm
from swarmcast.swarm.dialer import MAX_PEX_ADDRESSES_PER_PEER
from swarmcast.wire.errors import ErrorCode, ProtocolError
from swarmcast.wire.messages import (
    MAX_INDEX,
    HandshakeFlags,
    Have,
    Interested,
    KeepAlive,
    Message,
    MetadataRequest,
    Pex,
    Piece,
    PieceFlags,
    Reject,
    Request,
    Unchoke,
    Window,
)
from tests.unit.memswarm import Broadcast, MemoryNetwork, ScriptedPeer


def _emit(bc: Broadcast, net: MemoryNetwork) -> None:
    bc.emit(net.now, random_access=(bc.next_index % 10 == 0))


def _until_pieces_flow(bc: Broadcast, net: MemoryNetwork, node: Swarm) -> None:
    """Emit a piece every 0.2 s until ``node`` has verified one (2 s at most)."""
    for _ in range(10):
        _emit(bc, net)
        net.advance(0.2, [bc.source, node])
        if node.store.indices():
            return
    raise AssertionError("no piece reached the node in 2 s")


def _banned_with(swarm: Swarm, caplog: pytest.LogCaptureFixture, code: ErrorCode) -> bool:
    return swarm.stats.banned >= 1 and code.name in caplog.text


# -- 1. a HAVE far past the live edge ------------------------------------------------------------------------
@pytest.mark.parametrize("role", [Role.SUPPORT, Role.ENGINE])
def test_have_for_the_last_index_is_a_ban_and_reading_goes_on(
    role: Role, caplog: pytest.LogCaptureFixture
) -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    node = bc.make_swarm(role)
    net.connect(node, bc.source, 8621, 7764)
    cursor = node.open_cursor() if role is Role.ENGINE else None
    got: list[int] = []

    def run(steps: int) -> None:
        for _ in range(steps):
            _emit(bc, net)
            net.advance(0.2, [bc.source, node])
            while cursor is not None and (piece := node.next_piece(cursor, net.now)) is not None:
                got.append(piece.index)

    run(10)
    liar = ScriptedPeer(net, node)
    liar.send(Unchoke(), Have(MAX_INDEX, PieceFlags.RANDOM_ACCESS))
    assert liar.dropped
    assert _banned_with(node, caplog, ErrorCode.IMPLAUSIBLE_INDEX)
    before = node.store.newest
    assert before is not None
    run(20)
    assert node.store.newest is not None and node.store.newest >= before + 15  # still following the source
    assert node.stats.skipped_pieces == 0
    if cursor is not None:
        assert got[-1] >= before + 15 and got == list(range(got[0], got[0] + len(got)))


def test_a_window_far_past_the_live_edge_is_a_ban() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT)
    net.connect(support, bc.source, 8621, 7764)
    for _ in range(3):
        _emit(bc, net)
        net.advance(0.2, [bc.source, support])
    liar = ScriptedPeer(net, support)
    liar.send(Window(10**15, (True,) * 8, (True,) * 8))
    assert liar.dropped and support.stats.banned == 1


def test_a_fresh_engine_does_not_start_where_one_liar_says() -> None:
    """Before it holds any piece, an engine takes its start from what most peers claim, not from the highest claim."""
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT)
    net.connect(support, bc.source, 8621, 7764)
    for _ in range(12):
        _emit(bc, net)
        net.advance(0.2, [bc.source, support])
    engine = bc.make_swarm(Role.ENGINE)
    net.connect(engine, bc.source, 7000, 7764)
    net.connect(engine, support, 7000, 8621)
    liar = ScriptedPeer(net, engine)
    newest = bc.next_index - 1
    # Within any plausible bound (so not banned outright), but a start point that will never come.
    liar.send(Unchoke(), Window(newest + 50, (True,) * 10, (True,) + (False,) * 9))
    cursor = engine.open_cursor()
    started_at = None
    t0 = net.now
    for _ in range(40):
        _emit(bc, net)
        net.advance(0.1, [bc.source, support, engine])
        liar.receive()
        piece = engine.next_piece(cursor, net.now)
        if piece is not None:
            started_at = net.now - t0
            assert piece.index <= bc.next_index
            break
    assert started_at is not None and started_at < 1.0  # the old code waited out the liar's start (2.5 s)


def test_a_claim_made_before_any_verified_piece_is_checked_when_the_first_arrives() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    engine = bc.make_swarm(Role.ENGINE)
    net.connect(engine, bc.source, 7000, 7764)
    liar = ScriptedPeer(net, engine)
    liar.send(Have(10**12, PieceFlags.RANDOM_ACCESS))
    assert not liar.dropped  # nothing to check it against yet
    cursor = engine.open_cursor()
    for _ in range(10):
        _emit(bc, net)
        net.advance(0.1, [bc.source, engine])
        engine.next_piece(cursor, net.now)
    assert liar.dropped and engine.stats.banned == 1


def test_a_standby_source_continuing_after_a_silence_is_believed() -> None:
    """Numbering that jumps by what the elapsed time allows (a hot standby taking over) is no protocol error."""
    net = MemoryNetwork()
    bc = Broadcast()
    engine = bc.make_swarm(Role.ENGINE)
    net.connect(engine, bc.source, 7000, 7764)
    cursor = engine.open_cursor()
    for _ in range(5):
        _emit(bc, net)
        net.advance(0.2, [bc.source, engine])
        engine.next_piece(cursor, net.now)
    net.advance(30.0, [bc.source, engine])
    standby = ScriptedPeer(net, engine, flags=HandshakeFlags.SOURCE)
    standby.send(Have(bc.next_index + 5 * 30, PieceFlags.RANDOM_ACCESS))
    assert not standby.dropped


# -- 2. request floods ------------------------------------------------------------------------------------
def _source_with_pieces(bc: Broadcast, count: int, size: int) -> None:
    for i in range(count):
        bc.source.add_local_piece(bc.piece(i, random.randbytes(size), PieceFlags.RANDOM_ACCESS), 0.0)
    bc.next_index = count


@pytest.mark.parametrize("flags", [HandshakeFlags.NONE, HandshakeFlags.SEEDER], ids=["viewer", "seeder"])
def test_ten_thousand_requests_for_one_piece_queue_it_once(flags: HandshakeFlags) -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    _source_with_pieces(bc, 3, 100_000)
    mallory = ScriptedPeer(net, bc.source, flags=flags)
    mallory.send(Interested())
    assert not mallory.session.am_choking
    mallory.send(*[Request(1)] * 10_000)
    queued = mallory.queued()
    assert sum(isinstance(m, Piece) for m in mallory.receive()) == 1
    assert queued < 2 * 100_000 + 10_000 * 16  # one copy of the piece, and small answers (old code: 10,000 copies)
    assert mallory.dropped  # far beyond any honest request rate: FLOOD


def test_requests_in_one_read_are_capped_in_pieces_and_bytes() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    bc.source = bc.make_swarm(Role.SOURCE, send_buffer_limit=1_000_000)
    _source_with_pieces(bc, 60, 100_000)
    mallory = ScriptedPeer(net, bc.source)
    mallory.send(Interested())
    mallory.send(*[Request(i) for i in range(60)])
    assert mallory.queued() <= 1_000_000 + 200_000  # counted as it was queued, within one read
    answers = mallory.receive()
    pieces = [m for m in answers if isinstance(m, Piece)]
    assert 1 <= len(pieces) <= 10
    assert sum(isinstance(m, Reject) for m in answers) == 60 - len(pieces)  # every request answered, in order
    assert not mallory.dropped
    # Once it has read what we queued, it may ask again and gets the rest, a buffer's worth at a time.
    mallory.send(*[Request(i) for i in range(len(pieces), 60)])
    assert sum(isinstance(m, Piece) for m in mallory.receive()) >= 1


@pytest.mark.parametrize(
    ("message", "count"),
    [(Pex((("10.0.0.1", 7000),)), 20), (Window(0, (True,), (True,)), 20), (MetadataRequest(), 20),
     (KeepAlive(), 100), (Have(1, PieceFlags.NONE), 5000)],
    ids=["pex", "window", "metadata-request", "keepalive", "have"],
)  # fmt: skip
def test_control_message_floods_drop_the_peer(message: Message, count: int) -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    _source_with_pieces(bc, 3, 1000)
    mallory = ScriptedPeer(net, bc.source)
    mallory.send(*[message] * count)
    assert mallory.dropped and bc.source.stats.banned == 1


def test_an_honest_peer_stays_within_every_budget() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT)
    engines = [bc.make_swarm(Role.ENGINE) for _ in range(3)]
    net.connect(support, bc.source, 8621, 7764)
    for i, engine in enumerate(engines):
        net.connect(engine, support, 7000 + i, 8621)
        net.connect(engine, bc.source, 7000 + i, 7764)
    cursors = [(e, e.open_cursor()) for e in engines]
    nodes = [bc.source, support, *engines]
    for _ in range(300):  # 60 s of 0.2 s pieces, with PEX, rechokes and keep-alives
        _emit(bc, net)
        net.advance(0.2, nodes)
        for engine, cursor in cursors:
            while engine.next_piece(cursor, net.now) is not None:
                pass
    assert all(n.stats.banned == 0 for n in nodes)
    assert all(n.stats.skipped_pieces == 0 for n in engines)


# -- 3. peers that give nothing ---------------------------------------------------------------------------
def test_a_silent_peer_holding_an_upload_slot_is_dropped_keep_alives_or_not() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT, useless_timeout=30.0)
    viewer = bc.make_swarm(Role.ENGINE)
    net.connect(support, bc.source, 8621, 7764)
    net.connect(viewer, support, 7000, 8621)
    silent = ScriptedPeer(net, support)
    silent.send(Interested())
    assert not silent.session.am_choking  # a free slot: it got one
    cursor = viewer.open_cursor()
    for step in range(200):  # 40 s
        _emit(bc, net)
        net.advance(0.2, [bc.source, support, viewer])
        while viewer.next_piece(cursor, net.now) is not None:
            pass
        if step % 25 == 0 and not silent.dropped:
            silent.send(KeepAlive())
        silent.receive()
    assert silent.dropped
    assert support.stats.dropped_useless == 1
    assert len(support.sessions) == 2  # the source and the viewer that downloads from it stay


def test_an_engine_with_a_full_peer_set_drops_a_peer_that_trades_nothing() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    engine = bc.make_swarm(Role.ENGINE, target_peers=2, useless_timeout=30.0)
    net.connect(engine, bc.source, 7000, 7764)
    silent = ScriptedPeer(net, engine)
    cursor = engine.open_cursor()
    for step in range(200):
        _emit(bc, net)
        net.advance(0.2, [bc.source, engine])
        while engine.next_piece(cursor, net.now) is not None:
            pass
        if step % 25 == 0 and not silent.dropped:
            silent.send(KeepAlive())
    assert silent.dropped
    assert len(engine.sessions) == 1


def test_nobody_is_dropped_for_idling_while_no_pieces_flow() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    engine = bc.make_swarm(Role.ENGINE, target_peers=2, useless_timeout=30.0)
    other = bc.make_swarm(Role.ENGINE)
    net.connect(engine, bc.source, 7000, 7764)
    net.connect(engine, other, 7000, 7001)
    _emit(bc, net)
    net.advance(0.2, [bc.source, engine, other])
    for _ in range(60):  # the source's input is down for a minute: no piece anywhere
        net.advance(1.0, [bc.source, engine, other])
    assert len(engine.sessions) == 2 and engine.stats.dropped_useless == 0


# -- 7. PEX and dialling ----------------------------------------------------------------------------------
def _bogus(n: int, base: int = 0) -> tuple[tuple[str, int], ...]:
    return tuple((f"10.9.{(base + i) // 250}.{(base + i) % 250 + 1}", 7000) for i in range(n))


def test_one_peer_can_name_at_most_a_hundred_addresses() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT)
    mallory = ScriptedPeer(net, support)
    for k in range(3):  # 150 distinct addresses, as in the attack
        mallory.send(Pex(_bogus(50, 50 * k)))
        net.now += 11.0
    assert len(support.dialer.candidates) == MAX_PEX_ADDRESSES_PER_PEER


def test_an_address_that_never_answers_our_handshake_is_dialled_a_few_times_a_minute() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT)
    support.add_candidates(_bogus(20))
    dials: dict[tuple[str, int], int] = {}
    for _ in range(400):  # 40 s; the connections open and close without a handshake, and nobody reports it
        for address in support.addresses_to_dial(net.now, set()):
            dials[address] = dials.get(address, 0) + 1
        net.now += 0.1
    assert dials and max(dials.values()) <= 4  # the old code redialled each one every second (34 in the attack)
    for _ in range(600):  # another minute: they are forgotten, and PEX cannot bring them back for a while
        support.addresses_to_dial(net.now, set())
        net.now += 0.1
    mallory = ScriptedPeer(net, support)
    mallory.send(Pex(_bogus(20)))
    assert not support.addresses_to_dial(net.now, set())


def test_a_pinned_address_keeps_a_short_backoff() -> None:
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT)
    support.add_candidates([("127.0.0.1", 7764)], pinned=True)
    now, dials = 0.0, 0
    for _ in range(600):
        dials += len(support.addresses_to_dial(now, set()))
        now += 0.1
    assert dials >= 8  # the source is retried at least every dial_backoff_max (8 s)


@pytest.mark.parametrize(
    "address",
    [("10.0.0.1", 0), ("0.0.0.0", 7000), ("224.0.0.1", 7000), ("255.255.255.255", 7000), ("::", 7000),
     ("ff02::1", 7000), ("240.0.0.1", 7000), ("not-an-ip", 7000)],
)  # fmt: skip
def test_implausible_addresses_are_never_dialled(address: tuple[str, int]) -> None:
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT)
    support.add_candidates([address])
    assert support.addresses_to_dial(0.0, set()) == []


def test_our_own_address_is_never_dialled_again() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT)
    support.add_candidates([("127.0.0.1", 8621)])
    assert support.addresses_to_dial(net.now, set()) == [("127.0.0.1", 8621)]
    # The dial reached ourselves: our own peer id comes back in the handshake.
    myself = ScriptedPeer(net, support, ip="127.0.0.1", port=8621, peer_id=support.peer_id)
    assert not myself.attached
    other = ScriptedPeer(net, support)
    other.send(Pex((("127.0.0.1", 8621),)))
    net.now += 100.0
    assert support.addresses_to_dial(net.now, set()) == []


# -- 8. withholding ---------------------------------------------------------------------------------------
def test_a_peer_that_announces_first_and_never_delivers_does_not_stall_the_player() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    engine = bc.make_swarm(Role.ENGINE)
    net.connect(engine, bc.source, 7000, 7764)
    withholder = ScriptedPeer(net, engine)
    withholder.send(Unchoke())
    cursor = engine.open_cursor()
    emitted: dict[int, float] = {}
    delays: list[float] = []
    for step in range(200):  # 20 s, a piece every 0.2 s, announced by the withholder just before the source has it
        if step % 2 == 0:
            flags = PieceFlags.RANDOM_ACCESS if bc.next_index % 10 == 0 else PieceFlags.NONE
            withholder.send(Have(bc.next_index, flags))
            emitted[bc.next_index] = net.now
            _emit(bc, net)
        net.advance(0.1, [bc.source, engine])
        withholder.receive()  # reads our requests, never answers them
        while (piece := engine.next_piece(cursor, net.now)) is not None:
            delays.append(net.now - emitted[piece.index])
    requests = sum(isinstance(m, Request) for m in withholder.inbox)
    assert len(delays) >= 90 and engine.stats.skipped_pieces == 0
    assert max(delays) < 1.0  # the old code waited for each request to time out (2 s)
    assert requests <= 8  # distrusted after the first: its announcements no longer draw requests (old: 100)
    assert engine.picker.withheld >= 1


def test_answers_out_of_order_reveal_a_withheld_piece() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    engine = bc.make_swarm(Role.ENGINE)
    peer = ScriptedPeer(net, engine)
    pieces = [bc.piece(i, random.randbytes(100), PieceFlags.NONE if i else PieceFlags.RANDOM_ACCESS) for i in range(3)]
    peer.send(Unchoke(), Window(0, (True,) * 3, (True, False, False)))
    cursor = engine.open_cursor()
    engine.next_piece(cursor, net.now)
    engine.tick(net.now)
    asked = [m.index for m in peer.receive() if isinstance(m, Request)]
    assert asked[:2] == [0, 1]
    skipped = pieces[asked[1]]
    peer.send(Piece(skipped.index, skipped.flags, skipped.signature, skipped.data))  # answers 1, skips 0
    assert asked[0] not in engine.sessions[peer.session.key].requests_out
    assert peer.session.strikes >= 1.0


def test_protocol_error_codes_are_named() -> None:
    assert str(ProtocolError(ErrorCode.FLOOD, "x")).startswith("FLOOD")


def test_a_peer_that_asks_and_never_reads_is_dropped_although_its_queue_is_capped() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    _source_with_pieces(bc, 40, 100_000)
    mallory = ScriptedPeer(net, bc.source)
    mallory.send(Interested())
    mallory.link.stalled = True  # it never reads: what we write stays in our transport buffer
    mallory.send(*[Request(i) for i in range(40)])
    for _ in range(35):
        net.advance(1.0, [bc.source])
        assert mallory.queued() <= 4 * 1024 * 1024 + 200_000
    assert mallory.dropped  # TOO_SLOW: nothing left our buffers for 3 x stall_timeout (10 s)


def test_a_lone_source_with_a_strike_is_still_asked_at_once_enough() -> None:
    """Distrust delays what only a distrusted peer announced; it never stops a support node following its source."""
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT)
    at_support, _ = net.connect(support, bc.source, 8621, 7764)
    _emit(bc, net)
    net.advance(0.2, [bc.source, support])
    at_support.strikes = 1.0  # as after one request that timed out
    emitted: dict[int, float] = {}
    arrived: dict[int, float] = {}
    for _ in range(20):
        emitted[bc.next_index] = net.now
        _emit(bc, net)
        for _ in range(2):
            net.advance(0.1, [bc.source, support])
            for index in support.store.indices():
                arrived.setdefault(index, net.now)
    delays = [arrived[i] - t for i, t in emitted.items() if i in arrived]
    assert len(delays) >= 18 and max(delays) <= 1.0
    assert at_support.trusted  # the pieces it delivered earned its trust back


def test_a_full_swarm_makes_room_for_a_newcomer_by_dropping_the_peer_idle_longest() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT, max_peers=3)
    net.connect(support, bc.source, 8621, 7764)
    silent = [ScriptedPeer(net, support, ip=f"127.0.0.{10 + i}") for i in range(2)]
    assert all(peer.attached for peer in silent)
    for step in range(75):  # 15 s of stream; the silent peers only send keep-alives
        _emit(bc, net)
        net.advance(0.2, [bc.source, support])
        if step % 25 == 0:
            for peer in silent:
                if not peer.dropped:
                    peer.send(KeepAlive())
    newcomer = ScriptedPeer(net, support, ip="127.0.0.20")
    assert newcomer.attached
    assert sum(peer.dropped for peer in silent) == 1
    assert len(support.sessions) == 3
    assert any(s.is_source for s in support.sessions.values())  # the broadcaster's node is never the one to go


def test_a_full_swarm_refuses_newcomers_when_nobody_is_idle_or_nothing_flows() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT, max_peers=2)
    net.connect(support, bc.source, 8621, 7764)
    first = ScriptedPeer(net, support, ip="127.0.0.10")
    assert first.attached
    assert not ScriptedPeer(net, support, ip="127.0.0.11").attached  # first has not been idle long: it stays
    for _ in range(15):  # no pieces at all (an outage): idling is nobody's fault
        net.advance(1.0, [bc.source, support])
        first.send(KeepAlive())
    assert not ScriptedPeer(net, support, ip="127.0.0.12").attached
    assert not first.dropped


SOURCE = ("127.0.0.1", 7764)  # the source's address, as net.connect(support, bc.source, 8621, 7764) dials it


def _full_of_silent_peers(bc: Broadcast, net: MemoryNetwork, max_peers: int) -> tuple[Swarm, list[ScriptedPeer]]:
    """A support node whose every place went to silent peers before it reached its (pinned) source."""
    support = bc.make_swarm(Role.SUPPORT, max_peers=max_peers)
    support.add_candidates([SOURCE], pinned=True)  # as node/support.py pins the node its transport file came from
    silent = [ScriptedPeer(net, support, ip=f"127.0.0.{10 + i}") for i in range(max_peers)]
    assert all(peer.attached for peer in silent)
    assert not ScriptedPeer(net, support, ip="127.0.0.30").attached  # full
    return support, silent


def test_silent_peers_that_filled_a_new_node_give_a_place_to_its_source() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support, silent = _full_of_silent_peers(bc, net, 3)
    assert support.addresses_to_dial(net.now, set()) == [SOURCE]  # pinned: dialled even when full
    net.connect(support, bc.source, 8621, 7764)
    assert SOURCE in {s.address for s in support.sessions.values()}, "the node refused its own source"
    assert sum(peer.dropped for peer in silent) == 1 and len(support.sessions) == 3
    _until_pieces_flow(bc, net, support)


def test_a_node_with_one_place_gives_it_to_its_source() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support, (silent,) = _full_of_silent_peers(bc, net, 1)
    net.connect(support, bc.source, 8621, 7764)
    assert silent.dropped and [s.address for s in support.sessions.values()] == [SOURCE]


def test_viewers_that_took_the_place_of_a_restarting_source_give_it_back() -> None:
    """The source goes and viewers fill its place within the 10 s in which pieces still count as flowing (so no
    one is replaced for them); the source comes back: the node dials it, and a viewer makes room."""
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT, max_peers=3)
    support.add_candidates([SOURCE], pinned=True)
    at_support, _ = net.connect(support, bc.source, 8621, 7764)
    _until_pieces_flow(bc, net, support)
    first = ScriptedPeer(net, support, ip="127.0.0.10")
    assert first.attached
    support.detach(at_support, net.now, "the source restarts")
    second, third = ScriptedPeer(net, support, ip="127.0.0.11"), ScriptedPeer(net, support, ip="127.0.0.12")
    assert second.attached and third.attached
    net.advance(11.0, [support])  # no piece since: an outage
    bc.source = bc.make_swarm(Role.SOURCE)
    net.connect(support, bc.source, 8621, 7764)
    assert SOURCE in {s.address for s in support.sessions.values()}, "the node refused its restarted source"
    assert sum(peer.dropped for peer in (first, second, third)) == 1


def test_a_full_node_with_nothing_flowing_still_refuses_peers_it_was_not_told_to_use() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support, silent = _full_of_silent_peers(bc, net, 2)
    other = bc.make_swarm(Role.ENGINE)
    net.connect(support, other, 8621, 7000)  # we dialled it, but nobody pinned it: no one goes for it
    assert not any(peer.dropped for peer in silent) and len(support.sessions) == 2


def test_sybils_that_announce_every_piece_first_do_not_make_the_reader_skip() -> None:
    """Five withholders join with a WINDOW of the next 30 pieces and then announce each piece 3 ahead of the source.
    Each fresh one is trusted (and not spared, unlike the support node), so each took the piece the reader waited
    for on order for urgent_after in turn, and the reader skipped; a piece withheld once now goes to a peer with a
    record (the support node)."""
    net = MemoryNetwork()
    bc = Broadcast()
    engine = bc.make_swarm(Role.ENGINE)
    support = bc.make_swarm(Role.SUPPORT)
    net.connect(support, bc.source, 8621, 7764)
    net.connect(engine, support, 7000, 8621)
    cursor = engine.open_cursor()
    for _ in range(20):
        _emit(bc, net)
        net.advance(0.2, [bc.source, support, engine])
        while engine.next_piece(cursor, net.now) is not None:
            pass
    withholders = []
    for i in range(5):
        peer = ScriptedPeer(net, engine, ip=f"127.0.0.{2 + i}", port=1)
        first = bc.next_index
        peer.send(Window(first, (True,) * 30, tuple((first + k) % 5 == 0 for k in range(30))), Unchoke())
        withholders.append(peer)
    for _ in range(100):
        _emit(bc, net)
        for peer in withholders:
            peer.send(Have(bc.next_index + 3, PieceFlags.NONE))
        for _ in range(2):
            net.advance(0.1, [bc.source, support, engine])
        for peer in withholders:
            peer.receive()  # reads our requests, never answers them
        while engine.next_piece(cursor, net.now) is not None:
            pass
    assert engine.stats.skipped_pieces == 0  # the old picker: "skipping pieces 20..29 (not received in time)"
    assert engine.picker.withheld >= 5  # each of them was caught at it
