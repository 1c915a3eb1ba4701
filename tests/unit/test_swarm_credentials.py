"""Support and source status in the swarm come from verified credentials, never from handshake flags."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarmcast.credential import CLOCK_SKEW, CredentialRole, make_credential
from swarmcast.swarm.core import Role
from swarmcast.swarm.peer import PeerSession
from swarmcast.wire.codec import FrameDecoder
from swarmcast.wire.connection import MessageReceived
from swarmcast.wire.messages import CredentialKind, CredentialMessage, HandshakeFlags, Have, Message
from tests.unit.memswarm import Broadcast, MemoryLink, MemoryNetwork


def _sent(link: MemoryLink) -> list[Message]:
    """Every frame written on a link (memswarm exchanges the handshakes before the links exist)."""
    return FrameDecoder().feed(b"".join(link.history))


def _link_of(net: MemoryNetwork, session: PeerSession) -> MemoryLink:
    for _a, sa, link_a, _b, sb, link_b in net.pairs:
        if session is sa:
            return link_a
        if session is sb:
            return link_b
    raise AssertionError("no such session")


def _present(swarm_session: PeerSession, credential: bytes) -> MessageReceived:
    return MessageReceived(CredentialMessage(CredentialKind.PRESENT, credential))


def test_source_serves_the_real_support_node_not_those_that_only_claim_it() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT)
    fakes = [bc.make_swarm(Role.SUPPORT, credential=False) for _ in range(3)]  # SEEDER flag, no credential
    _, support_at_source = net.connect(support, bc.source, 8621, 7764)
    fakes_at_source = [net.connect(fake, bc.source, 9000 + i, 7764)[1] for i, fake in enumerate(fakes)]
    bc.emit(net.now, random_access=True)
    for _ in range(30):
        bc.emit(net.now)
        net.advance(0.1, [bc.source, support, *fakes])
    assert support_at_source.handshake.flags == fakes_at_source[0].handshake.flags == HandshakeFlags.SEEDER
    assert support_at_source.is_seeder and not support_at_source.is_source
    assert not any(f.is_seeder for f in fakes_at_source)
    assert support.stats.downloaded_from_source > 20 * 1000
    assert all(f.stats.downloaded == 0 for f in fakes)  # a source with a support node serves only it
    assert bc.source.stats_snapshot(net.now)["support_nodes"] == ["127.0.0.1:8621"]


def test_engine_treats_a_peer_claiming_source_as_a_viewer() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    engine = bc.make_swarm(Role.ENGINE)
    fake_source = bc.make_swarm(Role.SOURCE, credential=False)  # SOURCE flag, no credential
    real_at_engine, _ = net.connect(engine, bc.source, 7000, 7764)
    fake_at_engine, _ = net.connect(engine, fake_source, 7000, 7001)
    engine.open_cursor()  # a player: the engine fetches pieces
    bc.emit(net.now, random_access=True)
    for _ in range(10):
        bc.emit(net.now)
        net.advance(0.1, [bc.source, engine, fake_source])
    assert real_at_engine.is_source and real_at_engine.is_seeder
    assert fake_at_engine.handshake.flags == HandshakeFlags.SOURCE
    assert not fake_at_engine.is_source and not fake_at_engine.is_seeder
    # A source gets no HAVEs (it never downloads); the claimant does, like any viewer.
    assert not any(isinstance(m, Have) for m in _sent(_link_of(net, real_at_engine)))
    assert any(isinstance(m, Have) for m in _sent(_link_of(net, fake_at_engine)))


def test_a_credential_replayed_from_another_ip_gives_nothing() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    engine = bc.make_swarm(Role.ENGINE)
    thief = bc.make_swarm(Role.ENGINE)
    _, thief_at_engine = net.connect(thief, engine, 7001, 7000, a_ip="127.0.0.2")
    stolen = bc.credential(CredentialRole.SUPPORT, ip="127.0.0.1")  # the real support node's, copied off the wire
    engine.handle_events(thief_at_engine, [_present(thief_at_engine, stolen)], net.now)
    assert not thief_at_engine.is_seeder
    assert thief_at_engine.key in engine.sessions  # an honest NAT mismatch looks the same: no ban
    # The same from the address it names is accepted.
    _, honest_at_engine = net.connect(bc.make_swarm(Role.ENGINE), engine, 7002, 7000)
    engine.handle_events(honest_at_engine, [_present(honest_at_engine, stolen)], net.now)
    assert honest_at_engine.is_seeder


def test_a_forged_credential_is_a_ban() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    engine = bc.make_swarm(Role.ENGINE)
    _, forger_at_engine = net.connect(bc.make_swarm(Role.ENGINE), engine, 7001, 7000)
    forged = make_credential(Ed25519PrivateKey.generate(), role=CredentialRole.SUPPORT, content_id=bc.content_id,
                             ip="127.0.0.1", port=0, expires=1000)  # fmt: skip
    engine.handle_events(forger_at_engine, [_present(forger_at_engine, forged)], net.now)
    assert engine.stats.banned == 1 and forger_at_engine.key not in engine.sessions


def test_an_engine_without_the_descriptor_checks_credentials_once_it_has_it() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT)
    net.connect(support, bc.source, 8621, 7764)
    engine = bc.make_swarm(Role.ENGINE, with_descriptor=False)
    support_at_engine, _ = net.connect(engine, support, 7000, 8621)
    net.pump()  # the support node's credential and its METADATA arrive in the same turn
    assert engine.descriptor is not None
    assert support_at_engine.credential.received is not None
    net.advance(1.0, [bc.source, support, engine])  # the next housekeeping checks what was kept
    assert support_at_engine.is_seeder


def test_status_lapses_when_the_credential_expires() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT, credential=False)
    support.authority.adopt(bc.credential(CredentialRole.SUPPORT, expires=10), net.now)  # virtual Unix seconds
    engine = bc.make_swarm(Role.ENGINE)
    support_at_engine, _ = net.connect(engine, support, 7000, 8621)
    net.pump()
    assert support_at_engine.is_seeder
    while net.now < 10 + CLOCK_SKEW - 1:
        net.advance(1.0, [support, engine])
    assert support_at_engine.is_seeder
    net.advance(1.0, [support, engine])
    net.advance(1.0, [support, engine])
    assert not support_at_engine.is_seeder
    # A refreshed credential, once presented, restores it.
    support.authority.adopt(bc.credential(CredentialRole.SUPPORT, expires=5000), net.now)
    net.advance(1.0, [support, engine])
    net.advance(1.0, [support, engine])
    assert support_at_engine.is_seeder


def test_source_grants_listed_support_nodes_who_present_it_onwards() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    assert bc.source.authority.issuer is not None
    bc.source.authority.issuer.authorise("127.0.0.1", 8621)
    support = bc.make_swarm(Role.SUPPORT, credential=False)
    impostor = bc.make_swarm(Role.SUPPORT, credential=False)
    _, support_at_source = net.connect(support, bc.source, 8621, 7764)
    _, impostor_at_source = net.connect(impostor, bc.source, 8622, 7764)  # same IP, not the listed port
    assert support_at_source.is_seeder  # at once: the source knows whom it granted
    assert not impostor_at_source.is_seeder
    net.pump()
    assert support.authority.own is not None and impostor.authority.own is None
    engine = bc.make_swarm(Role.ENGINE)
    support_at_engine, _ = net.connect(engine, support, 7000, 8621)
    impostor_at_engine, _ = net.connect(engine, impostor, 7000, 8622)
    net.pump()
    assert support_at_engine.is_seeder and not impostor_at_engine.is_seeder


def test_a_support_node_takes_grants_only_from_the_source() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT)
    own = support.authority.own
    mallory_side, _ = net.connect(support, bc.make_swarm(Role.ENGINE), 8621, 7001)
    # Another holder's credential, copied off the wire, fresher than ours: adopting it would cost us our status.
    stolen = bc.credential(CredentialRole.SUPPORT, ip="192.0.2.9", expires=9999)
    copied = CredentialMessage(CredentialKind.GRANT, stolen)
    support.handle_events(mallory_side, [MessageReceived(copied)], net.now)
    assert support.authority.own == own


def test_an_engine_adopts_no_grant() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    engine = bc.make_swarm(Role.ENGINE)
    engine_side, _ = net.connect(engine, bc.make_swarm(Role.ENGINE), 7000, 7001)
    grant = CredentialMessage(CredentialKind.GRANT, bc.credential(CredentialRole.SUPPORT))
    engine.handle_events(engine_side, [MessageReceived(grant)], net.now)
    assert engine.authority.own is None


def test_credential_floods_cost_one_check_per_second() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    engine = bc.make_swarm(Role.ENGINE)
    _, peer_at_engine = net.connect(bc.make_swarm(Role.ENGINE), engine, 7001, 7000)
    verifier = engine.authority._verifier
    assert verifier is not None
    calls = []
    original = verifier.verify

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    verifier.verify = counting  # type: ignore[method-assign,assignment]
    # Within the CREDENTIAL budget (a burst of 8): one signature check now, the newest at the next housekeeping.
    burst = [_present(peer_at_engine, bc.credential(CredentialRole.SUPPORT, expires=2000 + i)) for i in range(8)]
    engine.handle_events(peer_at_engine, burst, net.now)
    assert len(calls) == 1
    net.advance(1.0, [engine])
    assert len(calls) == 2
    assert peer_at_engine.credential.verified is not None and peer_at_engine.credential.verified.expires == 2007
    # Far beyond it: the peer is dropped for flooding, still after one more check at most.
    flood = [_present(peer_at_engine, bc.credential(CredentialRole.SUPPORT, expires=3000 + i)) for i in range(500)]
    engine.handle_events(peer_at_engine, flood, net.now)
    assert len(calls) <= 3
    assert peer_at_engine.key not in engine.sessions


def test_pieces_from_a_claimed_seeder_do_not_count_as_the_broadcasters() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    fake = bc.make_swarm(Role.SUPPORT, credential=False)
    engine = bc.make_swarm(Role.ENGINE, seeder_grace=0.0)
    net.connect(fake, bc.source, 9000, 7764)
    net.connect(engine, fake, 7000, 9000)
    engine.open_cursor()
    bc.emit(net.now, random_access=True)
    for _ in range(20):
        bc.emit(net.now)
        net.advance(0.1, [bc.source, fake, engine])
    assert engine.stats.downloaded > 0
    assert engine.stats.downloaded_from_seeders == 0


def test_claimed_seeders_take_no_share_of_a_support_nodes_split() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT, seeder_grace=0.3)
    fellow = bc.make_swarm(Role.SUPPORT)
    fakes = [bc.make_swarm(Role.SUPPORT, credential=False) for _ in range(3)]
    net.connect(support, fellow, 8621, 8622)
    for i, fake in enumerate(fakes):
        net.connect(fake, support, 9000 + i, 8621)
    net.pump()
    # Support nodes split the stream by index among their fellows; two real ones: every other piece is ours at
    # once, the rest wait for the fellow. Fakes counted as fellows would leave pieces waiting for no one.
    graces = [support._grace_for(index) for index in range(40)]
    assert graces.count(0.0) == 20
