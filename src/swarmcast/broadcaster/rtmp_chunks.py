"""RTMP's byte framing, sans-IO: the simple handshake and the chunk stream (RTMP spec 1.0, sections 5.2 and 5.3).

How this works. ``RtmpFraming.feed(data)`` takes whatever bytes arrived and returns whole RTMP messages; the
bytes to answer with (S0+S1+S2 during the handshake) collect in ``data_to_send()``. A chunk is a basic header
(format 0..3 and a chunk stream id), a message header whose size the format sets (11, 7, 3 or 0 bytes: each
smaller one reuses fields of the previous chunk on the same chunk stream), an optional 4-byte extended
timestamp, and at most ``chunk size`` bytes of a message's payload. Messages of several chunk streams may
interleave; each chunk stream assembles its own.

Why not pyrtmp's reader (pyrtmp does the AMF0 commands for us, rtmp_server.py): its chunk reader keeps every
partial message without a limit (a 16 MiB message on each of 65,599 chunk streams), fails with KeyError or
AssertionError on a header that refers to a chunk stream never opened, gives a format-3 chunk that starts a new
message the previous message's timestamp instead of adding the delta again, and reads no extended timestamp
on format-3 chunks, which FFmpeg sends once a stream's timestamps pass 0xFFFFFF ms (4 h 40 min of
publishing): the stream would lose its framing there. Here every length from the network is checked against
a named limit before anything is kept, and every fault is a ``RtmpProtocolError`` naming it.

Extended timestamps follow FFmpeg (libavformat/rtmppkt.c): a chunk carries the 4-byte field when its own
3-byte field is 0xFFFFFF, and a format-3 chunk when its chunk stream's last 3-byte field was.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

RTMP_VERSION: Final = 3
HANDSHAKE_SIZE: Final = 1536  # C1, C2, S1, S2 (section 5.2)
DEFAULT_CHUNK_SIZE: Final = 128  # until the peer's Set Chunk Size (section 5.4.1)
EXTENDED: Final = 0xFFFFFF
MAX_OPEN_CHUNK_STREAMS: Final = 16  # chunk streams with a message half-assembled at once; FFmpeg and OBS use ~4
DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024  # one video frame; nginx-rtmp's max_message is 1 MiB
MAX_CHUNK_SIZE: Final = 0x7FFFFFFF  # the spec's; we also cap it at the message limit


class RtmpProtocolError(Exception):
    """The peer broke the protocol (or a limit); ``str()`` says how, for the log line."""


class MessageType(IntEnum):
    SET_CHUNK_SIZE = 1
    ABORT = 2
    ACKNOWLEDGEMENT = 3
    USER_CONTROL = 4
    WINDOW_ACK_SIZE = 5
    SET_PEER_BANDWIDTH = 6
    AUDIO = 8
    VIDEO = 9
    DATA_AMF3 = 15
    COMMAND_AMF3 = 17
    DATA_AMF0 = 18
    COMMAND_AMF0 = 20
    AGGREGATE = 22


@dataclass(frozen=True, slots=True)
class RtmpMessage:
    type_id: int
    stream_id: int  # the message stream id (0 for control and NetConnection; 1 for our one NetStream)
    timestamp: int  # milliseconds, 32 bits
    payload: bytes
    chunk_stream_id: int


@dataclass(slots=True)
class _ChunkStream:
    """What the next chunk on this chunk stream id may leave out (section 5.3.1.2)."""

    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    field_extended: bool = False  # the last 3-byte timestamp field was 0xFFFFFF
    partial: bytearray = field(default_factory=bytearray)
    assembling: bool = False


class RtmpFraming:
    """One RTMP connection's incoming bytes, server side."""

    def __init__(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self.handshake_done = False
        self.bytes_received = 0
        self._stage = 0  # 0: want C0+C1, 1: want C2, 2: chunks
        self._buffer = bytearray()
        self._out = bytearray()
        self._chunk_size = DEFAULT_CHUNK_SIZE
        self._streams: dict[int, _ChunkStream] = {}

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def feed(self, data: bytes) -> list[RtmpMessage]:
        self.bytes_received += len(data)
        self._buffer += data
        messages: list[RtmpMessage] = []
        if self._stage == 0:
            if not self._buffer:
                return messages
            if self._buffer[0] != RTMP_VERSION:
                # 0x16 is a TLS ClientHello (rtmps:// to a plain port), 'G' an HTTP GET, 0x47 MPEG-TS.
                raise RtmpProtocolError(f"not an RTMP handshake: first byte 0x{self._buffer[0]:02x}, expected 0x03")
            if len(self._buffer) < 1 + HANDSHAKE_SIZE:
                return messages
            c1 = bytes(self._buffer[1 : 1 + HANDSHAKE_SIZE])
            del self._buffer[: 1 + HANDSHAKE_SIZE]
            # The simple handshake: S1 is our time, zero and random bytes; S2 echoes C1. A non-zero "zero"
            # field in S1 would announce the digest handshake, which publishers do not need from a server.
            s1 = struct.pack(">II", 0, 0) + os.urandom(HANDSHAKE_SIZE - 8)
            self._out += bytes([RTMP_VERSION]) + s1 + c1
            self._stage = 1
        if self._stage == 1:
            if len(self._buffer) < HANDSHAKE_SIZE:
                return messages
            del self._buffer[:HANDSHAKE_SIZE]  # C2 echoes S1; nothing in it matters to a server
            self._stage = 2
            self.handshake_done = True
        while (message := self._next_chunk()) is not None:
            if message is not _NO_MESSAGE:
                messages.append(message)
        return messages

    def _next_chunk(self) -> RtmpMessage | None:
        """Consume one whole chunk from the buffer: its message if it completed one, _NO_MESSAGE if not, or None
        when the buffer does not hold a whole chunk yet (nothing consumed)."""
        buf = self._buffer
        if not buf:
            return None
        fmt, csid = buf[0] >> 6, buf[0] & 0x3F
        pos = 1
        if csid == 0:
            if len(buf) < 2:
                return None
            csid, pos = buf[1] + 64, 2
        elif csid == 1:
            if len(buf) < 3:
                return None
            csid, pos = buf[1] + buf[2] * 256 + 64, 3
        header_size = (11, 7, 3, 0)[fmt]
        if len(buf) < pos + header_size:
            return None
        stream = self._streams.get(csid)
        if fmt != 0 and stream is None:
            raise RtmpProtocolError(f"chunk of format {fmt} on chunk stream {csid}, which has no previous header")
        if stream is None:
            stream = _ChunkStream()
        h = buf[pos : pos + header_size]
        pos += header_size
        if fmt == 3:
            extended = stream.field_extended
        else:
            ts_field = int.from_bytes(h[0:3], "big")
            extended = ts_field == EXTENDED
        if extended:
            if len(buf) < pos + 4:
                return None
            ext_value = int.from_bytes(buf[pos : pos + 4], "big")
            pos += 4
        new_message = not stream.assembling
        if fmt in (0, 1):
            length = int.from_bytes(h[3:6], "big")
            type_id = h[6]
        else:
            length, type_id = stream.length, stream.type_id
        if fmt != 3 and not new_message:
            raise RtmpProtocolError(f"new message header on chunk stream {csid} before its message of "
                                    f"{stream.length} bytes was complete")  # fmt: skip
        if new_message and length > self.max_message_bytes:
            raise RtmpProtocolError(f"message of {length} bytes on chunk stream {csid}, more than the limit of "
                                    f"{self.max_message_bytes}")  # fmt: skip
        take = min(self._chunk_size, length - len(stream.partial))
        if len(buf) < pos + take:
            return None
        # The whole chunk is here: commit the header to the chunk stream's state.
        if new_message and csid not in self._streams:
            if sum(1 for s in self._streams.values() if s.assembling) >= MAX_OPEN_CHUNK_STREAMS:
                raise RtmpProtocolError(f"more than {MAX_OPEN_CHUNK_STREAMS} chunk streams at once")
            if len(self._streams) >= 4 * MAX_OPEN_CHUNK_STREAMS:
                raise RtmpProtocolError(f"more than {4 * MAX_OPEN_CHUNK_STREAMS} chunk stream ids")
            self._streams[csid] = stream
        if fmt != 3:
            value = ext_value if extended else int.from_bytes(h[0:3], "big")
            stream.field_extended = extended
            if fmt == 0:
                stream.timestamp, stream.delta = value, value
                stream.stream_id = int.from_bytes(h[7:11], "little")
            else:
                stream.delta = value
                stream.timestamp = (stream.timestamp + value) & 0xFFFFFFFF
            stream.length, stream.type_id = length, type_id
        elif new_message:
            # Section 5.3.1.2.4: a format-3 chunk that starts a message repeats the previous delta.
            stream.timestamp = (stream.timestamp + stream.delta) & 0xFFFFFFFF
        stream.partial += buf[pos : pos + take]
        del buf[: pos + take]
        if len(stream.partial) < stream.length:
            stream.assembling = True
            return _NO_MESSAGE
        stream.assembling = False
        payload = bytes(stream.partial)
        stream.partial.clear()
        message = RtmpMessage(stream.type_id, stream.stream_id, stream.timestamp, payload, csid)
        self._control(message)
        return message

    def _control(self, message: RtmpMessage) -> None:
        if message.type_id == MessageType.SET_CHUNK_SIZE:
            if len(message.payload) != 4:
                raise RtmpProtocolError(f"Set Chunk Size of {len(message.payload)} bytes, expected 4")
            size = int.from_bytes(message.payload, "big")
            # Below the default 128 no real publisher goes; 1-byte chunks would make every byte a chunk header to
            # parse on the event loop (a cheap way to burn our CPU).
            if not DEFAULT_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE:
                raise RtmpProtocolError(f"Set Chunk Size {size} out of {DEFAULT_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
            self._chunk_size = min(size, self.max_message_bytes)
        elif message.type_id == MessageType.ABORT and len(message.payload) == 4:
            aborted = self._streams.get(int.from_bytes(message.payload, "big"))
            if aborted is not None:
                aborted.partial.clear()
                aborted.assembling = False


_NO_MESSAGE: Final = RtmpMessage(0, 0, 0, b"", 0)


def encode_message(message: RtmpMessage, chunk_size: int) -> bytes:
    """``message`` as chunks: one format-0 chunk, then format-3 continuations (section 5.3.1)."""
    if not 2 <= message.chunk_stream_id <= 63:
        raise ValueError(f"chunk stream id {message.chunk_stream_id}: we only send on 2..63")
    ts = message.timestamp & 0xFFFFFFFF
    extended = ts >= EXTENDED
    header = struct.pack(">B", message.chunk_stream_id)
    header += (EXTENDED if extended else ts).to_bytes(3, "big") + len(message.payload).to_bytes(3, "big")
    header += bytes([message.type_id]) + message.stream_id.to_bytes(4, "little")
    ext = ts.to_bytes(4, "big") if extended else b""
    out = bytearray(header + ext)
    payload = message.payload
    out += payload[:chunk_size]
    for start in range(chunk_size, len(payload), chunk_size):
        out += bytes([0xC0 | message.chunk_stream_id]) + ext + payload[start : start + chunk_size]
    return bytes(out)


def control_message(type_id: MessageType, payload: bytes) -> RtmpMessage:
    return RtmpMessage(int(type_id), 0, 0, payload, 2)
