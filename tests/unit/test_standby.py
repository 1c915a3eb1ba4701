"""Hot standby, sans-IO: the monitor's decisions, and a standby swarm taking over from a dead primary in memory."""

from __future__ import annotations

import random

import pytest

from swarmcast.swarm.core import Role, Swarm
from swarmcast.swarm.standby import STARTUP_GRACE, StandbyMonitor, StandbyState, Takeover, Yield
from swarmcast.swarm.store import StoredPiece
from swarmcast.wire.messages import PieceFlags
from tests.unit.memswarm import Broadcast, MemoryNetwork


def test_no_takeover_while_the_primary_is_connected() -> None:
    monitor = StandbyMonitor(takeover_after=2.0, now=0.0)
    for t in range(100):
        assert monitor.observe(float(t), primary_connected=True, primary_newest=t, own_newest=t - 1) is None
    assert monitor.state is StandbyState.FOLLOWING


def test_takeover_after_the_primary_is_gone_continues_after_its_newest_announcement() -> None:
    monitor = StandbyMonitor(takeover_after=2.0, now=0.0)
    assert monitor.observe(0.0, primary_connected=True, primary_newest=41, own_newest=40) is None
    assert monitor.observe(1.0, primary_connected=False, primary_newest=None, own_newest=40) is None
    assert monitor.observe(2.9, primary_connected=False, primary_newest=None, own_newest=40) is None
    action = monitor.observe(3.0, primary_connected=False, primary_newest=None, own_newest=40)
    assert action == Takeover(42)  # 41 was announced by the primary: someone may hold it, so never reused
    assert monitor.state is StandbyState.ACTIVE
    assert monitor.observe(4.0, primary_connected=False, primary_newest=None, own_newest=45) is None


def test_a_short_disconnection_does_not_take_over() -> None:
    monitor = StandbyMonitor(takeover_after=2.0, now=0.0)
    monitor.observe(0.0, primary_connected=True, primary_newest=5, own_newest=5)
    assert monitor.observe(1.5, primary_connected=False, primary_newest=None, own_newest=5) is None
    assert monitor.observe(1.6, primary_connected=True, primary_newest=6, own_newest=6) is None
    assert monitor.observe(3.5, primary_connected=False, primary_newest=None, own_newest=6) is None
    assert monitor.state is StandbyState.FOLLOWING


def test_a_primary_never_seen_gets_the_startup_grace() -> None:
    monitor = StandbyMonitor(takeover_after=1.0, now=0.0)
    assert monitor.observe(STARTUP_GRACE - 0.1, primary_connected=False, primary_newest=None, own_newest=None) is None
    action = monitor.observe(STARTUP_GRACE, primary_connected=False, primary_newest=None, own_newest=None)
    assert action == Takeover(None)  # nothing known: the node continues from its own .restart


def test_yields_only_to_a_primary_signing_ahead_of_us() -> None:
    monitor = StandbyMonitor(takeover_after=1.0, now=0.0)
    monitor.observe(0.0, primary_connected=True, primary_newest=10, own_newest=10)
    assert monitor.observe(1.0, primary_connected=False, primary_newest=None, own_newest=10) is None
    assert isinstance(monitor.observe(2.0, primary_connected=False, primary_newest=None, own_newest=10), Takeover)
    # The primary is back, but behind us (e.g. paused, then resumed): we keep signing.
    assert monitor.observe(3.0, primary_connected=True, primary_newest=11, own_newest=20) is None
    assert monitor.state.value == "active"
    # It signs ahead of us (a restart continues past its .restart reservation): it is the source again.
    assert monitor.observe(4.0, primary_connected=True, primary_newest=1011, own_newest=25) == Yield(1011)
    assert monitor.state is StandbyState.FOLLOWING
    assert (monitor.takeovers, monitor.yields) == (1, 1)


def test_takeover_after_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        StandbyMonitor(takeover_after=0.0, now=0.0)


def _kill(net: MemoryNetwork, victim: Swarm) -> None:
    """kill -9 of ``victim``: every connection to it closes, it says nothing."""
    for pair in list(net.pairs):
        a, sa, _, b, sb, _ = pair
        if victim in (a, b):
            a.detach(sa, net.now, "connection lost")
            b.detach(sb, net.now, "connection lost")
            net.pairs.remove(pair)


def test_standby_takes_over_and_the_engine_reads_on_without_a_hole() -> None:
    random.seed(7)
    net = MemoryNetwork()
    bc = Broadcast()
    standby = bc.make_swarm(Role.SUPPORT)
    engine = bc.make_swarm(Role.ENGINE)
    net.connect(standby, bc.source, 7765, 7764)
    net.connect(engine, standby, 7000, 7765)
    net.connect(engine, bc.source, 7000, 7764)
    primary_session = next(iter(standby.sessions.values()))
    monitor = StandbyMonitor(takeover_after=1.0, now=0.0)
    cursor = engine.open_cursor()
    got: list[StoredPiece] = []
    next_index: int | None = None
    standby_signed: list[int] = []
    for step in range(120):
        alive = step < 40
        if step == 40:
            _kill(net, bc.source)
        if alive:
            bc.emit(net.now, random_access=bc.next_index % 5 == 0)
        elif next_index is not None:  # the standby signs with the same key
            flags = PieceFlags.DISCONTINUITY | PieceFlags.RANDOM_ACCESS if not standby_signed else PieceFlags.NONE
            standby.add_local_piece(bc.piece(next_index, random.randbytes(1000), flags), net.now)
            standby_signed.append(next_index)
            next_index += 1
        net.advance(0.2, [bc.source, standby, engine] if alive else [standby, engine])
        connected = primary_session.key in standby.sessions
        action = monitor.observe(net.now, primary_connected=connected,
                                 primary_newest=primary_session.newest_have if connected else None,
                                 own_newest=standby.store.newest)  # fmt: skip
        if isinstance(action, Takeover):
            assert action.index is not None
            next_index = action.index
            standby.set_role(Role.SOURCE, net.now)
        while (piece := engine.next_piece(cursor, net.now)) is not None:
            got.append(piece)
    indices = [p.index for p in got]
    assert indices == list(range(indices[0], indices[0] + len(indices))), "no hole, no skip, no repeat"
    assert standby_signed and standby_signed[0] == bc.next_index, "numbering continues at the primary's newest + 1"
    first = next(p for p in got if p.index == standby_signed[0])
    assert first.flags == PieceFlags.DISCONTINUITY | PieceFlags.RANDOM_ACCESS
    assert len([i for i in indices if i in standby_signed]) >= 40
    assert engine.stats.skipped_pieces == 0
    # A source asks nobody for pieces.
    assert all(not s.requests_out for s in standby.sessions.values())


def test_first_verified_piece_per_index_wins_on_split_brain() -> None:
    """Two sources signing different data under one index: every node keeps the first it verified, for good."""
    net = MemoryNetwork()
    bc = Broadcast()
    rival = bc.make_swarm(Role.SOURCE)
    engine = bc.make_swarm(Role.ENGINE)
    net.connect(engine, bc.source, 7000, 7764)
    net.connect(engine, rival, 7000, 7765)
    cursor = engine.open_cursor()
    first = bc.emit(net.now, random_access=True)
    net.advance(0.2, [bc.source, rival, engine])
    assert engine.next_piece(cursor, net.now) == first
    other = bc.piece(first.index, b"different data", PieceFlags.DISCONTINUITY | PieceFlags.RANDOM_ACCESS)
    rival.add_local_piece(other, net.now)
    for _ in range(10):
        net.advance(0.2, [bc.source, rival, engine])
    assert engine.store.get(first.index) == first
    assert engine.stats.banned == 0  # a validly signed piece is no offence, only not the one we keep
