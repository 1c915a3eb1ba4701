"""The first bytes of an accepted connection: access (node/access.py), admission, then the peer protocol or aiohttp.

HTTP requests are read here up to the end of their headers (within the admission's header deadline), so a client
that drips its headers holds only an HTTP slot and only until that deadline, and aiohttp sees whole request heads.
A request line that is not HTTP/1.x (HTTP/0.9 has no version and no headers, TLS and garbage no request line) is
closed without an answer as soon as that is recognisable.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, cast

from swarmcast.node.webaccess import is_tracker_path
from swarmcast.wire.messages import PROTOCOL_MAGIC

if TYPE_CHECKING:
    from swarmcast.node.host import PeerHost

# The node's web interface takes small GET requests only: a request head longer than this is not one of ours.
MAX_REQUEST_HEAD = 16 * 1024
_REQUEST_LINE = re.compile(rb"[A-Z]{1,16} [!-~]{1,8192} HTTP/1\.[01]\r?")
_REQUEST_LINE_START = re.compile(rb"[A-Z]{1,16}(?: [ -~]*)?\r?\Z")
WEB_REFUSED = "web interface from a remote address"
HTTP_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
HTTP_HEAD_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class HttpConnection(asyncio.Protocol):
    """aiohttp's handler for one connection, wrapped so admission learns when it ends."""

    def __init__(self, host: PeerHost, key: int, inner: asyncio.Protocol) -> None:
        self._host = host
        self._key = key
        self._inner = inner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._host.on_expiry(self._key, cast(asyncio.Transport, transport).abort)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._host.forget(self._key)
        self._inner.connection_lost(exc)


class DemuxProtocol(asyncio.Protocol):
    """Admits an accepted connection, looks at its first bytes and hands it to the peer protocol or to aiohttp."""

    def __init__(self, host: PeerHost) -> None:
        self._host = host
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._key: int | None = None
        self._http = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = self._transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else ""
        # Private node and ip filter first (node/access.py): by address alone, before a byte is read.
        access = self._host.access.admit(ip)
        if not access.admitted:
            self._host.note_refusal(access.reason, ip)
            self._transport.abort()
            return
        key, verdict = self._host.admission.accept(ip, time.monotonic())
        self._host.evict(verdict.evict)
        if key is None:
            self._host.note_refusal(verdict.reason, ip)
            self._transport.abort()
            return
        self._key = key
        self._host.on_expiry(key, self._transport.abort)
        self._host.track(key, ip, self._transport, access.groups)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        if self._key is None:
            return
        self._buffer += data
        if not self._http:
            prefix = self._buffer[: len(PROTOCOL_MAGIC)]
            if PROTOCOL_MAGIC.startswith(prefix) and len(prefix) < len(PROTOCOL_MAGIC):
                return  # could still be either
            if prefix == PROTOCOL_MAGIC:
                self._to_peer()
                return
            verdict = self._host.admission.to_http(self._key, time.monotonic())
            self._host.evict(verdict.evict)
            if not verdict.admitted:
                self._host.note_refusal(verdict.reason, self._peer_ip())
                self._transport.write(HTTP_BUSY)
                self._transport.close()
                return
            self._http = True
        self._read_request_head()

    def _local_ip(self) -> str:
        local = self._transport.get_extra_info("sockname") if self._transport is not None else None
        return str(local[0]) if local else ""

    def _peer_ip(self) -> str:
        assert self._transport is not None
        peer = self._transport.get_extra_info("peername")
        return str(peer[0]) if peer else ""

    def _to_peer(self) -> None:
        assert self._transport is not None
        assert self._key is not None
        verdict = self._host.admission.to_peer(self._key, time.monotonic())
        self._host.evict(verdict.evict)
        if not verdict.admitted:
            self._host.note_refusal(verdict.reason, self._peer_ip())
            self._transport.abort()
            return
        self._hand_over(self._host.peer_protocol(self._key))

    def _read_request_head(self) -> None:
        assert self._transport is not None
        assert self._key is not None
        line_end = self._buffer.find(b"\n")
        if line_end < 0:
            if len(self._buffer) > MAX_REQUEST_HEAD or not _REQUEST_LINE_START.match(self._buffer):
                self._transport.close()  # not the start of a request line: no need to wait for the rest
            return
        request_line = self._buffer[:line_end]
        if not _REQUEST_LINE.fullmatch(request_line):
            self._transport.close()  # HTTP/0.9 or not HTTP at all: nothing we could answer it would understand
            return
        # The web interface's access rule (node/webaccess.py): the internal tracker is open to all.
        target = request_line.split(b" ")[1].decode("ascii")
        if not is_tracker_path(target) and not self._host.web_allowed(self._peer_ip(), self._local_ip()):
            self._host.note_refusal(WEB_REFUSED, self._peer_ip())
            self._transport.abort()  # closed with no answer: nothing tells a scanner what listens here
            return
        if b"\r\n\r\n" not in self._buffer and b"\n\n" not in self._buffer:
            if len(self._buffer) > MAX_REQUEST_HEAD:
                self._transport.write(HTTP_HEAD_TOO_LARGE)
                self._transport.close()
            return
        self._host.admission.http_ready(self._key, time.monotonic())
        self._hand_over(HttpConnection(self._host, self._key, self._host.http_server()))

    def _hand_over(self, protocol: asyncio.Protocol) -> None:
        assert self._transport is not None
        self._key = None  # the new protocol owns the admission key from now on
        self._transport.set_protocol(protocol)
        protocol.connection_made(self._transport)
        if not self._transport.is_closing():
            protocol.data_received(self._buffer)
        self._buffer = b""

    def connection_lost(self, exc: Exception | None) -> None:
        if self._key is not None:
            self._host.forget(self._key)
