"""Request passes are skipped after events that cannot lead to a request (swarm/picker.py ``Picker.quiet``), and
every event that can still wakes the next pass up in the same turn: the skip must never delay a request."""

from __future__ import annotations

from collections.abc import Callable

from swarmcast.swarm.core import Role, Swarm
from swarmcast.wire.messages import Have, KeepAlive, PieceFlags, Reject, Request, Unchoke
from tests.unit.memswarm import Broadcast, MemoryNetwork, ScriptedPeer


def _viewer() -> tuple[MemoryNetwork, Swarm]:
    net = MemoryNetwork()
    viewer = Broadcast().make_swarm(Role.ENGINE)
    viewer.open_cursor()
    return net, viewer


def _asked(peer: ScriptedPeer, index: int) -> int:
    peer.receive()
    return sum(isinstance(m, Request) and m.index == index for m in peer.inbox)


def _count_passes(swarm: Swarm) -> list[int]:
    calls: list[int] = []
    fill: Callable[..., None] = swarm.picker.fill

    def counted(*args: object, **kwargs: object) -> None:
        calls.append(1)
        fill(*args, **kwargs)

    swarm.picker.fill = counted  # type: ignore[method-assign]
    return calls


def test_an_unchoke_alone_asks_at_once() -> None:
    net, viewer = _viewer()
    holder = ScriptedPeer(net, viewer, ip="127.0.1.2", port=7001)
    holder.send(Have(0, PieceFlags.RANDOM_ACCESS))  # it has our start point but chokes us
    holder.send(KeepAlive())
    assert _asked(holder, 0) == 0
    holder.send(Unchoke())  # nothing else in this read
    assert _asked(holder, 0) == 1


def test_a_new_holder_of_a_piece_nobody_could_give_is_asked_at_once() -> None:
    net, viewer = _viewer()
    choking = ScriptedPeer(net, viewer, ip="127.0.1.2", port=7001)
    choking.send(Have(0, PieceFlags.RANDOM_ACCESS))
    other = ScriptedPeer(net, viewer, ip="127.0.1.3", port=7002)
    other.send(Unchoke(), Have(1, PieceFlags.NONE))
    assert _asked(other, 1) == 1 and _asked(other, 0) == 0
    other.send(KeepAlive())  # a pass that finds nothing to ask: the next ones are skipped...
    passes = _count_passes(viewer)
    other.send(KeepAlive())
    assert passes == []
    other.send(Have(0, PieceFlags.RANDOM_ACCESS))  # ...until a peer announces the piece that pass looked for
    assert passes == [1]
    assert _asked(other, 0) == 1


def test_a_wait_that_ends_wakes_the_next_pass() -> None:
    net, viewer = _viewer()
    holder = ScriptedPeer(net, viewer, ip="127.0.1.2", port=7001)
    holder.send(Unchoke(), Have(0, PieceFlags.RANDOM_ACCESS), Have(1, PieceFlags.NONE), Have(2, PieceFlags.NONE))
    assert _asked(holder, 2) == 1
    holder.send(Reject(2))  # over its upload limit: not asked again for reject_backoff
    holder.send(Have(2, PieceFlags.NONE))
    assert _asked(holder, 2) == 1
    net.now += viewer.config.reject_backoff / 2
    holder.send(KeepAlive())
    assert _asked(holder, 2) == 1
    net.now += viewer.config.reject_backoff
    holder.send(KeepAlive())  # an event that changes nothing, but the backoff is over: asked in this turn
    assert _asked(holder, 2) == 2
