"""MPEG-TS over HTTP as a source, with reconnects.

``read_ts_source`` yields chunks of the stream for as long as it runs: when the server closes the stream, errors,
answers something that is not MPEG-TS (swarmcast.ingest.sniff: an HTML page, an HLS playlist), or sends nothing for
``read_timeout`` seconds (``--source-read-timeout``), it waits ``reconnect_interval`` (fixed, see
swarmcast.ingest.reconnect) and tries again, for ever: the source never gives up on its input. A connection attempt
itself is bounded by ``CONNECT_TIMEOUT``. Nothing of a connection is yielded until its first bytes are known to be
TS, so a non-TS input publishes no piece.

Every failure is logged from the first attempt in words an operator can act on (connection refused, DNS, HTTP
status, not MPEG-TS, no data), then summarised every ``LOG_EVERY`` seconds (at once when the failure changes: an
operator fixing the input sees each step), and kept in the ``InputStatus`` the monitor shows. The consumer is
told of each reconnect through ``on_reconnect`` so it can mark a discontinuity; the broadcast itself (content id,
piece numbering) carries on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import aiohttp

from swarmcast.ingest.reconnect import ReconnectPolicy, note_connected, note_failed
from swarmcast.ingest.sniff import SNIFF_BYTES, sniff
from swarmcast.ingest.status import InputStatus

log = logging.getLogger("swarmcast.ingest")

CHUNK_SIZE = 64 * 1024
# Seconds a TCP connect to the input may take: a black-holed input must not stretch an attempt to the OS's
# two-minute SYN timeout; 3 s covers the first SYN retransmit (1 s) with room for a slow path.
CONNECT_TIMEOUT = 3.0
DEFAULT_READ_TIMEOUT = 10.0  # --source-read-timeout: seconds without a byte before the input counts as lost
MAX_REASON_CHARS = 300  # of one error line (a server's reason phrase is its own choice)


def source_url_problem(url: str) -> str | None:
    """Why ``url`` can never be read as an input (None if it can be tried): checked once, at start."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError when out of range)
    except ValueError as error:
        return f"{url[:200]!r} is not a URL ({error})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url[:200]!r} is not an http:// or https:// URL (the source reads MPEG-TS over HTTP)"
    return None


class InputError(Exception):
    """The input answered, but not with a stream we can use; the message says why."""


class HlsInputError(InputError):
    """The input answered with an HLS playlist: ``read_ts_source`` ends with it so the HLS reader takes over."""


def describe_error(error: BaseException, read_timeout: float) -> str:
    """One line saying why an attempt failed, in the operator's terms (not aiohttp's class names)."""
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve host {error.host!r} (DNS: {error.os_error.strerror or error.os_error})"
    if isinstance(error, aiohttp.ClientConnectorError):
        os_error = error.os_error
        if isinstance(os_error, ConnectionRefusedError):
            return f"connection refused by {error.host}:{error.port} (nothing listens there?)"
        return f"cannot connect to {error.host}:{error.port}: {os_error.strerror or os_error}"
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return f"no answer within {CONNECT_TIMEOUT:g} s (connect timeout)"
    if isinstance(error, aiohttp.SocketTimeoutError | TimeoutError):
        return f"no data for {read_timeout:g} s (--source-read-timeout): input lost"
    if isinstance(error, aiohttp.InvalidURL):
        return f"bad input URL: {error}"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def _first_bytes(response: aiohttp.ClientResponse) -> bytes:
    """The connection's first bytes once they are known to be TS; InputError (with what they look like) if not."""
    data = b""
    content_type = response.headers.get("Content-Type")
    while True:
        chunk = await response.content.readany()
        data += chunk
        verdict = sniff(data, content_type, ended=not chunk)
        if verdict.is_ts:
            return data
        if verdict.is_ts is False:
            raise HlsInputError(verdict.reason) if verdict.hls else InputError(verdict.reason)
        assert len(data) < SNIFF_BYTES  # sniff's answer is final from SNIFF_BYTES on


async def read_ts_source(
    url: str,
    *,
    reconnect_interval: float = 1.0,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    on_reconnect: Callable[[], None] | None = None,
    status: InputStatus | None = None,
) -> AsyncIterator[bytes]:
    policy = ReconnectPolicy(reconnect_interval)
    status = status if status is not None else InputStatus(url)
    ever_connected = False
    # Kinds of failure (numbers aside) logged in this outage: a new kind is logged at once, a flapping input that
    # alternates between two kinds is not logged at every attempt.
    logged_kinds: set[str] = set()
    timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=read_timeout)
    # auto_decompress off: a TS input is never compressed, and a compressed answer is then not taken for TS.
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        while True:
            received = 0
            reason: str
            try:
                async with session.get(url) as response:
                    if response.status != 200:
                        raise InputError(f"HTTP {response.status} {response.reason or ''}".rstrip())
                    head = await _first_bytes(response)
                    note_connected(policy, status, logged_kinds, url=url, what="MPEG-TS", reconnected=ever_connected,
                                   on_reconnect=on_reconnect)  # fmt: skip
                    ever_connected = True
                    received = len(head)
                    status.bytes_received += len(head)
                    yield head
                    async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                        received += len(chunk)
                        status.bytes_received += len(chunk)
                        yield chunk
                reason = f"the input ended after {received} bytes"
            except HlsInputError:
                raise  # ingest/hls.py's read_source reads it as HLS
            except InputError as error:
                reason = str(error)
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                reason = describe_error(error, read_timeout)
            reason = reason[:MAX_REASON_CHARS]
            delay = note_failed(policy, status, logged_kinds, url=url, reason=reason)
            await asyncio.sleep(delay)
