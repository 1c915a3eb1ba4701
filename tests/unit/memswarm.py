"""Two or more swarms wired together in memory: no sockets, no sleeps, a virtual clock."""

from __future__ import annotations

import itertools
import random

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarmcast.credential import CredentialIssuer, CredentialRole, make_credential
from swarmcast.swarm.core import Role, Swarm, SwarmConfig
from swarmcast.swarm.peer import PeerSession
from swarmcast.swarm.store import PieceStore, StoredPiece
from swarmcast.transport import Descriptor, public_key_bytes, sign_piece
from swarmcast.wire.connection import Connection, HandshakeReceived, MessageReceived
from swarmcast.wire.messages import Handshake, HandshakeFlags, Message, PieceFlags

_keys = itertools.count(1)
# As the nodes announce themselves (node/source.py, node/support.py; engines send no flag). Claims only: what
# counts is the credential (Broadcast gives the source an issuer and support nodes a credential).
_FLAGS = {Role.SOURCE: HandshakeFlags.SOURCE, Role.SUPPORT: HandshakeFlags.SEEDER, Role.ENGINE: HandshakeFlags.NONE}


class MemoryLink:
    """Bytes written here are delivered to the other end when the network is pumped."""

    def __init__(self) -> None:
        self.outbox: list[bytes] = []
        self.history: list[bytes] = []  # everything ever written, for tests that check what was sent
        self.closed = False
        self.stalled = False  # the far end stopped reading: bytes pile up here

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.outbox.append(data)
            self.history.append(data)

    def close(self) -> None:
        self.closed = True

    def write_buffer_size(self) -> int:
        return sum(len(d) for d in self.outbox) if self.stalled else 0


class MemoryNetwork:
    def __init__(self) -> None:
        self.now = 0.0
        self.pairs: list[tuple[Swarm, PeerSession, MemoryLink, Swarm, PeerSession, MemoryLink]] = []

    def connect(self, a: Swarm, b: Swarm, a_port: int, b_port: int, *, a_ip: str = "127.0.0.1",
                b_ip: str = "127.0.0.1", a_flags: HandshakeFlags | None = None) -> tuple[PeerSession, PeerSession]:
        """``a`` dials ``b``; returns (a's session with b, b's session with a). IPs are each side's address."""
        conn_a, conn_b = Connection(now=self.now), Connection(now=self.now)
        flags_a, flags_b = _FLAGS[a.config.role] if a_flags is None else a_flags, _FLAGS[b.config.role]
        conn_a.send_handshake(Handshake(a.content_id, a.peer_id, a_port, flags_a), self.now)
        conn_b.send_handshake(Handshake(b.content_id, b.peer_id, b_port, flags_b), self.now)
        ev_b = conn_b.receive_data(conn_a.data_to_send(), self.now)
        ev_a = conn_a.receive_data(conn_b.data_to_send(), self.now)
        assert isinstance(ev_a[0], HandshakeReceived) and isinstance(ev_b[0], HandshakeReceived)
        link_a, link_b = MemoryLink(), MemoryLink()
        sa = PeerSession(key=next(_keys), connection=conn_a, link=link_a, handshake=ev_a[0].handshake,
                         remote_ip=b_ip, local_ip=a_ip, outbound=True, may_download=True, now=self.now)
        sb = PeerSession(key=next(_keys), connection=conn_b, link=link_b, handshake=ev_b[0].handshake,
                         remote_ip=a_ip, local_ip=b_ip, outbound=False, may_download=True, now=self.now)
        a.attach(sa, self.now)
        b.attach(sb, self.now)
        self.pairs.append((a, sa, link_a, b, sb, link_b))
        return sa, sb

    def pump(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            moved = False
            for a, sa, link_a, b, sb, link_b in self.pairs:
                for src_link, dst_swarm, dst_session in ((link_a, b, sb), (link_b, a, sa)):
                    if src_link.stalled or not src_link.outbox:
                        continue
                    data = b"".join(src_link.outbox)
                    src_link.outbox.clear()
                    moved = True
                    events = dst_session.connection.receive_data(data, self.now)
                    dst_swarm.handle_events(dst_session, events, self.now)
            if not moved:
                return

    def advance(self, seconds: float, swarms: list[Swarm]) -> None:
        self.now += seconds
        for swarm in swarms:
            swarm.tick(self.now)
        self.pump()


class Broadcast:
    """A descriptor, a key and a source swarm that can emit signed pieces."""

    def __init__(self, now: float = 0.0) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.descriptor = Descriptor(name="t", title="Test", piece_size=188 * 100, bitrate=250_000,
                                     public_key=public_key_bytes(self.key))
        self.content_id = self.descriptor.content_id
        self.next_index = 0
        self.source = self.make_swarm(Role.SOURCE, now)

    def make_swarm(self, role: Role, now: float = 0.0, *, with_descriptor: bool = True,
                   rng: random.Random | None = None, credential: bool = True, **config: object) -> Swarm:
        """A swarm of this broadcast. A source signs its own credential; a support node holds one for 127.0.0.1
        (any port), valid for 1000 virtual seconds, unless ``credential=False`` (a peer that only claims it)."""
        store = PieceStore(max_bytes=10_000_000, window_pieces=500)
        swarm = Swarm(content_id=self.content_id, peer_id=random.randbytes(20),
                      config=SwarmConfig(role=role, **config),  # type: ignore[arg-type]
                      store=store, descriptor=self.descriptor if with_descriptor else None, now=now, rng=rng)
        if credential and role is Role.SOURCE:
            swarm.authority.issuer = CredentialIssuer(self.key, self.content_id)
        if credential and role is Role.SUPPORT and with_descriptor:
            swarm.authority.adopt(self.credential(CredentialRole.SUPPORT), now)
        return swarm

    def credential(self, role: CredentialRole, ip: str = "127.0.0.1", port: int = 0, expires: int = 1000) -> bytes:
        return make_credential(self.key, role=role, content_id=self.content_id, ip=ip, port=port, expires=expires)

    def piece(self, index: int, data: bytes, flags: PieceFlags = PieceFlags.NONE) -> StoredPiece:
        return StoredPiece(index, flags, sign_piece(self.key, self.content_id, index, flags, data), data)

    def emit(self, now: float, *, random_access: bool = False) -> StoredPiece:
        flags = PieceFlags.RANDOM_ACCESS if random_access else PieceFlags.NONE
        piece = self.piece(self.next_index, random.randbytes(1000), flags)
        self.next_index += 1
        self.source.add_local_piece(piece, now)
        return piece


class ScriptedPeer:
    """A peer the test speaks for: a bare ``Connection`` wired to one swarm in memory, honest or not."""

    def __init__(self, net: MemoryNetwork, swarm: Swarm, *, ip: str = "127.0.0.9", port: int = 7999,
                 flags: HandshakeFlags = HandshakeFlags.NONE, peer_id: bytes | None = None) -> None:
        self.net = net
        self.swarm = swarm
        ours, theirs = Connection(now=net.now), Connection(now=net.now)
        ours.send_handshake(Handshake(swarm.content_id, swarm.peer_id, 7764, _FLAGS[swarm.config.role]), net.now)
        theirs.send_handshake(Handshake(swarm.content_id, peer_id or random.randbytes(20), port, flags), net.now)
        events = ours.receive_data(theirs.data_to_send(), net.now)
        theirs.receive_data(ours.data_to_send(), net.now)
        assert isinstance(events[0], HandshakeReceived)
        self.connection = theirs
        self.link = MemoryLink()
        self.session = PeerSession(key=next(_keys), connection=ours, link=self.link, handshake=events[0].handshake,
                                   remote_ip=ip, outbound=False, may_download=True, now=net.now)
        self.attached = swarm.attach(self.session, net.now)
        self.inbox: list[Message] = []

    def send(self, *messages: Message) -> None:
        """Deliver messages to the swarm as one read, the way a hostile peer's single write arrives."""
        for message in messages:
            self.connection.send(message, self.net.now)
        self.send_raw(self.connection.data_to_send())

    def send_raw(self, data: bytes) -> None:
        events = self.session.connection.receive_data(data, self.net.now)
        self.swarm.handle_events(self.session, events, self.net.now)

    def receive(self) -> list[Message]:
        """What the swarm wrote to us since the last call (also kept in ``inbox``)."""
        data = b"".join(self.link.outbox)
        self.link.outbox.clear()
        got = [e.message for e in self.connection.receive_data(data, self.net.now) if isinstance(e, MessageReceived)]
        self.inbox.extend(got)
        return got

    def queued(self) -> int:
        """Bytes the swarm has queued for us and we have not read (written to the link or still in its connection)."""
        pending = self.session.connection.data_to_send()
        if pending:
            self.link.write(pending)
        return sum(len(d) for d in self.link.outbox)

    @property
    def dropped(self) -> bool:
        return self.session.key not in self.swarm.sessions
