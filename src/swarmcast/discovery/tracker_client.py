"""One announce to one tracker over HTTP(S) or UDP: thin I/O glue around :mod:`tracker_protocol`.

Every failure (refusal, malformed answer, network error, timeout) comes out as :class:`TrackerError`, so callers
handle exactly one exception type; an unsupported URL is our misuse and raises :class:`ValueError`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

import aiohttp
import yarl

from swarmcast.discovery.tracker_protocol import (
    MAX_HTTP_RESPONSE_BYTES,
    AnnounceRequest,
    AnnounceResponse,
    TrackerError,
    TransactionIdMismatchError,
    build_announce_url,
    encode_udp_announce_request,
    encode_udp_connect_request,
    parse_announce_response,
    parse_udp_announce_response,
    parse_udp_connect_response,
)

__all__ = ["SUPPORTED_SCHEMES", "UDP_TRIES", "announce", "check_tracker_url"]

SUPPORTED_SCHEMES = frozenset({"http", "https", "udp"})

# BEP 15 retransmits after 15 * 2**n seconds, for up to an hour: right for the Internet, useless for a node that must
# move on within ``timeout``. We keep the doubling but squeeze it into the timeout: tries wait 1/7, 2/7 and 4/7 of it.
UDP_TRIES = 3
_UDP_QUEUE_LIMIT = 16  # datagrams waiting to be read; more means someone is flooding the socket, drop them

_T = TypeVar("_T")


def check_tracker_url(url: str) -> str:
    """Return the URL's scheme, or raise ValueError naming the URL when we cannot announce to it."""
    parts = urlsplit(url)
    if parts.scheme not in SUPPORTED_SCHEMES:
        raise ValueError(f"unsupported tracker URL {url!r}: scheme must be one of {sorted(SUPPORTED_SCHEMES)}")
    if not parts.hostname:
        raise ValueError(f"tracker URL {url!r} has no host")
    try:
        port = parts.port  # raises ValueError past 65535 (and for a port that is not a number)
    except ValueError:
        raise ValueError(f"tracker URL {url!r} has a port that is not 1..65535") from None
    if port == 0:
        raise ValueError(f"tracker URL {url!r} has port 0, which no tracker listens on")
    if parts.scheme == "udp" and port is None:
        raise ValueError(f"UDP tracker URL {url!r} has no port")
    return parts.scheme


# The timeout is a parameter, not left to the caller's asyncio.timeout, because the UDP retransmit schedule is
# derived from it.
async def announce(url: str, request: AnnounceRequest, *, timeout: float = 10.0,
                   session: aiohttp.ClientSession | None = None,
                   local_address: tuple[str, int] | None = None) -> AnnounceResponse:
    """Announce to the tracker at ``url``; ``session`` (HTTP only) is reused when given, else one is made per call.

    ``local_address``: where the UDP announce (and the HTTP one when no session is given) leaves from. A tracker
    lists the address an announce comes from, so a node bound to one address must announce from it.
    """
    scheme = check_tracker_url(url)
    try:
        async with asyncio.timeout(timeout):
            if scheme == "udp":
                return await _announce_udp(url, request, budget=timeout, local_address=local_address)
            return await _announce_http(url, request, session, budget=timeout, local_address=local_address)
    except TimeoutError as exc:
        raise TrackerError(f"no answer from {url} within {timeout:g} s") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise TrackerError(f"{url}: {exc.__class__.__name__}: {exc}") from exc


# --------------------------------------------------------------------------------------------------------------------
# HTTP


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    # Content-Length may be absent or lie; count what actually arrives (after decompression).
    body = bytearray()
    async for chunk in response.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > MAX_HTTP_RESPONSE_BYTES:
            raise TrackerError(f"tracker response exceeds {MAX_HTTP_RESPONSE_BYTES} bytes")
    return bytes(body)


def session_from(local_address: tuple[str, int] | None) -> aiohttp.ClientSession:
    """An HTTP client whose connections leave from ``local_address`` (None: wherever the system routes them)."""
    if local_address is None:
        return aiohttp.ClientSession()
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=local_address))


async def _announce_http(url: str, request: AnnounceRequest, session: aiohttp.ClientSession | None, *,
                         budget: float, local_address: tuple[str, int] | None = None) -> AnnounceResponse:
    # encoded=True: the URL is already percent-encoded; yarl must send those bytes as they are, not requote them.
    target = yarl.URL(build_announce_url(url, request), encoded=True)
    own_session = session is None
    if session is None:
        session = session_from(local_address)
    try:
        async with session.get(target, timeout=aiohttp.ClientTimeout(total=budget), max_redirects=3) as response:
            body = await _read_capped(response)
            status, reason = response.status, response.reason
    finally:
        if own_session:
            await session.close()
    if status != 200:
        raise TrackerError(f"HTTP {status} {reason} from {url}")
    return parse_announce_response(body)


# --------------------------------------------------------------------------------------------------------------------
# UDP


class _UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes | OSError] = asyncio.Queue(maxsize=_UDP_QUEUE_LIMIT)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if not self.inbox.full():
            self.inbox.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable arrives here as ConnectionRefusedError on a connected socket: fail fast.
        if isinstance(exc, OSError) and not self.inbox.full():
            self.inbox.put_nowait(exc)


async def _udp_exchange(transport: asyncio.DatagramTransport, client: _UdpClient, payload: bytes,
                        parse: Callable[[bytes], _T], *, budget: float) -> _T:
    for attempt in range(UDP_TRIES):
        transport.sendto(payload)
        try:
            async with asyncio.timeout(budget * 2**attempt / (2**UDP_TRIES - 1)):
                while True:
                    item = await client.inbox.get()
                    if isinstance(item, OSError):
                        raise item
                    try:
                        return parse(item)
                    except TransactionIdMismatchError:
                        continue  # a stale answer to an earlier try, or spoofed: keep waiting for ours
        except TimeoutError:
            continue
    raise TimeoutError


async def _announce_udp(url: str, request: AnnounceRequest, *, budget: float,
                        local_address: tuple[str, int] | None = None) -> AnnounceResponse:
    parts = urlsplit(url)
    # Both checked by check_tracker_url.
    assert parts.hostname is not None
    assert parts.port is not None
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        _UdpClient, remote_addr=(parts.hostname, parts.port), local_addr=local_address
    )
    try:
        # Fresh random transaction ids per exchange: BEP 15's defence against spoofed answers.
        connect_tid = secrets.randbits(32)
        connection_id = await _udp_exchange(
            transport, client, encode_udp_connect_request(connect_tid),
            lambda data: parse_udp_connect_response(data, connect_tid), budget=budget,
        )
        announce_tid = secrets.randbits(32)
        return await _udp_exchange(
            transport, client,
            encode_udp_announce_request(connection_id, announce_tid, request),
            lambda data: parse_udp_announce_response(data, announce_tid), budget=budget,
        )
    finally:
        transport.close()
