"""Who may connect (node/access.py), whom a node uploads to (swarm/upload_to.py), one connection per peer address
(node/admission.py), and --upload-to nodes as the source's support nodes: sans-IO, no sockets, no sleeps."""

from __future__ import annotations

from dataclasses import dataclass, field

from swarmcast.credential import CredentialIssuer
from swarmcast.node.access import PRIVATE, AccessControl, AccessPolicy
from swarmcast.node.admission import Admission, AdmissionConfig
from swarmcast.node.config import AccessConfig
from swarmcast.node.ipfilter import parse_filter
from swarmcast.swarm.core import Role, Swarm
from swarmcast.wire.messages import HandshakeFlags, Interested, Piece, Request, Unchoke
from tests.unit.memswarm import Broadcast, MemoryNetwork, ScriptedPeer

# -- private nodes ---------------------------------------------------------------------------------------------


def test_private_node_admits_only_its_operators_addresses() -> None:
    policy = AccessPolicy(private=True, download_from=["127.0.0.2"], upload_to=["127.0.0.3"], trusted=["::1"])
    for ip in ("127.0.0.2", "127.0.0.3", "::1", "::ffff:127.0.0.2"):
        assert policy.admit(ip).admitted, ip
    for ip in ("127.0.0.1", "127.0.0.4", "2001:db8::1", "not an address"):
        assert not policy.admit(ip).admitted, ip
    assert policy.rejected == {PRIVATE: 3, "unknown address": 1}
    assert not policy.may_dial("127.0.0.4") and policy.may_dial("127.0.0.2")


def test_a_public_node_without_a_filter_is_open() -> None:
    policy = AccessPolicy(upload_to=["127.0.0.3"])
    assert policy.is_open and policy.admit("198.51.100.1").admitted and policy.rejected == {}


def test_set_peers_returns_the_live_connections_it_no_longer_allows() -> None:
    policy = AccessPolicy(private=True, download_from=["127.0.0.2"], upload_to=["127.0.0.3"])
    policy.hold(1, "127.0.0.2")
    policy.hold(2, "127.0.0.3")
    policy.hold(3, "127.0.0.2", inbound=False)
    assert policy.set_peers(upload_to=["127.0.0.4"]) == [2]  # download_from unchanged
    assert policy.admit("127.0.0.4").admitted and not policy.admit("127.0.0.3").admitted
    assert policy.set_peers(download_from=[]) == [1, 3]
    policy.release(1)  # the owner's connection_lost later: harmless


def test_operator_addresses_pass_the_filter() -> None:
    ip_filter = parse_filter({"blacklist": {"addresses": ["127.0.0.0/8"]}})
    policy = AccessPolicy(ip_filter=ip_filter, download_from=["127.0.0.2"], trusted=["127.0.0.7"])
    assert policy.admit("127.0.0.2").admitted and policy.admit("127.0.0.7").admitted
    assert policy.admit("127.0.0.5").reason == "blacklist"
    assert not policy.may_dial("127.0.0.5")  # nor is a refused address dialled


# -- limit_groups ----------------------------------------------------------------------------------------------


def test_limit_groups_caps_a_groups_share_and_releases_on_close() -> None:
    ip_filter = parse_filter({"groups": {"lan": {"addresses": ["10.0.0.0/8"]}}, "limit_groups": {"lan": "30%"}})
    policy = AccessPolicy(ip_filter=ip_filter, max_connections=10)  # 30 % of 10: 3 at once
    keys = []
    for key in range(1, 6):
        verdict = policy.admit(f"10.0.0.{key}")
        if verdict.admitted:
            policy.hold(key, f"10.0.0.{key}", verdict.groups)
            keys.append(key)
    assert keys == [1, 2, 3]
    assert policy.rejected == {"limit_groups lan": 2}
    assert policy.admit("11.0.0.1").admitted  # outside the group: no cap
    policy.release(2)
    policy.release(2)  # idempotent
    verdict = policy.admit("10.9.9.9")
    assert verdict.admitted and verdict.groups == ("lan",)
    policy.hold(9, "10.9.9.9", verdict.groups)
    assert policy.group_counts() == {"lan": 3}
    # Outbound connections do not count towards a group.
    policy.hold(10, "10.0.0.10", ("lan",), inbound=False)
    assert policy.group_counts() == {"lan": 3}


def test_a_reloaded_filter_closes_what_it_refuses_and_recounts_the_rest() -> None:
    first = parse_filter({"groups": {"lan": {"addresses": ["10.0.0.0/8"]}}, "limit_groups": {"lan": "50%"}})
    policy = AccessPolicy(ip_filter=first, max_connections=4)
    for key, ip in enumerate(("10.0.0.1", "10.0.0.2", "192.0.2.1"), start=1):
        verdict = policy.admit(ip)
        assert verdict.admitted
        policy.hold(key, ip, verdict.groups)
    assert policy.group_counts() == {"lan": 2}
    second = parse_filter({"groups": {"lan": {"addresses": ["10.0.0.0/8", "192.0.2.0/24"]}},
                           "blacklist": {"addresses": ["10.0.0.2"]}, "limit_groups": {"lan": "25%"}})  # fmt: skip
    assert policy.set_filter(second, None) == [2]
    assert policy.group_counts() == {"lan": 2}  # over the new cap of 1: kept, but no newcomer
    assert policy.admit("10.0.0.3").reason == "limit_groups lan"
    assert policy.set_filter(None, None) == []


# -- --close-connections-from-same-peer --------------------------------------------------------------------------


def _peer(admission: Admission, ip: str, listen_port: int, now: float = 0.0) -> tuple[int, tuple[int, ...]]:
    key, _ = admission.accept(ip, now)
    assert key is not None
    assert admission.to_peer(key, now).admitted
    verdict = admission.attach(key, b"c" * 20, now, listen_port)
    assert verdict.admitted
    return key, verdict.evict


def test_one_connection_per_peer_address_the_new_one_replaces_the_old() -> None:
    admission = Admission(AdmissionConfig(one_connection_per_peer=True))
    old, evicted = _peer(admission, "127.0.0.2", 8621)
    assert evicted == ()
    other, evicted = _peer(admission, "127.0.0.2", 8622)  # another node on that host
    assert evicted == ()
    new, evicted = _peer(admission, "::ffff:127.0.0.2", 8621)  # the same peer again
    assert evicted == (old,)
    assert admission.stage(old) is None and admission.stage(new) is not None and admission.stage(other) is not None
    assert admission.refused == {"connection from the same peer": 1}
    admission.release(old)  # its connection_lost, later: nothing happens to the new one
    _, evicted = _peer(admission, "127.0.0.2", 8621)
    assert evicted == (new,)
    # Peers that do not listen (port 0) name no address: never merged.
    _peer(admission, "127.0.0.3", 0)
    assert _peer(admission, "127.0.0.3", 0)[1] == ()


def test_without_the_flag_a_peer_may_connect_twice() -> None:
    admission = Admission(AdmissionConfig())
    _peer(admission, "127.0.0.2", 8621)
    assert _peer(admission, "127.0.0.2", 8621)[1] == ()


# -- --upload-to: whom the swarm serves, and the source's support credentials -------------------------------------


@dataclass
class FakeHost:
    access: AccessPolicy = field(default_factory=AccessPolicy)
    closed: list[int] = field(default_factory=list)

    def close_refused(self, keys: list[int], why: str) -> None:
        self.closed.extend(keys)

    def dial_now(self, swarm: Swarm) -> None:
        pass


def _source_with_upload_to(bc: Broadcast, *ips: str) -> tuple[AccessControl, CredentialIssuer]:
    issuer = bc.source.authority.issuer
    assert issuer is not None
    config = AccessConfig(upload_to=tuple((ip, 8621) for ip in ips))
    control = AccessControl(FakeHost(), bc.source, config, issuer=issuer)  # type: ignore[arg-type]
    return control, issuer


def _pieces_served(peer: ScriptedPeer, bc: Broadcast, net: MemoryNetwork) -> int:
    peer.send(Interested())
    net.advance(1.0, [bc.source])
    peer.receive()
    peer.send(*(Request(i) for i in range(bc.next_index)))
    return sum(isinstance(m, Piece) for m in peer.receive())


def test_upload_to_nodes_are_support_nodes_and_the_only_peers_served() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    control, issuer = _source_with_upload_to(bc, "127.0.0.2")
    assert ("127.0.0.2", 0) in issuer.support_nodes
    for _ in range(5):
        bc.emit(net.now)
    listed = ScriptedPeer(net, bc.source, ip="127.0.0.2", port=8621, flags=HandshakeFlags.SEEDER)
    claimant = ScriptedPeer(net, bc.source, ip="127.0.0.3", port=8621, flags=HandshakeFlags.SEEDER)
    assert listed.session.is_seeder and not claimant.session.is_seeder  # granted, not claimed
    assert _pieces_served(listed, bc, net) == 5
    assert _pieces_served(claimant, bc, net) == 0  # choked: every request gets a REJECT
    assert bc.source.stats_snapshot(net.now)["support_nodes"] == ["127.0.0.2:8621"]
    # On the fly: the list moves to another node; the old one is choked at once and granted nothing new.
    control.set_peers(upload_to=[("127.0.0.3", 8621)])
    assert listed.session.am_choking and ("127.0.0.2", 0) not in issuer.support_nodes
    assert ("127.0.0.3", 0) in issuer.support_nodes
    net.advance(1.0, [bc.source])
    assert claimant.session.is_seeder  # granted at the next housekeeping
    assert any(isinstance(m, Unchoke) for m in claimant.receive()) or not claimant.session.am_choking


def test_upload_to_keeps_the_operators_support_nodes() -> None:
    bc = Broadcast()
    issuer = CredentialIssuer(bc.key, bc.content_id, support_nodes=(("127.0.0.9", 0),))  # --support-node
    control = AccessControl(FakeHost(), bc.source, AccessConfig(), issuer=issuer)  # type: ignore[arg-type]
    control.set_peers(upload_to=[("127.0.0.2", 1)])
    assert issuer.support_nodes == {("127.0.0.9", 0), ("127.0.0.2", 0)}
    control.set_peers(upload_to=[])
    assert issuer.support_nodes == {("127.0.0.9", 0)}


def test_a_public_support_node_with_upload_to_serves_only_those() -> None:
    net = MemoryNetwork()
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT, upload_to=frozenset({"127.0.0.5"}))
    listed = ScriptedPeer(net, support, ip="127.0.0.5")
    other = ScriptedPeer(net, support, ip="127.0.0.6")
    for peer in (listed, other):
        peer.send(Interested())
    net.advance(1.0, [support])
    assert not listed.session.am_choking and other.session.am_choking
    support.set_upload_to(None, net.now)  # an empty --upload-to over /app/update: everyone again
    assert not other.session.am_choking


def test_set_peers_moves_a_support_nodes_upstream() -> None:
    bc = Broadcast()
    support = bc.make_swarm(Role.SUPPORT, download_from=frozenset({("127.0.0.1", 7764)}))
    support.add_candidates([("127.0.0.1", 7764)], pinned=True)
    host = FakeHost(AccessPolicy(private=True, download_from=["127.0.0.1"]))
    host.access.hold(1, "127.0.0.1", inbound=False)
    control = AccessControl(host, support, AccessConfig(private=True))  # type: ignore[arg-type]
    assert control.download_from == (("127.0.0.1", 7764),)
    control.set_peers(download_from=[("127.0.0.8", 7764)])
    assert support.config.download_from == frozenset({("127.0.0.8", 7764)})
    assert support.dialer.candidates[("127.0.0.8", 7764)].pinned
    assert ("127.0.0.1", 7764) not in support.dialer.candidates
    assert host.closed == [1]  # a private node drops its old upstream
    assert host.access.admit("127.0.0.8").admitted and not host.access.admit("127.0.0.1").admitted
