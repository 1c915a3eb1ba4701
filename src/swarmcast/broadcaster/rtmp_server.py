"""The RTMP ingest: publishers (OBS, ffmpeg) push here; each accepted publish becomes an FLV byte stream.

How this works. One asyncio task per TCP connection reads bytes into ``RtmpFraming`` (rtmp_chunks.py: the
handshake and chunk stream, bounded) and handles the messages it returns. The NetConnection/NetStream commands
are AMF0, decoded and answered with pyrtmp's message classes: ``connect`` gives the application name,
``createStream`` a message stream, ``publish`` the stream name. The application and the name together are the
publish path (``parse_publish_path``), which names the stream id and, optionally, the key. A publish the
``PublishTarget`` (the stream registry) accepts gets ``NetStream.Publish.Start`` and from then on every audio
and video message goes to the publisher as an FLV tag; a refused one gets an error status and the connection is
closed, as nginx-rtmp does.

Limits, each a clear log line and the connection closed: connections at once (``max_connections``), the size of
one message (``max_message_bytes``), the time from accept to an accepted publish (``publish_timeout``: garbage,
silence and a slow-loris handshake all end there), and the time without a media message once publishing
(``stall_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from pyrtmp.amf.serializers import AMF0Deserializer, AMF0Serializer
from pyrtmp.messages import Chunk
from pyrtmp.messages.command import NCConnect, NCCreateStream, NSPublish
from pyrtmp.messages.protocol_control import SetChunkSize, SetPeerBandwidth, WindowAcknowledgementSize
from pyrtmp.messages.user_control import StreamBegin

from swarmcast.broadcaster import flv
from swarmcast.broadcaster.rtmp_chunks import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MessageType,
    RtmpFraming,
    RtmpMessage,
    RtmpProtocolError,
    encode_message,
)

log = logging.getLogger("swarmcast.broadcaster.rtmp")

DEFAULT_MAX_CONNECTIONS: Final = 64
DEFAULT_PUBLISH_TIMEOUT: Final = 10.0  # seconds from accept to an accepted publish
DEFAULT_STALL_TIMEOUT: Final = 10.0  # seconds without audio or video once publishing
OUR_CHUNK_SIZE: Final = 4096
WINDOW_ACK_SIZE: Final = 2_500_000  # what FFmpeg and nginx-rtmp announce
READ_SIZE: Final = 65536
WRITE_TIMEOUT: Final = 10.0  # a peer that does not read our few replies
REFUSED_LOG_INTERVAL: Final = 10.0
STREAM_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RESERVED_IDS: Final = frozenset({"current"})  # /stream/current.m3u8 is the last stream to start
MAX_KEY_LENGTH: Final = 256
# Commands and metadata are a few hundred bytes from OBS and FFmpeg; pyrtmp's AMF0 decoder runs on the event loop
# and took 18 s over a 3.6 MB connect object, so anything bigger is refused before it is decoded.
MAX_COMMAND_BYTES: Final = 64 * 1024
_AMF_TYPES: Final = frozenset({MessageType.COMMAND_AMF0, MessageType.COMMAND_AMF3, MessageType.DATA_AMF0,
                               MessageType.DATA_AMF3})  # fmt: skip
_PUBLISH_STREAM: Final = 1  # the message stream id createStream gives out

# pyrtmp sets each of its loggers to DEBUG at import and warns on every command it does not model (releaseStream,
# FCPublish); we log what matters ourselves.
for _name in ("pyrtmp", "pyrtmp.messages", "pyrtmp.messages.command", "pyrtmp.messages.data",
              "pyrtmp.messages.user_control"):  # fmt: skip
    logging.getLogger(_name).setLevel(logging.ERROR)


class PublishRefusedError(Exception):
    """A publish we will not take; ``str()`` is the reason (logged, and sent to the publisher)."""

    def __init__(self, reason: str, code: str = "NetStream.Publish.BadName") -> None:
        super().__init__(reason)
        self.code = code


class Publisher(Protocol):
    """One accepted publish, as the registry sees it."""

    def feed(self, data: bytes) -> None: ...

    def end(self) -> None: ...


class PublishTarget(Protocol):
    def start_publish(self, stream_id: str, peer: str, close: Callable[[str], None]) -> Publisher:
        """Take a publish of ``stream_id`` (raise PublishRefusedError); ``close(reason)`` ends the connection."""
        ...


@dataclass(frozen=True, slots=True)
class RtmpServerConfig:
    host: str = "127.0.0.1"
    port: int = 1935
    publish_key: str | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT
    stall_timeout: float = DEFAULT_STALL_TIMEOUT


def parse_publish_path(app: str, name: str) -> tuple[str, str | None]:
    """(stream id, key or None) from RTMP's application name and stream name.

    Clients split a URL's path differently (FFmpeg: ``/live/x`` is app "live" and name "x", ``/x`` is app "" and
    name "x", ``/live/x/k`` is app "live/x" and name "k"; OBS: the server URL's path is the app, the stream key
    the name), so both are joined and read as one path: ``[live/]<id>[/<key>]``. A query (``?...``) is dropped.
    """
    path = f"{app.split('?', 1)[0]}/{name.split('?', 1)[0]}"
    parts = [part for part in path.split("/") if part]
    if parts and parts[0] == "live":
        parts = parts[1:]
    if not parts:
        raise PublishRefusedError(f"no stream id in the publish path {path!r} (rtmp://HOST/live/<id>[/<key>])")
    if len(parts) > 2:
        raise PublishRefusedError(f"publish path {path!r} is not [live/]<id>[/<key>]")
    stream_id = parts[0]
    if not STREAM_ID.fullmatch(stream_id) or stream_id in RESERVED_IDS:
        raise PublishRefusedError(f"stream id {stream_id[:80]!r} is not 1..64 letters, digits, '_', '-', '.' "
                                  "starting with a letter or digit (and not 'current')")  # fmt: skip
    key = parts[1] if len(parts) == 2 else None
    if key is not None and len(key) > MAX_KEY_LENGTH:
        raise PublishRefusedError(f"publish key longer than {MAX_KEY_LENGTH} characters")
    return stream_id, key


def check_key(expected: str | None, given: str | None) -> None:
    if expected is None:
        return
    if given is None:
        raise PublishRefusedError("no publish key (rtmp://HOST/live/<id>/<key>)", "NetStream.Publish.Unauthorized")
    # Constant-time: the time a wrong key takes to refuse must not tell how much of it was right.
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise PublishRefusedError("wrong publish key", "NetStream.Publish.Unauthorized")


def _on_status(level: str, code: str, description: str) -> bytes:
    from bitstring import BitStream  # noqa: PLC0415 - pyrtmp's dependency

    data = BitStream()
    AMF0Serializer.create_object(data, "onStatus")
    AMF0Serializer.create_object(data, 0)
    AMF0Serializer.create_object(data, None)
    AMF0Serializer.create_object(data, {"level": level, "code": code, "description": description})
    return bytes(data.bytes)


def _as_pyrtmp(message: RtmpMessage, payload: bytes) -> Chunk:
    return Chunk(chunk_type=0, chunk_id=message.chunk_stream_id, timestamp=message.timestamp,
                 msg_length=len(payload), msg_type_id=message.type_id, msg_stream_id=message.stream_id,
                 payload=payload)  # fmt: skip


class _Closed(Exception):  # noqa: N818 - an ending, not an error
    """The session ends for ``reason`` (logged by the session as it closes; a warning when it is the peer's fault)."""

    def __init__(self, reason: str, *, warning: bool = False) -> None:
        super().__init__(reason)
        self.warning = warning


class _Session:
    """One TCP connection, from accept to close."""

    def __init__(self, server: RtmpServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.config = server.config
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.framing = RtmpFraming(max_message_bytes=self.config.max_message_bytes)
        self.app = ""
        self.stream_id: str | None = None
        self.publisher: Publisher | None = None
        self.closed_by_us: str | None = None
        self.peer_window = 0  # the publisher's Window Acknowledgement Size: we acknowledge every this many bytes
        self.acked = 0
        self.media_messages = 0
        self.out_chunk_size = 128  # until our Set Chunk Size

    def close(self, reason: str) -> None:
        """From the registry (e.g. the pipeline cannot take this codec): end the connection."""
        if self.closed_by_us is None:
            self.closed_by_us = reason
            self.writer.transport.abort()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        last_media = start
        try:
            while True:
                if self.publisher is None:
                    deadline, what = start + self.config.publish_timeout, "no publish"
                    if not self.framing.handshake_done:
                        what = "no RTMP handshake"
                else:
                    deadline, what = last_media + self.config.stall_timeout, "stalled publisher: no media"
                try:
                    async with asyncio.timeout_at(deadline):
                        data = await self.reader.read(READ_SIZE)
                except TimeoutError:
                    limit = self.config.publish_timeout if self.publisher is None else self.config.stall_timeout
                    self._log_end(f"{what} within {limit:g} s ({self.framing.bytes_received} bytes received)")
                    return
                if not data:
                    if self.publisher is None and not self.framing.bytes_received:
                        log.debug("rtmp %s: closed before sending anything", self.peer)  # a port probe
                    else:
                        self._log_end("publisher disconnected" if self.publisher else "closed by the client")
                    return
                before = self.media_messages
                for message in self.framing.feed(data):
                    self._handle(message)
                if self.media_messages != before:
                    last_media = loop.time()
                self._acknowledge()
                out = self.framing.data_to_send()
                if out:
                    self.writer.write(out)
                if self.writer.transport.get_write_buffer_size():
                    try:
                        async with asyncio.timeout(WRITE_TIMEOUT):
                            await self.writer.drain()
                    except TimeoutError:
                        raise _Closed(f"our replies unread for {WRITE_TIMEOUT:g} s", warning=True) from None
        except RtmpProtocolError as error:
            self._log_end(f"protocol error: {error}", warning=True)
        except PublishRefusedError as error:
            what = f"stream {self.stream_id!r}: " if self.stream_id else ""
            log.warning("rtmp %s: %spublish refused: %s", self.peer, what, error)
            self._send_status("error", error.code, str(error))
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self.writer.drain()
        except _Closed as ended:
            self._log_end(str(ended), warning=ended.warning)
        except (ConnectionError, TimeoutError) as error:
            if self.closed_by_us is not None:
                self._log_end(self.closed_by_us, warning=True)
            else:
                self._log_end(f"connection lost: {error!r}")
        finally:
            if self.publisher is not None:
                self.publisher.end()
                self.publisher = None
            self.writer.transport.abort()

    def _log_end(self, reason: str, *, warning: bool = False) -> None:
        if self.closed_by_us is not None:
            reason, warning = self.closed_by_us, True
        what = f"stream {self.stream_id!r}" if self.stream_id else "connection"
        (log.warning if warning else log.info)("rtmp %s: %s closed: %s", self.peer, what, reason)

    def _send(self, type_id: MessageType, payload: bytes, *, stream: int = 0, csid: int = 2) -> None:
        message = RtmpMessage(int(type_id), stream, 0, payload, csid)
        self.writer.write(encode_message(message, self.out_chunk_size))
        if type_id == MessageType.SET_CHUNK_SIZE:
            self.out_chunk_size = int.from_bytes(payload, "big")

    def _send_status(self, level: str, code: str, description: str) -> None:
        self._send(MessageType.COMMAND_AMF0, _on_status(level, code, description[:200]), stream=_PUBLISH_STREAM,
                   csid=5)  # fmt: skip

    def _acknowledge(self) -> None:
        received = self.framing.bytes_received
        if self.peer_window and received - self.acked >= self.peer_window:
            self.acked = received
            self._send(MessageType.ACKNOWLEDGEMENT, (received & 0xFFFFFFFF).to_bytes(4, "big"))

    def _handle(self, message: RtmpMessage) -> None:
        kind = message.type_id
        if kind in _AMF_TYPES and len(message.payload) > MAX_COMMAND_BYTES:
            raise RtmpProtocolError(f"command or data message of {len(message.payload)} bytes, more than the limit "
                                    f"of {MAX_COMMAND_BYTES}")  # fmt: skip
        if kind in (MessageType.AUDIO, MessageType.VIDEO):
            if self.publisher is not None and message.payload:
                tag = flv.TAG_AUDIO if kind == MessageType.AUDIO else flv.TAG_VIDEO
                self.media_messages += 1
                self.publisher.feed(flv.flv_tag(tag, message.timestamp, message.payload))
        elif kind == MessageType.WINDOW_ACK_SIZE and len(message.payload) == 4:
            self.peer_window = int.from_bytes(message.payload, "big")
        elif kind in (MessageType.COMMAND_AMF0, MessageType.COMMAND_AMF3):
            payload = message.payload[1:] if kind == MessageType.COMMAND_AMF3 else message.payload
            self._command(message, payload)
        elif kind in (MessageType.DATA_AMF0, MessageType.DATA_AMF3):
            payload = message.payload[1:] if kind == MessageType.DATA_AMF3 else message.payload
            body = flv.script_body(payload)
            if self.publisher is not None and body is not None:
                self.publisher.feed(flv.flv_tag(flv.TAG_SCRIPT, message.timestamp, body))
        elif kind == MessageType.AGGREGATE:
            raise RtmpProtocolError("aggregate messages are not supported")
        # Acknowledgement, User Control (pings), Set Peer Bandwidth: nothing for a server to do.

    def _command(self, message: RtmpMessage, payload: bytes) -> None:
        from bitstring import BitStream  # noqa: PLC0415 - pyrtmp's dependency

        chunk = _as_pyrtmp(message, payload)
        try:
            name = AMF0Deserializer.from_stream(BitStream(payload))
            if name == "connect":
                connect = NCConnect.from_chunk(chunk)
                app = connect.command_object.get("app", "") if isinstance(connect.command_object, dict) else ""
                self.app = app if isinstance(app, str) else ""
            elif name == "createStream":
                create = NCCreateStream.from_chunk(chunk)
            elif name == "publish":
                publish = NSPublish.from_chunk(chunk)
        except Exception as error:  # pyrtmp's AMF0 fails with whatever it hits: every one is the peer's fault
            raise RtmpProtocolError(f"bad AMF0 command: {type(error).__name__}: {str(error)[:100]}") from None
        if not isinstance(name, str):
            raise RtmpProtocolError("command message without a command name")
        if name == "connect":
            self._send(MessageType.WINDOW_ACK_SIZE, WindowAcknowledgementSize(WINDOW_ACK_SIZE).payload)
            self._send(MessageType.SET_PEER_BANDWIDTH, SetPeerBandwidth(WINDOW_ACK_SIZE, 2).payload)
            self._send(MessageType.SET_CHUNK_SIZE, SetChunkSize(OUR_CHUNK_SIZE).payload)
            reply = connect.create_response()
            self._send(MessageType.COMMAND_AMF0, reply.payload, csid=3)
            log.debug("rtmp %s: connect app=%r", self.peer, self.app)
        elif name == "createStream":
            self._send(MessageType.COMMAND_AMF0, create.create_response().payload, csid=3)
        elif name == "publish":
            self._publish(publish)
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            if self.publisher is not None:
                log.info("rtmp %s: stream %r: publisher unpublished (%s)", self.peer, self.stream_id, name)
                self.publisher.end()
                self.publisher = None
                raise _Closed("unpublished")
        elif name in ("play", "play2"):
            raise PublishRefusedError("this server takes publishes only; play HLS from /stream/<id>.m3u8",
                                      "NetStream.Play.Failed")  # fmt: skip
        # releaseStream, FCPublish, _checkbw, getStreamLength: nothing to answer that publishers wait for.

    def _publish(self, publish: NSPublish) -> None:
        if self.publisher is not None:
            raise PublishRefusedError("a second publish on one connection")
        name = publish.publishing_name if isinstance(publish.publishing_name, str) else ""
        stream_id, key = parse_publish_path(self.app, name)
        self.stream_id = stream_id
        check_key(self.config.publish_key, key)
        self.publisher = self.server.target.start_publish(stream_id, self.peer, self.close)
        self._send(MessageType.USER_CONTROL, StreamBegin(_PUBLISH_STREAM).payload)
        self._send_status("status", "NetStream.Publish.Start", f"publishing {stream_id}")
        self.publisher.feed(flv.flv_header())
        log.info("rtmp %s: stream %r: publishing", self.peer, stream_id)


class RtmpServer:
    """Listens for RTMP publishers; owns one task per connection and ends them all on ``close``."""

    def __init__(self, config: RtmpServerConfig, target: PublishTarget) -> None:
        self.config = config
        self.target = target
        self._server: asyncio.Server | None = None
        self._sessions: dict[asyncio.Task[None], _Session] = {}
        self._refused = 0
        self._refused_logged = float("-inf")

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self.config.port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        return len(self._sessions)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.config.host, self.config.port,
                                                  limit=READ_SIZE)  # fmt: skip

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # asyncio runs this callback as a task of its own; we keep it in our set so close() can end and await it.
        task = asyncio.current_task()
        assert task is not None
        session = _Session(self, reader, writer)
        if len(self._sessions) >= self.config.max_connections:
            # One line per REFUSED_LOG_INTERVAL with a count: a flood of connections must not flood the log.
            self._refused += 1
            now = asyncio.get_running_loop().time()
            if now - self._refused_logged >= REFUSED_LOG_INTERVAL:
                log.warning("rtmp %s: refused: %d connections already (--max-rtmp-connections); %d refused since "
                            "the last report", session.peer, len(self._sessions), self._refused)  # fmt: skip
                self._refused, self._refused_logged = 0, now
            writer.transport.abort()
            return
        self._sessions[task] = session
        try:
            await session.run()
        finally:
            del self._sessions[task]

    async def close(self) -> None:
        """Stop listening and end every connection. The sessions end by themselves once their transports are
        aborted (asyncio's server, which started their tasks, reports a cancelled one as an error)."""
        if self._server is not None:
            self._server.close()
        for session in self._sessions.values():
            session.close("the broadcaster is stopping")
        tasks = list(self._sessions)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5.0)
            for task in pending:
                task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
