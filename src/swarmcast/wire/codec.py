"""Encoding and decoding of handshakes and frames.

A frame is ``u32 length`` (big-endian, counting the type byte and payload), ``u8 type``, payload. The decoder
checks the length against ``MAX_FRAME_LENGTH`` as soon as the four length bytes are in, before buffering the
body, and every count inside a payload against its own maximum. Anything wrong raises ``ProtocolError``; no
other exception can escape ``FrameDecoder.feed`` or ``decode_handshake``.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import cast

from swarmcast.wire.errors import ErrorCode, ProtocolError
from swarmcast.wire.messages import (
    CONTENT_ID_LENGTH,
    HANDSHAKE_LENGTH,
    MAX_CREDENTIAL_SIZE,
    MAX_FRAME_LENGTH,
    MAX_INDEX,
    MAX_METADATA_SIZE,
    MAX_PEX_PEERS,
    MAX_PIECE_SIZE,
    MAX_WINDOW_PIECES,
    PEER_ID_LENGTH,
    PROTOCOL_MAGIC,
    PROTOCOL_VERSION,
    SIGNATURE_LENGTH,
    Cancel,
    Choke,
    CredentialKind,
    CredentialMessage,
    Goodbye,
    GoodbyeReason,
    Handshake,
    HandshakeFlags,
    Have,
    Interested,
    KeepAlive,
    Message,
    MessageType,
    Metadata,
    MetadataRequest,
    NotInterested,
    Pex,
    Piece,
    PieceFlags,
    Reject,
    Request,
    Unchoke,
    Window,
)

_HANDSHAKE = struct.Struct(">4sBBH20s20s")
_FRAME_HEADER = struct.Struct(">IB")
_FRAME_HEADER_SIZE = _FRAME_HEADER.size
_INDEX = struct.Struct(">Q")
_HAVE = struct.Struct(">QB")
_PIECE_HEADER = struct.Struct(">QB64s")
_WINDOW_HEADER = struct.Struct(">QI")
_PORT = struct.Struct(">H")
# Whole frames of the hot messages in one pack (length, type, payload): no payload bytes built and then copied.
_HAVE_FRAME = struct.Struct(">IBQB")
_INDEX_FRAME = struct.Struct(">IBQ")
_PIECE_FRAME = struct.Struct(">IBQB64s")

_EMPTY_TYPES: dict[MessageType, Message] = {
    MessageType.KEEPALIVE: KeepAlive(),
    MessageType.CHOKE: Choke(),
    MessageType.UNCHOKE: Unchoke(),
    MessageType.INTERESTED: Interested(),
    MessageType.NOT_INTERESTED: NotInterested(),
    MessageType.METADATA_REQUEST: MetadataRequest(),
}
_VALID_HANDSHAKE_FLAGS = HandshakeFlags.SOURCE | HandshakeFlags.SEEDER
_VALID_PIECE_FLAGS = PieceFlags.RANDOM_ACCESS | PieceFlags.DISCONTINUITY | PieceFlags.METADATA
# Lookups instead of enum calls in the hot path (EnumType.__call__ costs a microsecond or two per HAVE and PIECE).
_MESSAGE_TYPES: dict[int, MessageType] = {int(kind): kind for kind in MessageType}
_PIECE_FLAGS: tuple[PieceFlags, ...] = tuple(PieceFlags(value) for value in range(int(_VALID_PIECE_FLAGS) + 1))
_TYPE_HAVE = int(MessageType.HAVE)
_TYPE_PIECE = int(MessageType.PIECE)
_TYPE_REQUEST = int(MessageType.REQUEST)
_PIECE_FLAG_MASK = ~int(_VALID_PIECE_FLAGS)


def encode_handshake(handshake: Handshake) -> bytes:
    if len(handshake.content_id) != CONTENT_ID_LENGTH or len(handshake.peer_id) != PEER_ID_LENGTH:
        raise ValueError("content_id and peer_id must be 20 bytes")
    if int(handshake.flags) & ~int(_VALID_HANDSHAKE_FLAGS) or not 0 <= handshake.listen_port <= 0xFFFF:
        raise ValueError(f"bad handshake flags {handshake.flags!r} or port {handshake.listen_port}")
    return _HANDSHAKE.pack(
        PROTOCOL_MAGIC,
        handshake.version,
        int(handshake.flags),
        handshake.listen_port,
        handshake.content_id,
        handshake.peer_id,
    )


def decode_handshake(data: bytes) -> Handshake:
    if len(data) != HANDSHAKE_LENGTH:
        raise ProtocolError(ErrorCode.BAD_HANDSHAKE, f"handshake is {len(data)} bytes, not {HANDSHAKE_LENGTH}")
    magic, version, flags, port, content_id, peer_id = _HANDSHAKE.unpack(data)
    if magic != PROTOCOL_MAGIC:
        raise ProtocolError(ErrorCode.BAD_HANDSHAKE, f"bad magic {magic!r}")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.BAD_HANDSHAKE, f"unsupported version {version}")
    if flags & ~int(_VALID_HANDSHAKE_FLAGS):
        raise ProtocolError(ErrorCode.BAD_HANDSHAKE, f"unknown handshake flags {flags:#x}")
    return Handshake(content_id, peer_id, port, HandshakeFlags(flags), version)


def _pack_bits(bits: tuple[bool, ...]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i >> 3] |= 0x80 >> (i & 7)
    return bytes(out)


def _unpack_bits(data: bytes, count: int) -> tuple[bool, ...]:
    return tuple(bool(data[i >> 3] & (0x80 >> (i & 7))) for i in range(count))


def _encode_address(host: str, port: int) -> bytes:
    address = ipaddress.ip_address(host)
    family = 4 if address.version == 4 else 6
    return bytes([family]) + address.packed + _PORT.pack(port)


def _check_index(index: int) -> None:
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"piece index {index} out of range")


def _check_piece_flags(flags: PieceFlags) -> None:
    if int(flags) & ~int(_VALID_PIECE_FLAGS):
        raise ValueError(f"unknown piece flags {int(flags):#x}")


def encode_payload(message: Message) -> tuple[MessageType, bytes]:
    match message:
        # The hot messages first: a match tries its cases in order.
        case Have(index, flags):
            _check_index(index)
            _check_piece_flags(flags)
            return MessageType.HAVE, _HAVE.pack(index, int(flags))
        case Piece(index, flags, signature, data):
            _check_index(index)
            _check_piece_flags(flags)
            if len(signature) != SIGNATURE_LENGTH or not 0 < len(data) <= MAX_PIECE_SIZE:
                raise ValueError("bad piece signature or data length")
            return MessageType.PIECE, _PIECE_HEADER.pack(index, int(flags), signature) + data
        case Request(index):
            _check_index(index)
            return MessageType.REQUEST, _INDEX.pack(index)
        case KeepAlive():
            return MessageType.KEEPALIVE, b""
        case Choke():
            return MessageType.CHOKE, b""
        case Unchoke():
            return MessageType.UNCHOKE, b""
        case Interested():
            return MessageType.INTERESTED, b""
        case NotInterested():
            return MessageType.NOT_INTERESTED, b""
        case MetadataRequest():
            return MessageType.METADATA_REQUEST, b""
        case Window(first, have, random_access):
            if len(have) != len(random_access) or len(have) > MAX_WINDOW_PIECES:
                raise ValueError("window bitfields must have equal length <= MAX_WINDOW_PIECES")
            _check_index(first)
            if first + len(have) > MAX_INDEX + 1:
                raise ValueError("window runs past the largest piece index")
            header = _WINDOW_HEADER.pack(first, len(have))
            return MessageType.WINDOW, header + _pack_bits(have) + _pack_bits(random_access)
        case Cancel(index):
            _check_index(index)
            return MessageType.CANCEL, _INDEX.pack(index)
        case Reject(index):
            _check_index(index)
            return MessageType.REJECT, _INDEX.pack(index)
        case Pex(peers):
            if len(peers) > MAX_PEX_PEERS:
                raise ValueError("too many PEX peers")
            body = b"".join(_encode_address(host, port) for host, port in peers)
            return MessageType.PEX, bytes([len(peers)]) + body
        case Goodbye(reason):
            return MessageType.GOODBYE, bytes([int(reason)])
        case Metadata(descriptor):
            if len(descriptor) > MAX_METADATA_SIZE:
                raise ValueError("descriptor too large")
            return MessageType.METADATA, descriptor
        case CredentialMessage(kind, credential):
            if not 0 < len(credential) <= MAX_CREDENTIAL_SIZE:
                raise ValueError("bad credential length")
            return MessageType.CREDENTIAL, bytes([int(kind)]) + credential
    raise TypeError(f"not a message: {message!r}")


def encode_message(message: Message) -> bytes:
    # HAVE, PIECE and REQUEST are nearly every frame sent: packed whole here, with the checks of encode_payload
    # (which also raises the errors: anything unusual is sent its way).
    kind = type(message)
    if kind is Have:
        have = cast(Have, message)
        index, flags = have.index, int(have.flags)
        if 0 <= index <= MAX_INDEX and not flags & _PIECE_FLAG_MASK:
            return _HAVE_FRAME.pack(_HAVE_FRAME.size - 4, _TYPE_HAVE, index, flags)
    elif kind is Piece:
        piece = cast(Piece, message)
        index, flags, signature, data = piece.index, int(piece.flags), piece.signature, piece.data
        if (0 <= index <= MAX_INDEX and not flags & _PIECE_FLAG_MASK and len(signature) == SIGNATURE_LENGTH
                and 0 < len(data) <= MAX_PIECE_SIZE):  # fmt: skip
            return _PIECE_FRAME.pack(_PIECE_FRAME.size - 4 + len(data), _TYPE_PIECE, index, flags, signature) + data
    elif kind is Request:
        index = cast(Request, message).index
        if 0 <= index <= MAX_INDEX:
            return _INDEX_FRAME.pack(_INDEX_FRAME.size - 4, _TYPE_REQUEST, index)
    payload_kind, payload = encode_payload(message)
    return _FRAME_HEADER.pack(len(payload) + 1, int(payload_kind)) + payload


def _expect_length(kind: MessageType, payload: bytes, length: int) -> None:
    if len(payload) != length:
        raise ProtocolError(
            ErrorCode.MALFORMED_MESSAGE, f"{kind.name} payload is {len(payload)} bytes, expected {length}"
        )


def _decode_index(kind: MessageType, payload: bytes) -> int:
    _expect_length(kind, payload, _INDEX.size)
    (index,) = _INDEX.unpack(payload)
    if index > MAX_INDEX:
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, f"{kind.name} index {index} out of range")
    return int(index)


def _decode_piece_flags(value: int) -> PieceFlags:
    if value & ~int(_VALID_PIECE_FLAGS):
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, f"unknown piece flags {value:#x}")
    return _PIECE_FLAGS[value]


def _decode_window(payload: bytes) -> Window:
    if len(payload) < _WINDOW_HEADER.size:
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, "WINDOW too short")
    first, count = _WINDOW_HEADER.unpack_from(payload)
    if count > MAX_WINDOW_PIECES or first > MAX_INDEX or first + count > MAX_INDEX + 1:
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, f"WINDOW of {count} pieces from {first} out of bounds")
    nbytes = (count + 7) // 8
    _expect_length(MessageType.WINDOW, payload, _WINDOW_HEADER.size + 2 * nbytes)
    start = _WINDOW_HEADER.size
    have = _unpack_bits(payload[start : start + nbytes], count)
    random_access = _unpack_bits(payload[start + nbytes :], count)
    return Window(int(first), have, random_access)


def _decode_pex(payload: bytes) -> Pex:
    if not payload:
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, "PEX without count")
    count = payload[0]
    if count > MAX_PEX_PEERS:
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, f"PEX with {count} peers")
    peers: list[tuple[str, int]] = []
    pos = 1
    for _ in range(count):
        if pos >= len(payload):
            raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, "PEX truncated")
        family = payload[pos]
        size = {4: 4, 6: 16}.get(family)
        if size is None:
            raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, f"PEX address family {family}")
        end = pos + 1 + size + 2
        if end > len(payload):
            raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, "PEX truncated")
        raw = payload[pos + 1 : pos + 1 + size]
        # IPv4Address's own text, without building one (ipaddress was 6 % of a 10,000-peer simulation).
        # Not interned: hosts come from any peer before any cap applies, and interned strings are immortal on some
        # CPython versions (3.12.0-3.12.5), so a reconnecting peer naming fresh addresses would grow memory for good.
        host = f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}" if family == 4 else str(ipaddress.IPv6Address(raw))
        (port,) = _PORT.unpack_from(payload, pos + 1 + size)
        peers.append((host, int(port)))
        pos = end
    if pos != len(payload):
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, "PEX has trailing bytes")
    return Pex(tuple(peers))


def _decode_have(buffer: bytes | bytearray, start: int, end: int) -> Have:
    if end - start != _HAVE.size:
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, f"HAVE payload is {end - start} bytes, expected {_HAVE.size}")
    index, flags = _HAVE.unpack_from(buffer, start)
    if index > MAX_INDEX:
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, f"HAVE index {index} out of range")
    if flags & _PIECE_FLAG_MASK:
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, f"unknown piece flags {flags:#x}")
    return Have(index, _PIECE_FLAGS[flags])


def _decode_piece(buffer: bytes | bytearray, start: int, end: int) -> Piece:
    """A PIECE from ``buffer[start:end]`` with one copy of its data."""
    length = end - start
    if length <= _PIECE_HEADER.size or length > _PIECE_HEADER.size + MAX_PIECE_SIZE:
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, f"PIECE payload of {length} bytes")
    index, flags, signature = _PIECE_HEADER.unpack_from(buffer, start)
    if index > MAX_INDEX:
        raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, f"PIECE index {index} out of range")
    if isinstance(buffer, bytes):
        data = buffer[start + _PIECE_HEADER.size : end]  # a slice of bytes is the one copy
    else:
        with memoryview(buffer) as view:  # a bytearray's slice would be a copy, and bytes() of it another
            data = bytes(view[start + _PIECE_HEADER.size : end])
    return Piece(index, _decode_piece_flags(flags), signature, data)


def decode_payload(type_byte: int, payload: bytes) -> Message:
    kind = _MESSAGE_TYPES.get(type_byte)
    if kind is None:
        raise ProtocolError(ErrorCode.UNKNOWN_MESSAGE, f"unknown message type {type_byte}")
    empty = _EMPTY_TYPES.get(kind)
    if empty is not None:
        _expect_length(kind, payload, 0)
        return empty
    match kind:
        case MessageType.WINDOW:
            return _decode_window(payload)
        case MessageType.HAVE:
            return _decode_have(payload, 0, len(payload))
        case MessageType.REQUEST:
            return Request(_decode_index(kind, payload))
        case MessageType.CANCEL:
            return Cancel(_decode_index(kind, payload))
        case MessageType.REJECT:
            return Reject(_decode_index(kind, payload))
        case MessageType.PIECE:
            return _decode_piece(payload, 0, len(payload))
        case MessageType.PEX:
            return _decode_pex(payload)
        case MessageType.GOODBYE:
            _expect_length(kind, payload, 1)
            try:
                reason = GoodbyeReason(payload[0])
            except ValueError:
                reason = GoodbyeReason.OTHER
            return Goodbye(reason)
        case MessageType.METADATA:
            if len(payload) > MAX_METADATA_SIZE:
                raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, "METADATA too large")
            return Metadata(payload)
        case MessageType.CREDENTIAL:
            # Only the kind and the length are the codec's business; swarmcast.credential parses the rest.
            if not 2 <= len(payload) <= 1 + MAX_CREDENTIAL_SIZE:
                raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, f"CREDENTIAL payload of {len(payload)} bytes")
            try:
                credential_kind = CredentialKind(payload[0])
            except ValueError:
                raise ProtocolError(ErrorCode.MALFORMED_MESSAGE, f"CREDENTIAL kind {payload[0]}") from None
            return CredentialMessage(credential_kind, payload[1:])
    raise ProtocolError(ErrorCode.UNKNOWN_MESSAGE, f"unhandled message type {kind.name}")  # pragma: no cover


class FrameDecoder:
    """Incremental frame decoder: feed it bytes as they arrive, get whole messages back.

    Frames are read in place: from ``data`` itself when nothing was left over from the last feed (the usual case:
    a read ends on a frame boundary more often than not), else from the buffer the leftover was kept in. HAVE is
    unpacked where it lies and a PIECE's data copied out once; only what is left of a frame cut by the read is
    buffered for the next feed.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        buffer = self._buffer
        if buffer:
            buffer += data
            source: bytes | bytearray = buffer
        else:
            source = data
        messages: list[Message] = []
        size = len(source)
        pos = 0
        unpack = _FRAME_HEADER.unpack_from
        while size - pos >= _FRAME_HEADER_SIZE:
            length, type_byte = unpack(source, pos)
            if length < 1 or length > MAX_FRAME_LENGTH:
                raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, f"frame length {length} (max {MAX_FRAME_LENGTH})")
            end = pos + 4 + length
            if end > size:
                break
            start = pos + _FRAME_HEADER_SIZE
            if type_byte == _TYPE_HAVE:
                messages.append(_decode_have(source, start, end))
            elif type_byte == _TYPE_PIECE:
                messages.append(_decode_piece(source, start, end))
            else:
                messages.append(decode_payload(type_byte, bytes(source[start:end])))
            pos = end
        if source is buffer:
            del buffer[:pos]
        elif pos < size:
            with memoryview(source) as view:
                buffer += view[pos:]
        return messages
