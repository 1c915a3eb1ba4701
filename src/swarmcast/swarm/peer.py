"""What a swarm knows about one connected peer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from swarmcast.credential import Credential, CredentialRole
from swarmcast.swarm.rates import RateMeter
from swarmcast.wire.connection import Connection
from swarmcast.wire.messages import Handshake

Address = tuple[str, int]


class PeerLink(Protocol):
    """The byte pipe under a connection: a TCP transport in the node, a simulated link in bench/."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def write_buffer_size(self) -> int: ...


@dataclass
class CredentialState:
    """What the peer proved of its role (swarm/authority.py keeps it), and what we sent it of ours."""

    verified: Credential | None = None  # a credential that checked out for this connection, until it expires
    received: bytes | None = None  # the newest one the peer presented (checked, or waiting to be)
    unchecked: bool = False  # ``received`` still to be verified (no descriptor yet, or too soon after the last)
    checked_at: float = float("-inf")
    sent_own: bytes | None = None  # our own credential as last presented to the peer
    sent_grant: bytes | None = None  # the support credential we (the source) last granted the peer


class PeerSession:
    def __init__(
        self,
        *,
        key: int,
        connection: Connection,
        link: PeerLink,
        handshake: Handshake,
        remote_ip: str,
        outbound: bool,
        may_download: bool,
        now: float,
        local_ip: str = "",
    ) -> None:
        self.key = key
        self.connection = connection
        self.link = link
        self.handshake = handshake
        self.remote_ip = remote_ip
        self.local_ip = local_ip  # our side's address on this connection: what the peer sees us as
        # The address others can dial: the peer's IP and the listen port it announced.
        self.address: Address = (remote_ip, handshake.listen_port)
        self.outbound = outbound
        self.may_download = may_download
        self.connected_at = now
        self.am_choking = True
        self.peer_choking = True
        self.peer_interested = False
        self.sent_interested = False
        self.have: set[int] = set()
        self.random_access: set[int] = set()
        self.newest_have: int | None = None
        self.requests_out: dict[int, float] = {}
        self.down = RateMeter()
        self.up = RateMeter()
        self.backlogged_since: float | None = None
        self.unchoked_at = 0.0
        self.busy_until = 0.0  # it rejected a request of ours: ask others first until then
        self.metadata_requested = False
        self.credential = CredentialState()

    # The handshake's SOURCE/SEEDER flags are claims anyone can make: the status comes from a verified credential.
    @property
    def is_source(self) -> bool:
        verified = self.credential.verified
        return verified is not None and verified.role is CredentialRole.SOURCE

    @property
    def is_seeder(self) -> bool:
        """The source or a support node (the broadcaster's own machines)."""
        return self.credential.verified is not None

    def flush(self) -> None:
        data = self.connection.data_to_send()
        if data:
            self.link.write(data)

    def forget_before(self, floor: int) -> None:
        """Drop knowledge of pieces too old to matter, so the sets stay bounded by the live window."""
        if self.have and min(self.have) < floor:
            self.have = {i for i in self.have if i >= floor}
            self.random_access = {i for i in self.random_access if i >= floor}
