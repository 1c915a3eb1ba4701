"""The HLS segment index: a signed METADATA piece that lets an engine verify a segment it fetched from the origin.

How this works (docs/protocol.md, "HLS broadcasts"). The signer of an HLS broadcast (node/hls_signer.py) turns each
origin segment into k data pieces, whole and in order, and first emits one piece flagged ``METADATA`` at the index
before them. Its data is this index: the segment's URI (relative to the transport file's ``hls_base_url``, else its
``hls_manifest``; empty when the broadcaster hides segments), our media sequence, the duration, and for each of the
k data pieces that follow (indices ``index + 1 .. index + k``) its piece flags, length, SHA-256 and Ed25519
signature (the very signature the data piece carries, §8). The index piece itself is signed like every piece.

An engine holding a verified index can therefore GET the segment (at most the sum of the lengths), split it by the
lengths, check each part's SHA-256 and signature, and store the parts as ordinary signed pieces it may upload: a
byte the origin (or anyone between) changed fails the hash and nothing of it is stored.

Layout, all integers big-endian::

    magic "SCSI" | version u8 = 1 | sequence u64 | duration_ms u32 | uri_length u16 | uri (UTF-8)
    | count u16 | count x (flags u8, length u32, sha256[32], signature[64])
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from swarmcast.wire.messages import MAX_PIECE_SIZE, PieceFlags

MAGIC = b"SCSI"
VERSION = 1
MAX_URI_BYTES = 2048
MAX_PIECES_PER_SEGMENT = 256  # a segment is at most this many data pieces (16 MiB segments at 64 KiB pieces)
SIGNATURE_LENGTH = 64
_HEAD = struct.Struct(">4sBQI")
_U16 = struct.Struct(">H")
_ENTRY = struct.Struct(">BI32s64s")
_DATA_FLAGS = PieceFlags.RANDOM_ACCESS | PieceFlags.DISCONTINUITY


class SegmentIndexError(ValueError):
    """Bytes that are not a segment index (a signer bug: the piece was signed, so it came from the signer)."""


@dataclass(frozen=True)
class IndexEntry:
    flags: PieceFlags
    length: int
    sha256: bytes
    signature: bytes


@dataclass(frozen=True)
class SegmentIndex:
    uri: str
    sequence: int
    duration_ms: int
    entries: tuple[IndexEntry, ...]

    @property
    def total_length(self) -> int:
        return sum(e.length for e in self.entries)

    def encode(self) -> bytes:
        uri = self.uri.encode()
        if len(uri) > MAX_URI_BYTES or not 1 <= len(self.entries) <= MAX_PIECES_PER_SEGMENT:
            raise ValueError("segment index out of bounds")
        parts = [_HEAD.pack(MAGIC, VERSION, self.sequence, self.duration_ms), _U16.pack(len(uri)), uri,
                 _U16.pack(len(self.entries))]  # fmt: skip
        parts += [_ENTRY.pack(int(e.flags), e.length, e.sha256, e.signature) for e in self.entries]
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> SegmentIndex:
        try:
            magic, version, sequence, duration_ms = _HEAD.unpack_from(data, 0)
            offset = _HEAD.size
            (uri_length,) = _U16.unpack_from(data, offset)
            offset += _U16.size
            if uri_length > MAX_URI_BYTES:
                raise SegmentIndexError(f"URI of {uri_length} bytes")
            uri = data[offset : offset + uri_length].decode()
            offset += uri_length
            (count,) = _U16.unpack_from(data, offset)
            offset += _U16.size
        except (struct.error, UnicodeDecodeError) as error:
            raise SegmentIndexError(f"not a segment index: {error}") from None
        if magic != MAGIC or version != VERSION:
            raise SegmentIndexError("not a segment index (magic or version)")
        if not 1 <= count <= MAX_PIECES_PER_SEGMENT or len(data) != offset + count * _ENTRY.size:
            raise SegmentIndexError(f"segment index of {count} entries in {len(data)} bytes")
        entries = []
        for i in range(count):
            flags, length, digest, signature = _ENTRY.unpack_from(data, offset + i * _ENTRY.size)
            if flags & ~int(_DATA_FLAGS) or not 1 <= length <= MAX_PIECE_SIZE:
                raise SegmentIndexError(f"segment index entry {i}: flags {flags:#x}, length {length}")
            entries.append(IndexEntry(PieceFlags(flags), length, digest, signature))
        return cls(uri, sequence, duration_ms, tuple(entries))


def split_segment(data: bytes, piece_size: int) -> list[bytes]:
    """A segment's bytes as data pieces of at most ``piece_size`` (whole TS packets when it is a multiple of 188)."""
    if piece_size < 1:
        raise ValueError("piece_size must be positive")
    return [data[i : i + piece_size] for i in range(0, len(data), piece_size)]


def part_span(index: SegmentIndex, first: int, stop: int) -> tuple[int, int]:
    """Byte offsets ``[start, end)`` of data pieces ``first .. stop - 1`` (0-based) within the segment."""
    lengths = [e.length for e in index.entries]
    return sum(lengths[:first]), sum(lengths[:stop])


def check_parts(index: SegmentIndex, first: int, stop: int, data: bytes) -> list[bytes] | None:
    """Data pieces ``first .. stop - 1`` (0-based) cut from ``data`` (exactly their bytes) when each matches its
    entry's length and SHA-256; None otherwise."""
    start, end = part_span(index, first, stop)
    if not 0 <= first < stop <= len(index.entries) or len(data) != end - start:
        return None
    parts = []
    offset = 0
    for entry in index.entries[first:stop]:
        part = data[offset : offset + entry.length]
        offset += entry.length
        if hashlib.sha256(part).digest() != entry.sha256:
            return None
        parts.append(part)
    return parts


def check_segment(index: SegmentIndex, data: bytes) -> list[bytes] | None:
    """The data pieces of ``data`` when every part matches the index (length and SHA-256); None otherwise."""
    return check_parts(index, 0, len(index.entries), data)
