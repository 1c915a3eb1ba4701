"""The HLS support node: the signer of an HLS broadcast (Ace Stream's ``--stream-support-node`` given a private file).

How this works. It is a source node (node/source.py: the same key handling, ``.sauth``/``.restart``, web interface,
credentials, trackers and announcer) whose descriptor is fixed by the transport file ``--create-hls-transport``
wrote, and whose input is the origin's HLS (ingest/hls.py) instead of a TS byte stream. Each segment becomes one
``METADATA`` piece, the segment index (swarmcast/segment_index.py), then the segment's bytes as k data pieces of at
most ``piece_size``, in order: segment boundaries are piece boundaries and the first data piece is
``RANDOM_ACCESS`` (and ``DISCONTINUITY`` after a reset, an origin restart or a skipped segment). The index names the
segment's URI relative to the manifest (empty with ``--hide-hls-segments``, or when the public file hides the
manifest), so engines of a public broadcast can fetch it from the origin and verify it (node/hls_fallback.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from swarmcast.hls_transport import PrivateHlsFile, sauth_pem, write_file
from swarmcast.ingest.hls import FetchedSegment, HlsSettings, read_hls_segments
from swarmcast.node.config import SourceConfig
from swarmcast.node.source import SourceNode
from swarmcast.segment_index import MAX_PIECES_PER_SEGMENT, IndexEntry, SegmentIndex, split_segment
from swarmcast.swarm.cutter import PieceCutter
from swarmcast.swarm.store import StoredPiece
from swarmcast.transport import Descriptor, TransportError, public_key_bytes, sign_piece
from swarmcast.wire.messages import PieceFlags

log = logging.getLogger("swarmcast.hls")


def relative_uri(manifest: str, url: str) -> str:
    """``url`` relative to the manifest's directory when under it, else ``url`` itself."""
    directory = manifest.split("?", 1)[0].rsplit("/", 1)[0] + "/"
    return url[len(directory) :] if url.startswith(directory) else url


class HlsSignerNode(SourceNode):
    kind = "support"

    def __init__(self, config: SourceConfig, private: PrivateHlsFile, *, hls: HlsSettings,
                 hide_segments: bool = False) -> None:  # fmt: skip
        super().__init__(config)
        self.private = private
        self.fixed_descriptor: Descriptor = private.descriptor
        self.hide_segments = hide_segments or not (self.fixed_descriptor.hls_manifest or
                                                   self.fixed_descriptor.hls_base_url)  # fmt: skip
        self.hls = hls
        self.segments = 0
        self._install_key()

    def _install_key(self) -> None:
        """The private file's key becomes the node's ``.sauth``; a different key already there is refused."""
        path = self.metadata.key_path
        if path.exists():
            if public_key_bytes(self.metadata.key()) != self.fixed_descriptor.public_key:
                raise TransportError(f"{path} holds another broadcast's key than the private file's")
            return
        write_file(path, sauth_pem(self.private), secret=True)

    async def _settle_descriptor(self, chunks: AsyncIterator[bytes], buffered: list[bytes]) -> Descriptor:
        return self.fixed_descriptor

    def _open_input(self, on_reconnect: Callable[[], None]) -> AsyncIterator[bytes]:
        return _nothing()  # the pump reads segments itself

    async def _pump(self, chunks: AsyncIterator[bytes], buffered: list[bytes], cutter: PieceCutter) -> None:
        settings = self.hls
        limit = min(settings.max_segment_bytes, MAX_PIECES_PER_SEGMENT * self.fixed_descriptor.piece_size)
        if limit != settings.max_segment_bytes:
            settings = replace(settings, max_segment_bytes=limit)
        segments = read_hls_segments(self.private.hls_manifest, settings, status=self.input_status)
        try:
            async for segment in segments:
                self.emit_segment(segment)
                await asyncio.sleep(0)
        finally:
            await segments.aclose()  # type: ignore[attr-defined]

    def emit_segment(self, segment: FetchedSegment) -> None:
        assert self.swarm is not None
        assert self._key is not None
        descriptor = self.fixed_descriptor
        parts = split_segment(segment.data, descriptor.piece_size)
        if not parts:
            return
        content_id = descriptor.content_id
        first = self._next_index
        entries = []
        signed = []
        for i, part in enumerate(parts):
            flags = PieceFlags.NONE
            if i == 0:
                flags = PieceFlags.RANDOM_ACCESS
                if segment.discontinuity:
                    flags |= PieceFlags.DISCONTINUITY
            signature = sign_piece(self._key, content_id, first + 1 + i, flags, part)
            entries.append(IndexEntry(flags, len(part), hashlib.sha256(part).digest(), signature))
            signed.append(StoredPiece(first + 1 + i, flags, signature, part))
        uri = "" if self.hide_segments else relative_uri(self.private.hls_manifest, segment.url)
        index = SegmentIndex(uri, segment.sequence, round(segment.duration * 1000), tuple(entries)).encode()
        index_signature = sign_piece(self._key, content_id, first, PieceFlags.METADATA, index)
        now = time.monotonic()
        self.metadata.note_index(first + len(parts))
        self._next_index = first + 1 + len(parts)
        self.swarm.add_local_piece(StoredPiece(first, PieceFlags.METADATA, index_signature, index), now)
        for piece in signed:
            self.swarm.add_local_piece(piece, now)
        self.segments += 1
        log.debug("segment %d (%d bytes) as pieces %d..%d", segment.sequence, len(segment.data), first,
                  first + len(parts))  # fmt: skip


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing
