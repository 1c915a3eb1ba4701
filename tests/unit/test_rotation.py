"""Start-node rotation (swarm/rotation.py): a full start node hands off the peers it has started, and only those."""

from __future__ import annotations

from collections.abc import Sequence

from swarmcast.swarm.core import Role, Swarm
from swarmcast.swarm.rotation import FLOW_WINDOW, GONE_TTL, MAX_GONE, MAX_STAY, MAX_TRACKED, Rotation, RotationConfig
from swarmcast.wire.messages import Have, Interested, Pex, Piece, PieceFlags, Request, Unchoke
from tests.unit.memswarm import Broadcast, MemoryNetwork, ScriptedPeer

PIECE = 1000  # bytes of each piece Broadcast.emit makes
HANDOFF = 20 * PIECE


def _start_node(bc: Broadcast, net: MemoryNetwork, *, max_peers: int = 3, rotation: bool = True,
                handoff_after: float = 0.0, upload_slots: int = 8, handoff_bytes: int = HANDOFF) -> Swarm:  # fmt: skip
    rot = RotationConfig(handoff_bytes=handoff_bytes, handoff_after=handoff_after) if rotation else None
    node = bc.make_swarm(Role.SUPPORT, max_peers=max_peers, target_peers=0, rotation=rot, upload_slots=upload_slots)
    net.connect(node, bc.source, 8621, 7764)
    return node


def _stream(bc: Broadcast, net: MemoryNetwork, swarms: list[Swarm], seconds: float,
            readers: Sequence[ScriptedPeer] = (), partial: Sequence[ScriptedPeer] = ()) -> None:  # fmt: skip
    """Emit a piece every 0.2 s. Each of ``readers`` asks the start node for every new piece (it depends on us
    alone); each of ``partial`` for two in three (PLAYS_ON_SHARE < 2/3 < INDEPENDENT_SHARE: a third comes from
    elsewhere)."""
    for _ in range(round(seconds / 0.2)):
        piece = bc.emit(net.now, random_access=bc.next_index % 10 == 0)
        net.advance(0.2, swarms)
        some = [p for p in partial if piece.index % 3 != 0]
        for reader in [*readers, *some]:
            if not reader.dropped:
                reader.send(Request(piece.index))
                reader.receive()


def _fetch(peer: ScriptedPeer, indices: list[int]) -> int:
    """Ask for ``indices`` once unchoked; the bytes received."""
    peer.send(Interested())
    assert any(isinstance(m, Unchoke) for m in peer.receive() + peer.inbox)
    got = 0
    for start in range(0, len(indices), 16):
        peer.send(*(Request(i) for i in indices[start : start + 16]))
        got += sum(len(m.data) for m in peer.receive() if isinstance(m, Piece))
    return got


def _filled(bc: Broadcast, net: MemoryNetwork, node: Swarm) -> tuple[ScriptedPeer, ScriptedPeer]:
    """A start node holding the source and two viewers that each got 30 pieces from it."""
    _stream(bc, net, [bc.source, node], 8.0)
    first, second = ScriptedPeer(net, node, ip="127.0.0.10"), ScriptedPeer(net, node, ip="127.0.0.11")
    assert first.attached and second.attached
    pieces = node.store.indices()[-30:]
    assert _fetch(first, pieces) >= HANDOFF and _fetch(second, pieces) >= HANDOFF
    return first, second


def test_a_full_start_node_hands_off_a_started_peer_that_plays_on_for_a_newcomer() -> None:
    net, bc = MemoryNetwork(), Broadcast()
    node = _start_node(bc, net)
    playing, dependent = _filled(bc, net, node)
    _stream(bc, net, [bc.source, node], FLOW_WINDOW, readers=[dependent], partial=[playing])
    assert not playing.dropped  # full, but it has not had FLOW_WINDOW to show it plays on
    _stream(bc, net, [bc.source, node], 0.2, readers=[dependent], partial=[playing])
    newcomer = ScriptedPeer(net, node, ip="127.0.0.20")
    assert newcomer.attached
    assert playing.dropped and not dependent.dropped
    assert node.stats_snapshot(net.now)["handed_off"] == 1
    assert _fetch(newcomer, node.store.indices()[-5:]) == 5 * PIECE  # and it is served at once


def test_a_peer_handed_off_that_dials_again_is_refused_for_a_while() -> None:
    """An engine redials the node it took the transport file from: within GONE_TTL it is refused, room or not (it
    had its start here; otherwise the free place would go round among the started viewers)."""
    net, bc = MemoryNetwork(), Broadcast()
    node = _start_node(bc, net)
    playing, dependent = _filled(bc, net, node)
    _stream(bc, net, [bc.source, node], FLOW_WINDOW + 1, readers=[dependent], partial=[playing])
    newcomer = ScriptedPeer(net, node, ip="127.0.0.20")
    assert newcomer.attached and playing.dropped
    node.detach(dependent.session, net.now, "left")  # room again
    address = playing.session.address
    assert not ScriptedPeer(net, node, ip=address[0], port=address[1]).attached
    assert ScriptedPeer(net, node, ip=address[0], port=address[1] + 1).attached  # another viewer on that IP may
    net.advance(GONE_TTL, [bc.source, node])
    node.detach(newcomer.session, net.now, "left")
    assert ScriptedPeer(net, node, ip=address[0], port=address[1]).attached  # forgotten after GONE_TTL


def test_a_full_start_node_frees_a_place_before_the_newcomer_comes() -> None:
    net, bc = MemoryNetwork(), Broadcast()
    node = _start_node(bc, net)
    playing, dependent = _filled(bc, net, node)
    assert len(node.sessions) == 3
    _stream(bc, net, [bc.source, node], FLOW_WINDOW + 1.2, readers=[dependent], partial=[playing])
    assert playing.dropped and not dependent.dropped and node.can_accept()


def test_a_support_node_without_rotation_refuses_the_same_newcomer() -> None:
    """The same swarm without the policy: nobody has been idle for 10 s, so the newcomer is refused."""
    net, bc = MemoryNetwork(), Broadcast()
    node = _start_node(bc, net, rotation=False)
    playing, dependent = _filled(bc, net, node)
    _stream(bc, net, [bc.source, node], FLOW_WINDOW + 0.2, readers=[dependent], partial=[playing])
    assert not ScriptedPeer(net, node, ip="127.0.0.20").attached
    assert not playing.dropped and not dependent.dropped


def test_a_peer_that_depends_on_the_start_node_alone_is_kept() -> None:
    """Both got their start, but both ask us for every piece: dropping one would stall it. Naming other peers in a
    PEX proves nothing (they may have nothing to give)."""
    net, bc = MemoryNetwork(), Broadcast()
    node = _start_node(bc, net)
    first, second = _filled(bc, net, node)
    first.send(Pex((("127.0.0.50", 7000),)))
    _stream(bc, net, [bc.source, node], 6.0, readers=[first, second])
    assert not ScriptedPeer(net, node, ip="127.0.0.20").attached
    assert not first.dropped and not second.dropped


def test_after_max_stay_even_a_viewer_that_depends_on_the_start_node_may_go() -> None:
    net, bc = MemoryNetwork(), Broadcast()
    node = _start_node(bc, net)
    first, second = _filled(bc, net, node)
    _stream(bc, net, [bc.source, node], MAX_STAY - 10, readers=[first, second])
    assert not ScriptedPeer(net, node, ip="127.0.0.20").attached
    _stream(bc, net, [bc.source, node], 10.2, readers=[first, second])
    assert ScriptedPeer(net, node, ip="127.0.0.21").attached
    assert first.dropped != second.dropped


def test_a_peer_still_starting_is_kept_even_when_it_plays_on() -> None:
    net, bc = MemoryNetwork(), Broadcast()
    node = _start_node(bc, net, handoff_bytes=100 * PIECE)
    _stream(bc, net, [bc.source, node], 8.0)
    peers = [ScriptedPeer(net, node, ip=f"127.0.0.{10 + i}") for i in range(2)]
    for peer in peers:
        assert _fetch(peer, node.store.indices()[-5:]) == 5 * PIECE
    _stream(bc, net, [bc.source, node], FLOW_WINDOW + 1, partial=peers)  # still under the hand-off amount
    assert not ScriptedPeer(net, node, ip="127.0.0.20").attached
    assert not any(peer.dropped for peer in peers)


def test_a_have_for_a_piece_we_never_served_counts_as_playing_on() -> None:
    net, bc = MemoryNetwork(), Broadcast()
    node = _start_node(bc, net)
    first, second = _filled(bc, net, node)
    _stream(bc, net, [bc.source, node], 2.0, readers=[first, second])
    # first got the newest piece elsewhere before asking us (a HAVE for a piece we served it says nothing).
    second.send(Have(node.store.indices()[-1], PieceFlags.NONE))
    first.send(Have(node.store.indices()[-30], PieceFlags.NONE))
    newest = bc.emit(net.now)
    net.advance(0.1, [bc.source, node])
    first.send(Have(newest.index, PieceFlags.NONE))
    assert ScriptedPeer(net, node, ip="127.0.0.20").attached
    assert first.dropped and not second.dropped


def test_a_peer_that_asks_for_few_of_the_new_pieces_plays_on() -> None:
    """It got its start and then asked us for none of the last seconds' pieces, while it keeps in touch (it is not
    idle long enough for liveness.replaceable): its stream comes from elsewhere."""
    net, bc = MemoryNetwork(), Broadcast()
    node = _start_node(bc, net)
    quiet, dependent = _filled(bc, net, node)
    _stream(bc, net, [bc.source, node], FLOW_WINDOW + 1, readers=[dependent])
    assert ScriptedPeer(net, node, ip="127.0.0.20").attached
    assert quiet.dropped and not dependent.dropped


def test_a_viewer_that_takes_its_stream_elsewhere_goes_whatever_it_got() -> None:
    """It found us after its start (a tracker named us) and asks us for nothing: it holds a place for nothing
    (it has not been idle long enough for liveness.replaceable)."""
    net, bc = MemoryNetwork(), Broadcast()
    node = _start_node(bc, net)
    _stream(bc, net, [bc.source, node], 4.0)
    elsewhere, starting = ScriptedPeer(net, node, ip="127.0.0.10"), ScriptedPeer(net, node, ip="127.0.0.11")
    elsewhere.send(Interested())
    _fetch(starting, node.store.indices()[-3:])
    _stream(bc, net, [bc.source, node], FLOW_WINDOW + 1, readers=[starting])
    assert elsewhere.dropped and not starting.dropped
    assert ScriptedPeer(net, node, ip="127.0.0.20").attached


def test_handoff_after_lets_a_peer_that_never_needed_much_go() -> None:
    net, bc = MemoryNetwork(), Broadcast()
    node = _start_node(bc, net, handoff_after=5.0, handoff_bytes=1000 * PIECE)
    _stream(bc, net, [bc.source, node], 8.0)
    peers = [ScriptedPeer(net, node, ip=f"127.0.0.{10 + i}") for i in range(2)]
    for peer in peers:
        _fetch(peer, node.store.indices()[-5:])
    _stream(bc, net, [bc.source, node], 6.0, readers=peers[1:], partial=peers[:1])
    assert ScriptedPeer(net, node, ip="127.0.0.20").attached
    assert peers[0].dropped and not peers[1].dropped


def test_the_source_and_pinned_addresses_are_never_handed_off() -> None:
    net, bc = MemoryNetwork(), Broadcast()
    node = _start_node(bc, net, max_peers=2)
    _stream(bc, net, [bc.source, node], 8.0)
    pinned = ScriptedPeer(net, node, ip="127.0.0.40", port=9000)
    node.add_candidates([("127.0.0.40", 9000)], pinned=True)
    assert _fetch(pinned, node.store.indices()[-30:]) >= HANDOFF
    _stream(bc, net, [bc.source, node], FLOW_WINDOW + 1)  # it asks for nothing: it would go if it were not pinned
    assert not ScriptedPeer(net, node, ip="127.0.0.20").attached
    assert len(node.sessions) == 2 and not pinned.dropped


def test_a_fellow_support_node_goes_first_while_the_source_is_there() -> None:
    """Support nodes dial every peer a tracker names, start nodes included; they follow the source and need no
    start, so a full start node lets one go before any viewer (never the source)."""
    net, bc = MemoryNetwork(), Broadcast()
    node = _start_node(bc, net, max_peers=3)
    fellow = bc.make_swarm(Role.SUPPORT)
    net.connect(fellow, node, 8622, 8621)
    _stream(bc, net, [bc.source, node, fellow], 8.0)
    at_node = next(s for s in node.sessions.values() if s.handshake.peer_id == fellow.peer_id)
    assert at_node.is_seeder and not at_node.is_source
    viewer = ScriptedPeer(net, node, ip="127.0.0.10")  # still starting: it stays
    assert ScriptedPeer(net, node, ip="127.0.0.20").attached
    assert at_node.key not in node.sessions and not viewer.dropped
    assert any(s.is_source for s in node.sessions.values())
    assert not ScriptedPeer(net, node, ip="127.0.0.21").attached  # the source and two viewers still starting


def test_newcomers_get_the_start_nodes_upload_slots_first() -> None:
    """Four upload slots (three by rank, one optimistic), two peers served plenty, four still starting: after a
    rechoke the ranked slots are the newcomers' (a support node keeps those it serves most: the old ones)."""
    net, bc = MemoryNetwork(), Broadcast()
    node = _start_node(bc, net, max_peers=8, upload_slots=4)
    _stream(bc, net, [bc.source, node], 8.0)
    old = [ScriptedPeer(net, node, ip=f"127.0.0.{10 + i}") for i in range(2)]
    for peer in old:
        assert _fetch(peer, node.store.indices()[-30:]) >= HANDOFF
    fresh = [ScriptedPeer(net, node, ip=f"127.0.0.{20 + i}") for i in range(4)]
    for peer in fresh:
        peer.send(Interested())
    net.advance(11.0, [bc.source, node])  # past the newcomers' grace (choking.NEWCOMER_GRACE)
    node.choker.rechoke(net.now)
    assert sum(not p.session.am_choking for p in fresh) >= 3
    assert sum(not p.session.am_choking for p in old) <= 1  # at most the optimistic slot
    assert node.rotation.score(fresh[0].session, net.now) > node.rotation.score(old[0].session, net.now)


def test_a_node_that_is_not_a_start_node_records_nothing() -> None:
    net, bc = MemoryNetwork(), Broadcast()
    node = _start_node(bc, net, rotation=False)
    _stream(bc, net, [bc.source, node], 2.0)
    peer = ScriptedPeer(net, node, ip="127.0.0.10")
    _fetch(peer, node.store.indices()[-5:])
    assert not node.rotation.enabled and not node.rotation._peers and not node.rotation._stored_at


def test_what_the_policy_remembers_is_bounded() -> None:
    rotation = Rotation(RotationConfig())
    net, bc = MemoryNetwork(), Broadcast()
    node = _start_node(bc, net)
    peer = ScriptedPeer(net, node, ip="127.0.0.10")
    for index in range(10 * MAX_TRACKED):
        rotation.served(peer.session, index, float(index))
        rotation.stored(float(index))
        rotation.note_have(peer.session, index + 1, float(index))
    record = rotation._peers[peer.session.key]
    assert len(record.served_indices) == len(record.served_at) == len(rotation._stored_at) == MAX_TRACKED
    rotation.forget(peer.session)
    assert not rotation._peers
    for i in range(MAX_GONE + 10):
        rotation._remember(("127.0.0.1", 1 + i), 0.0)
    assert len(rotation._gone) == MAX_GONE
    rotation._remember(("127.0.0.2", 1), GONE_TTL + 1)  # the expired ones go too
    assert list(rotation._gone) == [("127.0.0.2", 1)]
