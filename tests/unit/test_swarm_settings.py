"""Swarm.reconfigure (swarm/settings.py): the operator's /app/update on a running swarm, no sockets."""

from __future__ import annotations

import pytest

from swarmcast.swarm.core import NEWCOMER_GRACE, Role
from swarmcast.wire.messages import Choke, Interested, NotInterested, Unchoke
from tests.unit.memswarm import Broadcast, MemoryNetwork, ScriptedPeer


def unchoked(peers: list[ScriptedPeer]) -> list[ScriptedPeer]:
    return [p for p in peers if not p.session.am_choking]


def test_fewer_upload_slots_choke_at_once_and_more_unchoke_the_waiting() -> None:
    bc, net = Broadcast(), MemoryNetwork()
    support = bc.make_swarm(Role.SUPPORT, upload_slots=4)
    peers = [ScriptedPeer(net, support, ip=f"127.0.0.{10 + i}") for i in range(4)]
    for peer in peers:
        peer.send(Interested())
    assert len(unchoked(peers)) == 4
    net.now += NEWCOMER_GRACE + 1  # past the newcomers' extra slot
    support.reconfigure(net.now, upload_slots=1)
    assert support.config.upload_slots == 1
    assert len(unchoked(peers)) == 1
    assert support.choker.in_use() == 1
    assert sum(isinstance(m, Choke) for p in peers for m in p.receive()) == 3
    support.reconfigure(net.now, upload_slots=3)
    assert len(unchoked(peers)) == 3
    support.reconfigure(net.now, upload_slots=0)
    assert unchoked(peers) == []


def test_a_new_download_from_stops_asking_others_and_pins_the_new_node() -> None:
    bc, net = Broadcast(), MemoryNetwork()
    support = bc.make_swarm(Role.SUPPORT)
    old = ScriptedPeer(net, support, ip="127.0.0.20", port=7000)
    assert old.session.sent_interested
    old.receive()
    support.reconfigure(net.now, download_from=frozenset({("127.0.0.21", 7001)}))
    assert support.config.download_from == frozenset({("127.0.0.21", 7001)})
    assert not old.session.may_download
    assert any(isinstance(m, NotInterested) for m in old.receive())
    assert support.dialer.candidates[("127.0.0.21", 7001)].pinned
    # Back to the old node: it is asked again.
    support.reconfigure(net.now, download_from=frozenset({("127.0.0.20", 7000)}))
    assert old.session.may_download
    assert any(isinstance(m, Interested) for m in old.receive())
    assert ("127.0.0.21", 7001) not in support.dialer.candidates
    # None lifts the restriction; a PEX address is taken again.
    support.reconfigure(net.now, download_from=None)
    support.add_candidates([("127.0.0.30", 7002)])
    assert ("127.0.0.30", 7002) in support.dialer.candidates


def test_unchanged_download_from_is_left_alone() -> None:
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT, download_from=frozenset({("127.0.0.20", 7000)}))
    support.reconfigure(0.0, max_peers=5)
    assert support.config.download_from == frozenset({("127.0.0.20", 7000)})
    assert support.config.max_peers == 5


def test_a_lower_max_peers_drops_ordinary_peers_before_the_broadcasters_nodes() -> None:
    bc, net = Broadcast(), MemoryNetwork()
    source = bc.source
    support = bc.make_swarm(Role.SUPPORT)
    net.connect(support, source, 8621, 7764)
    viewers = [ScriptedPeer(net, source, ip=f"127.0.0.{40 + i}") for i in range(3)]
    net.pump()
    assert source.peer_count == 4
    source.reconfigure(net.now, max_peers=2)
    assert source.peer_count == 2
    assert sum(v.dropped for v in viewers) == 2
    assert any(s.is_seeder for s in source.sessions.values()), "the support node was dropped before a viewer"
    # Full at the new cap: a newcomer finds no room until one leaves.
    assert not source.can_accept()
    source.reconfigure(net.now, max_peers=10)
    assert source.can_accept()


def test_values_our_own_checks_would_refuse_are_a_bug() -> None:
    swarm = Broadcast().make_swarm(Role.SUPPORT)
    with pytest.raises(ValueError, match="max_peers"):
        swarm.reconfigure(0.0, max_peers=0)
    with pytest.raises(ValueError, match="upload_slots"):
        swarm.reconfigure(0.0, upload_slots=-1)


def test_a_source_does_not_dial_its_download_from() -> None:
    source = Broadcast().source
    source.reconfigure(0.0, download_from=frozenset({("127.0.0.20", 7000)}))
    assert source.dialer.candidates == {}


def test_unchoke_follows_after_more_slots() -> None:
    bc, net = Broadcast(), MemoryNetwork()
    support = bc.make_swarm(Role.SUPPORT, upload_slots=0)
    peer = ScriptedPeer(net, support, ip="127.0.0.50")
    peer.send(Interested())
    assert peer.session.am_choking
    support.reconfigure(net.now, upload_slots=1)
    assert any(isinstance(m, Unchoke) for m in peer.receive())
