"""BitTorrent tracker protocols, sans-IO: HTTP (BEP 3, 23, 7) and UDP (BEP 15).

Nothing here opens a socket or reads a clock. Callers build request bytes/URLs with the ``encode_*``/``build_*``
functions and hand whatever the network returned to the ``parse_*`` functions, which either return a typed value or
raise :class:`TrackerError`. Every length read off the wire is checked against a named maximum first, and any
malformed input (including whatever the bencode decoder chokes on) surfaces as :class:`TrackerError` and nothing
else, so a hostile tracker cannot crash the caller.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any
from urllib.parse import quote_from_bytes, urlsplit, urlunsplit

from swarmcast import bencoding

__all__ = [
    "MAX_HTTP_RESPONSE_BYTES",
    "MAX_PEERS",
    "UDP_PROTOCOL_ID",
    "AnnounceEvent",
    "AnnounceRequest",
    "AnnounceResponse",
    "TrackerError",
    "TransactionIdMismatchError",
    "UdpAction",
    "build_announce_url",
    "encode_udp_announce_request",
    "encode_udp_connect_request",
    "parse_announce_response",
    "parse_udp_announce_response",
    "parse_udp_connect_response",
]

# A tracker answer carrying a sane number of peers is a few KiB; anything far larger is a broken or hostile tracker.
MAX_HTTP_RESPONSE_BYTES = 64 * 1024
# More addresses than any caller can use in one announce interval; extra ones are dropped, not an error.
MAX_PEERS = 2000
# Longest failure/warning text we keep; it ends up in logs.
MAX_MESSAGE_CHARS = 512

INFO_HASH_LEN = 20
PEER_ID_LEN = 20

# BEP 15 magic constant that opens every connect request.
UDP_PROTOCOL_ID = 0x41727101980

_UDP_CONNECT_REQUEST = struct.Struct(">QII")  # protocol_id, action, transaction_id
_UDP_HEADER = struct.Struct(">II")  # action, transaction_id (starts every response)
_UDP_CONNECT_RESPONSE = struct.Struct(">IIQ")  # action, transaction_id, connection_id
# connection_id, action, transaction_id, info_hash, peer_id, downloaded, left, uploaded, event, ip, key, num_want, port
_UDP_ANNOUNCE_REQUEST = struct.Struct(">QII20s20sQQQIIIiH")
_UDP_ANNOUNCE_RESPONSE = struct.Struct(">IIIII")  # action, transaction_id, interval, leechers, seeders
_COMPACT_V4 = struct.Struct(">4sH")
_COMPACT_V6 = struct.Struct(">16sH")

_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF


class TrackerError(Exception):
    """The tracker refused the announce or answered something we cannot use."""


class TransactionIdMismatchError(TrackerError):
    """A UDP datagram answered some other transaction (stale retransmit or spoofed); ignore it and keep waiting."""


class AnnounceEvent(IntEnum):
    """Announce events; the values are the BEP 15 wire codes."""

    NONE = 0
    COMPLETED = 1
    STARTED = 2
    STOPPED = 3


class UdpAction(IntEnum):
    """BEP 15 actions."""

    CONNECT = 0
    ANNOUNCE = 1
    SCRAPE = 2
    ERROR = 3


_HTTP_EVENT_NAMES: dict[AnnounceEvent, str] = {
    AnnounceEvent.COMPLETED: "completed",
    AnnounceEvent.STARTED: "started",
    AnnounceEvent.STOPPED: "stopped",
}


@dataclass(frozen=True, slots=True)
class AnnounceRequest:
    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: AnnounceEvent
    numwant: int = 50

    def __post_init__(self) -> None:
        # These come from our own code, so a bad value is a bug: fail loudly at construction.
        if len(self.info_hash) != INFO_HASH_LEN:
            raise ValueError(f"info_hash must be {INFO_HASH_LEN} bytes, got {len(self.info_hash)}")
        if len(self.peer_id) != PEER_ID_LEN:
            raise ValueError(f"peer_id must be {PEER_ID_LEN} bytes, got {len(self.peer_id)}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        for name in ("uploaded", "downloaded", "left"):
            value = getattr(self, name)
            if not 0 <= value <= _U64:
                raise ValueError(f"{name} must be in 0..2**64-1, got {value}")
        if not 0 <= self.numwant <= MAX_PEERS:
            raise ValueError(f"numwant must be in 0..{MAX_PEERS}, got {self.numwant}")


@dataclass(frozen=True, slots=True)
class AnnounceResponse:
    interval: int
    peers: tuple[tuple[str, int], ...]
    complete: int | None
    incomplete: int | None


# --------------------------------------------------------------------------------------------------------------------
# HTTP (BEP 3, BEP 23 compact peers, BEP 7 peers6)


def _quote(value: bytes) -> str:
    # BEP 3: binary values are URL-encoded byte by byte; safe="" so "/" inside a hash is escaped too.
    return quote_from_bytes(value, safe="")


def build_announce_url(tracker_url: str, request: AnnounceRequest, *, compact: bool = True) -> str:
    """The GET URL for an HTTP announce; query parameters already in ``tracker_url`` (passkeys) are kept.

    The result is fully percent-encoded; hand it to an HTTP client without letting it re-encode
    (with aiohttp: ``yarl.URL(url, encoded=True)``).
    """
    parts = urlsplit(tracker_url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an HTTP tracker URL: {tracker_url!r}")
    params = [
        ("info_hash", _quote(request.info_hash)),
        ("peer_id", _quote(request.peer_id)),
        ("port", str(request.port)),
        ("uploaded", str(request.uploaded)),
        ("downloaded", str(request.downloaded)),
        ("left", str(request.left)),
        ("numwant", str(request.numwant)),
        ("compact", "1" if compact else "0"),
    ]
    if compact:
        params.append(("no_peer_id", "1"))
    if request.event is not AnnounceEvent.NONE:
        params.append(("event", _HTTP_EVENT_NAMES[request.event]))
    ours = "&".join(f"{key}={value}" for key, value in params)
    query = f"{parts.query}&{ours}" if parts.query else ours
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value[: MAX_MESSAGE_CHARS * 4].decode("utf-8", "replace")[:MAX_MESSAGE_CHARS]
    return repr(value)[:MAX_MESSAGE_CHARS]


def _optional_count(response: dict[Any, Any], key: bytes) -> int | None:
    value = response.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or value < 0:
        raise TrackerError(f"tracker response field {key.decode()!r} is not a non-negative integer")
    return value


def _compact_peers(blob: bytes, entry: struct.Struct, family: type[ipaddress.IPv4Address | ipaddress.IPv6Address],
                   key: str) -> list[tuple[str, int]]:
    if len(blob) % entry.size:
        raise TrackerError(f"tracker {key!r} string length {len(blob)} is not a multiple of {entry.size}")
    peers: list[tuple[str, int]] = []
    # Slice before unpacking so a huge list costs nothing beyond the cap.
    for raw_ip, port in entry.iter_unpack(blob[: entry.size * MAX_PEERS]):
        if port:  # port 0 cannot be connected to
            peers.append((str(family(raw_ip)), port))
    return peers


def _dict_peers(items: list[Any]) -> list[tuple[str, int]]:
    peers: list[tuple[str, int]] = []
    for item in items[:MAX_PEERS]:
        if not isinstance(item, dict):
            raise TrackerError("tracker peer list entry is not a dictionary")
        raw_ip, port = item.get(b"ip"), item.get(b"port")
        if not isinstance(raw_ip, bytes) or not isinstance(port, int):
            raise TrackerError("tracker peer list entry lacks a string 'ip' or an integer 'port'")
        if not 0 < port < 65536:
            raise TrackerError(f"tracker peer list entry has port {port} out of range")
        try:
            address = ipaddress.ip_address(raw_ip.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            # BEP 3 allows DNS names here; resolving them is I/O and lets a tracker aim us at arbitrary hosts.
            continue
        peers.append((str(address), port))
    return peers


def parse_announce_response(body: bytes) -> AnnounceResponse:
    """Parse a bencoded HTTP announce answer; raises :class:`TrackerError` for refusals and malformed bodies."""
    if len(body) > MAX_HTTP_RESPONSE_BYTES:
        raise TrackerError(f"tracker response of {len(body)} bytes exceeds {MAX_HTTP_RESPONSE_BYTES}")
    try:
        # Key order is not checked (libtorrent and Transmission do not either): it changes no meaning here.
        decoded = bencoding.decode(body, max_size=MAX_HTTP_RESPONSE_BYTES, sorted_keys=False)
    except bencoding.BencodeError as exc:
        raise TrackerError(f"tracker response is not valid bencode: {exc}") from exc
    if not isinstance(decoded, dict):
        raise TrackerError("tracker response is not a bencoded dictionary")
    if b"failure reason" in decoded:
        raise TrackerError(_text(decoded[b"failure reason"]))
    interval = decoded.get(b"interval")
    if not isinstance(interval, int) or interval < 0:
        raise TrackerError("tracker response lacks a non-negative integer 'interval'")
    complete = _optional_count(decoded, b"complete")
    incomplete = _optional_count(decoded, b"incomplete")

    peers: list[tuple[str, int]] = []
    raw_peers = decoded.get(b"peers", b"")
    if isinstance(raw_peers, bytes):
        peers.extend(_compact_peers(raw_peers, _COMPACT_V4, ipaddress.IPv4Address, "peers"))
    elif isinstance(raw_peers, list):
        peers.extend(_dict_peers(raw_peers))
    else:
        raise TrackerError("tracker 'peers' is neither a string nor a list")
    raw_peers6 = decoded.get(b"peers6", b"")
    if not isinstance(raw_peers6, bytes):
        raise TrackerError("tracker 'peers6' is not a string")
    peers.extend(_compact_peers(raw_peers6, _COMPACT_V6, ipaddress.IPv6Address, "peers6"))

    return AnnounceResponse(
        interval=min(interval, _U32),
        peers=tuple(dict.fromkeys(peers))[:MAX_PEERS],
        complete=complete,
        incomplete=incomplete,
    )


# --------------------------------------------------------------------------------------------------------------------
# UDP (BEP 15)


def encode_udp_connect_request(transaction_id: int) -> bytes:
    return _UDP_CONNECT_REQUEST.pack(UDP_PROTOCOL_ID, UdpAction.CONNECT, transaction_id)


def _check_udp_header(data: bytes, transaction_id: int, expected: UdpAction) -> None:
    """Validate action and transaction id; an error datagram for our transaction becomes TrackerError."""
    if len(data) < _UDP_HEADER.size:
        raise TrackerError(f"UDP tracker datagram of {len(data)} bytes is too short")
    action, got_tid = _UDP_HEADER.unpack_from(data)
    if got_tid != transaction_id:
        raise TransactionIdMismatchError(f"UDP transaction id {got_tid:#010x}, expected {transaction_id:#010x}")
    if action == UdpAction.ERROR:
        raise TrackerError(_text(data[_UDP_HEADER.size :]))
    if action != expected:
        raise TrackerError(f"UDP tracker answered action {action}, expected {expected.value} ({expected.name})")


def parse_udp_connect_response(data: bytes, transaction_id: int) -> int:
    """Return the connection id from a connect response."""
    _check_udp_header(data, transaction_id, UdpAction.CONNECT)
    if len(data) < _UDP_CONNECT_RESPONSE.size:
        raise TrackerError(f"UDP connect response of {len(data)} bytes is shorter than {_UDP_CONNECT_RESPONSE.size}")
    _action, _tid, connection_id = _UDP_CONNECT_RESPONSE.unpack_from(data)
    return int(connection_id)


def encode_udp_announce_request(connection_id: int, transaction_id: int, request: AnnounceRequest, *,
                                key: int = 0) -> bytes:
    return _UDP_ANNOUNCE_REQUEST.pack(
        connection_id,
        UdpAction.ANNOUNCE,
        transaction_id,
        request.info_hash,
        request.peer_id,
        request.downloaded,
        request.left,
        request.uploaded,
        request.event,
        0,  # ip: 0 = use the sender's address (anything else is ignored by sane trackers)
        key,
        request.numwant,
        request.port,
    )


def parse_udp_announce_response(data: bytes, transaction_id: int) -> AnnounceResponse:
    """Parse an announce response; peers are IPv4 (BEP 15 sends IPv6 only when asked over IPv6, unsupported)."""
    _check_udp_header(data, transaction_id, UdpAction.ANNOUNCE)
    if len(data) == _UDP_HEADER.size:
        # Not in BEP 15, but what opentracker sends when it will not take the announce (info_hash not whitelisted):
        # an announce header with nothing after it. Over HTTP the same refusal carries a failure reason.
        raise TrackerError("UDP tracker refused the announce without a reason (info_hash not allowed?)")
    if len(data) < _UDP_ANNOUNCE_RESPONSE.size:
        raise TrackerError(f"UDP announce response of {len(data)} bytes is shorter than {_UDP_ANNOUNCE_RESPONSE.size}")
    _action, _tid, interval, leechers, seeders = _UDP_ANNOUNCE_RESPONSE.unpack_from(data)
    peers = _compact_peers(data[_UDP_ANNOUNCE_RESPONSE.size :], _COMPACT_V4, ipaddress.IPv4Address, "peers")
    return AnnounceResponse(
        interval=interval,
        peers=tuple(dict.fromkeys(peers)),
        complete=seeders,
        incomplete=leechers,
    )
