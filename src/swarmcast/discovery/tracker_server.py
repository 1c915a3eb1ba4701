"""The internal tracker: a BitTorrent HTTP tracker (BEP 3, 23, 7) a node mounts on its own aiohttp app.

How this works: :meth:`InternalTracker.handle_announce` is the whole tracker, sans-IO. It takes the decoded query
parameters, the requester's address and the current time, updates the swarm and returns the bencoded answer. The
aiohttp handler only decodes the raw query string and reads the clock.

Like opentracker, a peer is identified by its address and port, not by its self-chosen peer_id, and the address is
the connection's source (the ``ip`` parameter is ignored): otherwise anyone could register or unregister peers on
behalf of someone else. Peers that stop announcing expire after two intervals. Each swarm keeps its peers in a dict
ordered by last announce, so expiry only touches expired entries. Every table is capped: beyond the cap a new swarm is
refused and a new peer gets an answer but is not stored, so a flood cannot push out the peers already known.
"""

from __future__ import annotations

import ipaddress
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote_to_bytes

from aiohttp import web

from swarmcast.bencoding import encode as bencode

__all__ = ["InternalTracker", "parse_raw_query"]

# Live-stream swarms churn within minutes; BitTorrent's customary 30 minutes would hand newcomers stale peers.
DEFAULT_INTERVAL: Final = 120
DEFAULT_NUMWANT: Final = 50
MAX_NUMWANT: Final = 200
MAX_SWARMS: Final = 1000
MAX_PEERS_PER_SWARM: Final = 10_000
# A real announce is a few hundred characters; anything much longer is not a BitTorrent client.
MAX_QUERY_CHARS: Final = 4096
MAX_QUERY_PARAMS: Final = 64

NOT_AUTHORIZED: Final = "Requested download is not authorized for use with this tracker."

_DIGITS = re.compile(rb"[0-9]{1,20}")
_EVENTS: Final = {b"": None, b"started": "started", b"completed": "completed", b"stopped": "stopped"}


class _BadRequestError(Exception):
    """The announce cannot be served; the message goes back as the failure reason."""


def _failure(reason: str) -> bytes:
    return bencode({b"failure reason": reason.encode()})


@dataclass(slots=True)
class _Peer:
    peer_id: bytes
    seeder: bool
    expires: float


@dataclass(slots=True)
class _Swarm:
    # Insertion order = order of last announce, oldest first (re-announcing moves a peer to the end).
    peers: dict[tuple[str, int], _Peer] = field(default_factory=dict)
    seeders: int = 0

    def remove(self, key: tuple[str, int]) -> None:
        peer = self.peers.pop(key, None)
        if peer is not None and peer.seeder:
            self.seeders -= 1

    def expire(self, now: float) -> None:
        while self.peers:
            key, peer = next(iter(self.peers.items()))
            if peer.expires > now:
                return
            self.remove(key)


@dataclass(frozen=True, slots=True)
class _Announce:
    info_hash: bytes
    peer_id: bytes
    port: int
    left: int | None
    event: str | None
    numwant: int
    compact: bool
    no_peer_id: bool


def _as_bytes(value: str | bytes) -> bytes:
    # Text values come from callers that decoded the query as latin-1 (byte-preserving); anything else is not binary.
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise _BadRequestError(f"parameter is not a byte string: {value[:40]!r}") from exc


def _integer(params: Mapping[str, str | bytes], name: str, default: int | None, *, maximum: int) -> int | None:
    raw = params.get(name)
    if raw is None or raw in ("", b""):
        return default
    digits = _as_bytes(raw)
    if not _DIGITS.fullmatch(digits) or int(digits) > maximum:
        raise _BadRequestError(f"invalid {name}: expected an integer in 0..{maximum}")
    return int(digits)


def parse_raw_query(raw_query: str) -> dict[str, bytes]:
    """Percent-decode a raw query string to bytes values (the binary info_hash survives); first occurrence wins."""
    if len(raw_query) > MAX_QUERY_CHARS:
        raise ValueError(f"query string longer than {MAX_QUERY_CHARS} characters")
    params: dict[str, bytes] = {}
    for count, item in enumerate(raw_query.split("&")):
        if count >= MAX_QUERY_PARAMS:
            raise ValueError(f"more than {MAX_QUERY_PARAMS} query parameters")
        if not item:
            continue
        key, _, value = item.partition("=")
        # "+" is a space in form encoding; clients escape a literal "+" byte as %2B.
        name = unquote_to_bytes(key.replace("+", " ")).decode("latin-1")
        params.setdefault(name, unquote_to_bytes(value.replace("+", " ")))
    return params


class InternalTracker:
    """In-memory HTTP tracker; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        interval: int = DEFAULT_INTERVAL,
        allowed_info_hashes: set[bytes] | None = None,
        max_swarms: int = MAX_SWARMS,
        max_peers_per_swarm: int = MAX_PEERS_PER_SWARM,
        default_numwant: int = DEFAULT_NUMWANT,
        max_numwant: int = MAX_NUMWANT,
        rng: random.Random | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.interval = interval
        #: None = any info_hash; otherwise only these (may be replaced at run time).
        self.allowed_info_hashes = allowed_info_hashes
        self.max_swarms = max_swarms
        self.max_peers_per_swarm = max_peers_per_swarm
        self.default_numwant = default_numwant
        self.max_numwant = max_numwant
        self._rng = rng or random.Random()
        self._swarms: dict[bytes, _Swarm] = {}

    # ---------------------------------------------------------------------------------------------------------------
    # Introspection (metrics, tests)

    @property
    def swarm_count(self) -> int:
        return len(self._swarms)

    def peers(self, info_hash: bytes) -> list[tuple[str, int]]:
        swarm = self._swarms.get(info_hash)
        return list(swarm.peers) if swarm else []

    def expire(self, now: float) -> None:
        """Drop expired peers and empty swarms everywhere (announces only clean their own swarm)."""
        for info_hash in list(self._swarms):
            swarm = self._swarms[info_hash]
            swarm.expire(now)
            if not swarm.peers:
                del self._swarms[info_hash]

    # ---------------------------------------------------------------------------------------------------------------
    # Sans-IO core

    def handle_announce(self, params: Mapping[str, str | bytes], remote_ip: str, now: float) -> bytes:
        """Serve one announce; always returns a bencoded body (a failure reason when the request is refused)."""
        try:
            request = self._parse(params)
            address = self._address(remote_ip)
            return self._announce(request, address, now)
        except _BadRequestError as exc:
            return _failure(str(exc))

    def _parse(self, params: Mapping[str, str | bytes]) -> _Announce:
        raw_hash = params.get("info_hash")
        if raw_hash is None:
            raise _BadRequestError("missing info_hash")
        info_hash = _as_bytes(raw_hash)
        if len(info_hash) != 20:
            raise _BadRequestError(f"invalid info_hash: expected 20 bytes, got {len(info_hash)}")
        # Checked before the other parameters so that a refused hash always gets the same answer (as opentracker).
        if self.allowed_info_hashes is not None and info_hash not in self.allowed_info_hashes:
            raise _BadRequestError(NOT_AUTHORIZED)
        raw_peer_id = params.get("peer_id")
        if raw_peer_id is None:
            raise _BadRequestError("missing peer_id")
        peer_id = _as_bytes(raw_peer_id)
        if len(peer_id) != 20:
            raise _BadRequestError(f"invalid peer_id: expected 20 bytes, got {len(peer_id)}")
        port = _integer(params, "port", None, maximum=65535)
        if port is None:
            raise _BadRequestError("missing port")
        if port == 0:
            raise _BadRequestError("invalid port: 0")
        # uploaded/downloaded are validated for the client's sake but not kept: we keep no statistics per peer.
        _integer(params, "uploaded", 0, maximum=2**64 - 1)
        _integer(params, "downloaded", 0, maximum=2**64 - 1)
        left = _integer(params, "left", None, maximum=2**64 - 1)
        raw_event = _as_bytes(params.get("event", b""))
        if raw_event not in _EVENTS:
            raise _BadRequestError(f"invalid event: {raw_event[:20]!r}")
        numwant = _integer(params, "numwant", self.default_numwant, maximum=2**32 - 1)
        assert numwant is not None
        compact = _as_bytes(params.get("compact", b"1")) != b"0"
        no_peer_id = _as_bytes(params.get("no_peer_id", b"0")) == b"1"
        return _Announce(info_hash, peer_id, port, left, _EVENTS[raw_event], min(numwant, self.max_numwant),
                         compact, no_peer_id)

    @staticmethod
    def _address(remote_ip: str) -> str:
        try:
            address = ipaddress.ip_address(remote_ip)
        except ValueError as exc:
            raise _BadRequestError("cannot determine your address") from exc
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; other peers need the plain IPv4 form.
            address = address.ipv4_mapped
        return str(address)

    def _swarm_for(self, info_hash: bytes, now: float) -> _Swarm:
        swarm = self._swarms.get(info_hash)
        if swarm is not None:
            return swarm
        if len(self._swarms) >= self.max_swarms:
            self.expire(now)  # full sweep only when at the cap, so its cost is paid rarely
            if len(self._swarms) >= self.max_swarms:
                raise _BadRequestError("tracker is full: too many torrents")
        swarm = self._swarms[info_hash] = _Swarm()
        return swarm

    def _announce(self, request: _Announce, address: str, now: float) -> bytes:
        key = (address, request.port)
        if request.event == "stopped":
            swarm = self._swarms.get(request.info_hash)
            if swarm is not None:
                swarm.remove(key)
                swarm.expire(now)
                if not swarm.peers:
                    del self._swarms[request.info_hash]
            return self._response(swarm, key, 0, request)

        swarm = self._swarm_for(request.info_hash, now)
        swarm.expire(now)
        swarm.remove(key)  # re-inserted below at the young end of the expiry order
        if len(swarm.peers) < self.max_peers_per_swarm:
            # No "left" means the client did not say; treat it as still downloading (it wants peers).
            seeder = request.left == 0 or request.event == "completed"
            swarm.peers[key] = _Peer(request.peer_id, seeder, now + 2 * self.interval)
            swarm.seeders += seeder
        return self._response(swarm, key, request.numwant, request)

    def _response(self, swarm: _Swarm | None, requester: tuple[str, int], numwant: int, request: _Announce) -> bytes:
        peers = swarm.peers if swarm is not None else {}
        # One extra so that dropping the requester still leaves numwant.
        chosen = [k for k in self._rng.sample(list(peers), min(numwant + 1, len(peers))) if k != requester][:numwant]
        seeders = swarm.seeders if swarm is not None else 0
        body: dict[bytes, object] = {
            b"interval": self.interval,
            b"complete": seeders,
            b"incomplete": len(peers) - seeders,
        }
        if request.compact:
            v4, v6 = bytearray(), bytearray()
            for ip, port in chosen:
                packed = ipaddress.ip_address(ip).packed
                (v4 if len(packed) == 4 else v6).extend(packed + port.to_bytes(2, "big"))
            body[b"peers"] = bytes(v4)
            if v6:
                body[b"peers6"] = bytes(v6)
        else:
            body[b"peers"] = [self._peer_dict(ip, port, peers[(ip, port)], request.no_peer_id) for ip, port in chosen]
        return bencode(body)

    @staticmethod
    def _peer_dict(ip: str, port: int, peer: _Peer, no_peer_id: bool) -> dict[bytes, object]:
        entry: dict[bytes, object] = {b"ip": ip.encode(), b"port": port}
        if not no_peer_id:
            entry[b"peer id"] = peer.peer_id
        return entry

    # ---------------------------------------------------------------------------------------------------------------
    # aiohttp edge

    def add_routes(
        self, app: web.Application, *, path: str = "/announce",
        authorize: Callable[[web.Request], bool] | None = None,
    ) -> None:  # fmt: skip
        """Serve announces at ``path``; with ``authorize``, only requests it accepts (a node's access token)."""

        async def handle(request: web.Request) -> web.Response:
            if authorize is not None and not authorize(request):
                return web.Response(body=_failure("invalid access token"), status=403, content_type="text/plain")
            return await self.handle_request(request)

        app.router.add_get(path, handle)

    async def handle_request(self, request: web.Request) -> web.Response:
        # aiohttp's request.query decodes values as UTF-8 text, which corrupts a binary info_hash: decode ourselves.
        try:
            params: Mapping[str, str | bytes] = parse_raw_query(request.rel_url.raw_query_string)
        except ValueError as exc:
            body = _failure(str(exc))
        else:
            body = self.handle_announce(params, request.remote or "", time.monotonic())
        # BitTorrent clients expect failures as a 200 with a bencoded "failure reason", not an HTTP error status.
        return web.Response(body=body, content_type="text/plain")
