"""Admission: which connections a node's shared port takes, and for how long an unfinished one may wait.

How this works: every accepted connection gets a key and moves through stages, each with its own budget:

    UNDECIDED ──SWCP──► HANDSHAKE ──swarm takes it──► PEER
        │
        └─other bytes─► HTTP_HEADERS ──headers complete──► HTTP

UNDECIDED and HANDSHAKE are *pending*; HANDSHAKE and PEER are *peer connections* (outbound dials count here too);
HTTP_HEADERS and HTTP are *HTTP connections*. Each budget has a total cap and a per-address cap, so neither a
single address nor one side of the port (peers or HTTP) can take the others' slots. When a total budget is full,
the oldest connection still in an unfinished stage of it is evicted for the newcomer: an honest client finishes
its handshake or headers in one round trip, so it wins against any number of connections that dawdle, and an
attacker has to finish the handshake to hold a slot (then the per-address caps bound it). A per-address token
bucket limits new connections per second, and every unfinished stage has a deadline (``expired``).

Addresses are grouped as a household would be: an IPv4 address, or an IPv6 /64 (one subscriber's prefix).
Sans-IO: the caller passes ``now``, closes what ``expired`` and the eviction results name, and calls ``release``
from its connection_lost. Tables are bounded by the live connections plus ``MAX_IDLE_ADDRESSES`` rate buckets.
"""

from __future__ import annotations

import enum
import ipaddress
import itertools
from collections import OrderedDict
from dataclasses import dataclass, replace

# Rate buckets of addresses with no live connection, kept so closing and reopening does not refill the bucket.
MAX_IDLE_ADDRESSES = 4096


@dataclass(frozen=True)
class AdmissionConfig:
    """Every admission limit of a host; the flags in swarmcast.commands.options set them (see docs/design.md)."""

    max_connections: int = 1000  # peer connections (handshaking + established, inbound + outbound)
    max_connections_per_ip: int = 16  # inbound peer connections from one address, every swarm together
    max_peers_per_ip: int = 4  # sessions of one swarm with one address (the peer ids one address may hold)
    max_pending: int = 256  # connections whose first bytes or handshake have not arrived yet
    max_pending_per_ip: int = 8
    connection_rate_per_ip: float = 10.0  # new inbound connections per second from one address
    connection_burst_per_ip: int = 30
    max_http_connections: int = 256
    max_http_connections_per_ip: int = 16
    first_bytes_timeout: float = 3.0  # accept → the 4 bytes that say peer or HTTP
    handshake_timeout: float = 4.0  # first bytes → the peer's handshake matched a swarm
    http_header_timeout: float = 10.0  # first bytes → the end of the request headers
    http_idle_timeout: float = 5.0  # keep-alive: a connection idle this long between requests is closed
    http_max_lifetime: float = 60.0  # no HTTP connection of the node's web interface lives longer
    # --close-connections-from-same-peer 1: one inbound peer connection per peer address (IP and listen port);
    # a new one replaces the old (``attach``).
    one_connection_per_peer: bool = False

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, bool) and value <= 0:
                raise ValueError(f"admission limit {name} must be positive, not {value}")

    def fitted(self, descriptors: int) -> AdmissionConfig:
        """These limits shrunk in proportion so that all budgets together fit ``descriptors`` open files."""
        total = self.max_connections + self.max_pending + self.max_http_connections
        if total <= descriptors:
            return self
        scale = max(descriptors, 3) / total
        return replace(
            self,
            max_connections=max(1, int(self.max_connections * scale)),
            max_pending=max(1, int(self.max_pending * scale)),
            max_http_connections=max(1, int(self.max_http_connections * scale)),
        )


class Stage(enum.Enum):
    UNDECIDED = "undecided"
    HANDSHAKE = "handshake"
    PEER = "peer"
    HTTP_HEADERS = "http headers"
    HTTP = "http"


_PENDING = (Stage.UNDECIDED, Stage.HANDSHAKE)
_PEER_SIDE = (Stage.HANDSHAKE, Stage.PEER)
_HTTP_SIDE = (Stage.HTTP_HEADERS, Stage.HTTP)


def address_group(ip: str) -> str:
    """The unit per-address limits count: the IPv4 address, or the /64 of an IPv6 one (IPv4-mapped as IPv4)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _exact(ip: str) -> str:
    """The address itself (IPv4-mapped IPv6 as IPv4), for rules about one peer rather than a household."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@dataclass(frozen=True)
class Verdict:
    """``admitted`` False: close the connection (``reason`` says why). ``evict``: also close these keys."""

    admitted: bool
    reason: str = ""
    evict: tuple[int, ...] = ()


_OK = Verdict(True)


@dataclass(slots=True)
class _Entry:
    group: str
    stage: Stage
    since: float
    inbound: bool
    content_id: bytes | None = None
    ip: str = ""
    peer_address: tuple[str, int] | None = None  # set while it is the one connection of that peer address


@dataclass(slots=True)
class _Group:
    tokens: float
    refilled: float
    counts: dict[Stage, int]

    def count(self, stages: tuple[Stage, ...]) -> int:
        return sum(self.counts.get(stage, 0) for stage in stages)


class Admission:
    """The ledger of one host's connections; see the module docstring."""

    def __init__(self, config: AdmissionConfig | None = None) -> None:
        self.config = config or AdmissionConfig()
        self._keys = itertools.count(1)
        self._entries: dict[int, _Entry] = {}
        # Per stage, keys in the order they entered it (oldest first): expiry and eviction look at the front only.
        self._stages: dict[Stage, OrderedDict[int, None]] = {stage: OrderedDict() for stage in Stage}
        self._groups: dict[str, _Group] = {}
        self._idle: OrderedDict[str, None] = OrderedDict()  # groups with no live connection, oldest first
        self._swarm_peers: dict[tuple[bytes, str], int] = {}
        self._peer_addresses: dict[tuple[str, int], int] = {}  # (ip, listen port) -> its one inbound peer key
        self.refused: dict[str, int] = {}  # reason -> count, for stats and logs

    # -- queries -------------------------------------------------------------------------------------------------

    def count(self, *stages: Stage) -> int:
        return sum(len(self._stages[stage]) for stage in stages)

    def stage(self, key: int) -> Stage | None:
        entry = self._entries.get(key)
        return entry.stage if entry else None

    def peers_of(self, content_id: bytes, ip: str) -> int:
        return self._swarm_peers.get((content_id, address_group(ip)), 0)

    def may_dial(self, content_id: bytes, ip: str) -> bool:
        """Whether an outbound connection to ``ip`` for this swarm fits the peer budgets."""
        return (
            self.count(*_PEER_SIDE) < self.config.max_connections
            and self.peers_of(content_id, ip) < self.config.max_peers_per_ip
        )

    # -- transitions ---------------------------------------------------------------------------------------------

    def accept(self, ip: str, now: float) -> tuple[int | None, Verdict]:
        """A new inbound connection: its key (None when refused) and what to close."""
        group_name = address_group(ip)
        group = self._group(group_name, now)
        config = self.config
        if group.tokens < 1.0:
            return None, self._refuse("connection rate per address")
        if group.count(_PENDING) >= config.max_pending_per_ip:
            return None, self._refuse("pending connections per address")
        evict: tuple[int, ...] = ()
        if self.count(*_PENDING) >= config.max_pending:
            oldest = self._oldest(*_PENDING)
            if oldest is None:
                return None, self._refuse("pending connections")
            evict = (oldest,)
            self._leave(oldest)
        group.tokens -= 1.0
        key = next(self._keys)
        self._enter(key, _Entry(group_name, Stage.UNDECIDED, now, inbound=True, ip=_exact(ip)))
        return key, Verdict(True, evict=evict)

    def outbound(self, ip: str, now: float) -> int | None:
        """A dialled connection that just connected: its key, or None when the peer budget is full (close it)."""
        if self.count(*_PEER_SIDE) >= self.config.max_connections:
            self._refuse("peer connections")
            return None
        key = next(self._keys)
        self._enter(key, _Entry(address_group(ip), Stage.HANDSHAKE, now, inbound=False))
        return key

    def to_peer(self, key: int, now: float) -> Verdict:
        """The first bytes were the protocol magic: the connection now waits for its handshake."""
        entry = self._entries[key]
        group = self._groups[entry.group]
        config = self.config
        if group.count(_PEER_SIDE) >= config.max_connections_per_ip:
            return self._refuse("peer connections per address")
        evict: tuple[int, ...] = ()
        if self.count(*_PEER_SIDE) >= config.max_connections:
            oldest = self._oldest(Stage.HANDSHAKE)
            if oldest is None:
                return self._refuse("peer connections")
            evict = (oldest,)
            self._leave(oldest)
        self._move(key, Stage.HANDSHAKE, now)
        return Verdict(True, evict=evict)

    def to_http(self, key: int, now: float) -> Verdict:
        """The first bytes were not the protocol magic: an HTTP client, now reading its request headers."""
        entry = self._entries[key]
        group = self._groups[entry.group]
        config = self.config
        if group.count(_HTTP_SIDE) >= config.max_http_connections_per_ip:
            return self._refuse("http connections per address")
        evict: tuple[int, ...] = ()
        if self.count(*_HTTP_SIDE) >= config.max_http_connections:
            oldest = self._oldest(Stage.HTTP_HEADERS)
            if oldest is None:
                return self._refuse("http connections")
            evict = (oldest,)
            self._leave(oldest)
        self._move(key, Stage.HTTP_HEADERS, now)
        return Verdict(True, evict=evict)

    def http_ready(self, key: int, now: float) -> None:
        self._move(key, Stage.HTTP, now)

    def attach(self, key: int, content_id: bytes, now: float, listen_port: int = 0) -> Verdict:
        """The handshake named a swarm we serve: may this address hold one more of its sessions?

        With ``one_connection_per_peer``, an inbound connection from a peer address (its IP and the listen port
        its handshake announced) that already holds one *replaces* it: the old key is in ``evict``. The new one is
        kept because a peer that connects again is most often one that restarted or lost its link, and its old
        connection is then dead until a keepalive timeout says so (refusing the new one would lock the peer out
        for that long). Only that very address can do it, and only at the connection rate per address. A
        listen port of 0 (a peer that does not listen) names no address: such connections are not merged.
        """
        entry = self._entries[key]
        slot = (content_id, entry.group)
        evict: tuple[int, ...] = ()
        peer_address = (entry.ip, listen_port)
        old = self._peer_addresses.get(peer_address) if self._merges(entry, listen_port) else None
        if old is not None and old != key:
            self._refuse("connection from the same peer")  # counted: the old one is the one closed
            self._leave(old)
            evict = (old,)
        if self._swarm_peers.get(slot, 0) >= self.config.max_peers_per_ip:
            return replace(self._refuse("peers per address"), evict=evict)
        self._swarm_peers[slot] = self._swarm_peers.get(slot, 0) + 1
        entry.content_id = content_id
        if self._merges(entry, listen_port):
            entry.peer_address = peer_address
            self._peer_addresses[peer_address] = key
        self._move(key, Stage.PEER, now)
        return Verdict(True, evict=evict) if evict else _OK

    def _merges(self, entry: _Entry, listen_port: int) -> bool:
        return self.config.one_connection_per_peer and entry.inbound and listen_port > 0 and bool(entry.ip)

    def release(self, key: int) -> None:
        """The connection is gone (idempotent)."""
        if key in self._entries:
            self._leave(key)

    def expired(self, now: float) -> list[int]:
        """Keys whose unfinished stage ran out of time; they are released here, the caller closes them."""
        config = self.config
        out: list[int] = []
        for stage, limit in (
            (Stage.UNDECIDED, config.first_bytes_timeout),
            (Stage.HANDSHAKE, config.handshake_timeout),
            (Stage.HTTP_HEADERS, config.http_header_timeout),
            (Stage.HTTP, config.http_max_lifetime),
        ):
            keys = self._stages[stage]
            while keys:
                key = next(iter(keys))
                if self._entries[key].since + limit > now:
                    break
                out.append(key)
                self._leave(key)
        return out

    # -- internals -----------------------------------------------------------------------------------------------

    def _refuse(self, reason: str) -> Verdict:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return Verdict(False, reason)

    def _group(self, name: str, now: float) -> _Group:
        config = self.config
        group = self._groups.get(name)
        if group is None:
            group = self._groups[name] = _Group(float(config.connection_burst_per_ip), now, {})
            self._idle[name] = None
            self._trim_idle()
        elapsed = max(0.0, now - group.refilled)
        refill = elapsed * config.connection_rate_per_ip
        group.tokens = min(float(config.connection_burst_per_ip), group.tokens + refill)
        group.refilled = now
        return group

    def _oldest(self, *stages: Stage) -> int | None:
        best: int | None = None
        best_since = 0.0
        for stage in stages:
            keys = self._stages[stage]
            if keys:
                key = next(iter(keys))
                since = self._entries[key].since
                if best is None or since < best_since:
                    best, best_since = key, since
        return best

    # Per-address counts cover inbound connections only (outbound ones are our own choice); the totals and the
    # per-swarm peer counts cover both.

    def _enter(self, key: int, entry: _Entry) -> None:
        self._entries[key] = entry
        self._stages[entry.stage][key] = None
        if entry.inbound:
            self._idle.pop(entry.group, None)
            counts = self._groups[entry.group].counts
            counts[entry.stage] = counts.get(entry.stage, 0) + 1

    def _move(self, key: int, stage: Stage, now: float) -> None:
        entry = self._entries[key]
        del self._stages[entry.stage][key]
        if entry.inbound:
            counts = self._groups[entry.group].counts
            counts[entry.stage] -= 1
            counts[stage] = counts.get(stage, 0) + 1
        entry.stage, entry.since = stage, now
        self._stages[stage][key] = None

    def _leave(self, key: int) -> None:
        entry = self._entries.pop(key)
        del self._stages[entry.stage][key]
        if entry.peer_address is not None and self._peer_addresses.get(entry.peer_address) == key:
            del self._peer_addresses[entry.peer_address]
        if entry.content_id is not None:
            slot = (entry.content_id, entry.group)
            left = self._swarm_peers[slot] - 1
            if left:
                self._swarm_peers[slot] = left
            else:
                del self._swarm_peers[slot]
        if not entry.inbound:
            return
        group = self._groups[entry.group]
        group.counts[entry.stage] -= 1
        if not any(group.counts.values()):
            self._idle[entry.group] = None
            self._trim_idle()

    def _trim_idle(self) -> None:
        while len(self._idle) > MAX_IDLE_ADDRESSES:
            stale, _ = self._idle.popitem(last=False)
            del self._groups[stale]
