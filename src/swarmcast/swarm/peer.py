"""What a swarm knows about one connected peer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from swarmcast.credential import Credential, CredentialRole
from swarmcast.swarm.budget import MessageBudget
from swarmcast.swarm.rates import RateMeter
from swarmcast.wire.connection import Connection
from swarmcast.wire.messages import MAX_WINDOW_PIECES, Handshake

Address = tuple[str, int]
# A session's ``have`` set may grow this much (at least) past its size at the last trim before it is trimmed again
# to what can still matter (``trim_knowledge``); a quarter of its size otherwise, so a trim, which costs the set's
# size, is paid for by as many announcements: O(1) per HAVE, amortised.
HAVE_SLACK = 32


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
    # Slots: the swarm reads these attributes for every peer in every request pass; a plain instance dict with
    # this many keys loses CPython's shared-key attribute caches (the simulator ran 20 % slower without them).
    # "__dict__" keeps room for attributes other parts of the node may add (e.g. a support-node credential).
    __slots__ = (
        "_strikes", "address", "am_choking", "backlogged_since", "budget", "busy_until", "connected_at",
        "connection", "credential", "down", "handshake", "have", "have_trim_at", "key", "last_useful", "link",
        "local_ip", "may_download", "metadata_requested", "newest_have", "outbound", "peer_choking",
        "peer_interested", "pex_addresses", "random_access", "remote_ip", "requests_out", "sent_interested",
        "serving", "trusted", "unchoked_at", "up", "written_mark",
    )  # fmt: skip

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
        self.have_trim_at = HAVE_SLACK  # trim_knowledge once ``have`` holds more than this
        self.newest_have: int | None = None
        self.requests_out: dict[int, float] = {}
        self.down = RateMeter()
        self.up = RateMeter()
        self.backlogged_since: float | None = None  # since when nothing left our buffers for it
        self.written_mark = 0  # bytes that had left our buffers for it when last checked
        self.unchoked_at = 0.0
        self.busy_until = 0.0  # it rejected a request of ours: ask others first until then
        self.metadata_requested = False
        # Hostile-peer bookkeeping (docs/design.md, "Hostile peers").
        self.budget = MessageBudget(now)  # control messages it may send us
        self._strikes = 0.0  # requests it took and did not answer in time: its announcements count for less
        self.trusted = True  # its claims count toward the live edge and it is asked first (strikes < 0.5)
        self.last_useful = now  # a piece went either way
        self.pex_addresses: set[Address] = set()  # distinct addresses it named, capped
        # Pieces queued for it and not yet out of our buffers: (value of connection.bytes_sent once queued, index).
        # A list (at most max_serving long), not a deque: an empty deque takes 600 bytes, an empty list 56.
        self.serving: list[tuple[int, int]] = []
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

    @property
    def strikes(self) -> float:
        return self._strikes

    @strikes.setter
    def strikes(self, value: float) -> None:
        self._strikes = value
        self.trusted = value < 0.5  # an attribute, not a property: it is read for every peer in every request pass

    def queued_bytes(self) -> int:
        """What we hold for this peer right now: queued in the connection plus the transport's send buffer."""
        return self.connection.buffered_bytes + self.link.write_buffer_size()

    def pieces_in_flight(self) -> int:
        """Pieces we queued for it that have not left our buffers yet; drops those that have."""
        written = self.connection.bytes_sent - self.queued_bytes()
        serving = self.serving
        done = 0
        for queued_at, _index in serving:
            if queued_at > written:
                break
            done += 1
        if done:
            del serving[:done]
        return len(serving)

    def flush(self) -> None:
        data = self.connection.data_to_send()
        if data:
            self.link.write(data)

    def forget_before(self, floor: int) -> None:
        """Drop knowledge of pieces too old to matter, so the sets stay bounded by the live window."""
        if self.have and min(self.have) < floor:
            self.have = {i for i in self.have if i >= floor}
            self.random_access = {i for i in self.random_access if i >= floor}

    def trim_knowledge(self, floor: int | None) -> None:
        """Forget the pieces it announced below ``floor`` (``knowledge_floor``: nothing we could still want or
        hold), and in any case all but the newest MAX_WINDOW_PIECES, whatever order a peer announces in."""
        have = self.have
        if len(have) > MAX_WINDOW_PIECES:
            newest_window = sorted(have)[-MAX_WINDOW_PIECES]
            floor = newest_window if floor is None else max(floor, newest_window)
        if floor is not None:
            self.forget_before(floor)
        size = len(self.have)
        self.have_trim_at = size + max(HAVE_SLACK, size >> 2)


def knowledge_floor(oldest_stored: int | None, positions: list[int | None], pending: Iterable[int]) -> int | None:
    """The oldest piece a peer's announcement can still matter for, None while that is not known yet.

    What a session's ``have`` is read for: whom to ask for a piece we want (a reader's position onwards, or a
    request still out: ``pending``), and whom to tell of a piece we hold (the store, from its oldest piece). Older
    announcements are dead weight: without this, the sets grew with the stream (57 kB per simulated peer in 20
    virtual s at 300 peers), the main cost of a simulated peer (docs/benchmarks.md, part M). None (no trim) until
    the store holds a piece, so that a newcomer still choosing where to start keeps every claim.
    """
    if oldest_stored is None:
        return None
    floor = oldest_stored
    for position in positions:
        if position is not None and position < floor:
            floor = position
    return min(floor, min(pending, default=floor))
