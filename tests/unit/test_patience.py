"""A viewer prefers its fellow viewers to the broadcaster's nodes for a fresh piece: after a viewer holder turns a
request away (REJECT, over its upload limit) it asks that holder again after ``reject_backoff`` rather than the
support node, for up to ``viewer_patience`` s after the piece's first announcement (swarm/picker.py)."""

from __future__ import annotations

import random

from swarmcast.swarm.core import Role, Swarm
from swarmcast.swarm.peer import PeerSession
from swarmcast.wire.messages import Have, PieceFlags, Reject, Request, Unchoke
from tests.unit.memswarm import Broadcast, MemoryNetwork, ScriptedPeer


class _Midpoint(random.Random):
    """random() is always 0.5: a grace of exactly half of seeder_grace (0.15 s)."""

    def random(self) -> float:
        return 0.5


def _viewer_with_support_and_holder(
    **config: float,
) -> tuple[MemoryNetwork, Broadcast, Swarm, Swarm, PeerSession, ScriptedPeer]:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT, announce_delay=0.0)  # tells the viewer of every piece at once
    net.connect(support, bc.source, 8621, 7764)
    viewer = bc.make_swarm(Role.ENGINE, rng=_Midpoint(), **config)  # type: ignore[arg-type]
    at_support, _ = net.connect(viewer, support, 7000, 8621)
    holder = ScriptedPeer(net, viewer, ip="127.0.1.2", port=7001)
    holder.send(Unchoke())
    bc.emit(net.now, random_access=True)
    net.pump()
    cursor = viewer.open_cursor()
    for _ in range(6):
        net.advance(0.1, [bc.source, support, viewer])
        while viewer.next_piece(cursor, net.now) is not None:
            pass
    assert 0 in viewer.store
    holder.receive()
    return net, bc, support, viewer, at_support, holder


def _asked(peer: ScriptedPeer, index: int) -> int:
    peer.receive()
    return sum(isinstance(m, Request) and m.index == index for m in peer.inbox)


def _busy_holder_and_support_hold_the_next_piece(**config: float) -> tuple[
    MemoryNetwork, Broadcast, Swarm, Swarm, PeerSession, ScriptedPeer
]:  # fmt: skip
    """The holder turned a request for piece 1 away (over its upload limit): the support node served that one. Now
    the holder and the support node both announce piece 2, while the holder is still marked busy."""
    net, bc, support, viewer, at_support, holder = _viewer_with_support_and_holder(**config)
    holder.send(Have(1, PieceFlags.NONE))  # a fellow viewer has the next piece first
    assert _asked(holder, 1) == 1
    holder.send(Reject(1))
    bc.emit(net.now)
    for _ in range(3):
        net.advance(0.1, [bc.source, support, viewer])
    assert 1 in viewer.store and support.stats.pieces_sent == 2  # piece 1 came from the support node
    holder.send(Have(2, PieceFlags.NONE))
    bc.emit(net.now)
    net.pump()
    assert 2 in at_support.have
    return net, bc, support, viewer, at_support, holder


def test_a_busy_viewer_holder_is_asked_again_before_the_support_node() -> None:
    net, bc, support, viewer, at_support, holder = _busy_holder_and_support_hold_the_next_piece(
        viewer_patience=0.4, reject_backoff=0.5
    )  # the holder's backoff ends 0.5 s after its REJECT, 0.2 s from now
    for _ in range(2):  # 0.2 s: past the 0.15 s grace that alone held a viewer back from the support node before
        net.advance(0.1, [bc.source, support, viewer])
        assert 2 not in at_support.requests_out
    net.advance(0.05, [bc.source, support, viewer])
    assert _asked(holder, 2) == 1  # the fellow viewer, free again, is asked
    assert 2 not in at_support.requests_out and support.stats.pieces_sent == 2


def test_patience_ends_and_the_support_node_is_asked() -> None:
    net, bc, support, viewer, _at_support, holder = _busy_holder_and_support_hold_the_next_piece(
        viewer_patience=0.4, reject_backoff=2.0
    )  # the holder stays busy past the patience: the piece is due, the broadcaster's node serves it
    for _ in range(5):
        net.advance(0.1, [bc.source, support, viewer])
    assert 2 in viewer.store and support.stats.pieces_sent == 3
    assert _asked(holder, 2) == 0


def test_without_patience_the_support_node_is_asked_after_the_grace() -> None:
    net, bc, support, viewer, _at_support, holder = _busy_holder_and_support_hold_the_next_piece(
        viewer_patience=0.0, reject_backoff=1.0
    )  # as before: no patience, and a REJECTing holder left alone for a second
    for _ in range(2):
        net.advance(0.1, [bc.source, support, viewer])
    assert 2 in viewer.store and support.stats.pieces_sent == 3
    assert _asked(holder, 2) == 0
