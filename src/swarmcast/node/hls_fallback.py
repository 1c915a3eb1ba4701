"""Origin fallback of a public ("hybrid") HLS broadcast, engine side: fetch a late segment from the origin, verify
it against the signed segment index, and store its pieces as ordinary signed pieces (so they are shared on).

How this works. Every piece the swarm stores is seen through ``piece_listeners``; a ``METADATA`` piece is a segment
index (swarmcast/segment_index.py): its data pieces are the k indices after it, each with its length, SHA-256 and
signature. ``FallbackPolicy.due`` (sans-IO) names the segments to fetch: the index is ``fetch_after`` seconds old
(no peer delivered the segment in time; the signer emits the data right behind the index, so in a healthy swarm
it is there within a fraction of a second; a random jitter of up to ``FETCH_JITTER`` is added so that engines do
not all ask at once), some data piece is still missing, a player has not yet read past the
segment, the index names a URI (not hidden) and the segment was not tried before. ``OriginFallback`` (the I/O
half, one task per broadcast, closed with it) GETs each due segment, at most the index's total length, within
``FETCH_TIMEOUT`` (only the byte range of the pieces still missing, when the origin takes HTTP Range requests);
checks every part's hash and signature; stores the missing parts with ``add_local_piece``
(which announces them with HAVE: peers may ask us for them). A segment that fails is rejected whole and never
stored or shared (``origin_rejected``); it is not asked for again.

Bytes that came this way are counted in ``SwarmStats.downloaded_from_origin`` (bytes from peers stay in
``downloaded``): the engine's /ace/stat (``engine_stat``) shows both, and the engine logs the share every
``LOG_EVERY`` seconds and when it leaves the broadcast.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import aiohttp

from swarmcast.ingest.hls import SegmentError, read_bounded
from swarmcast.segment_index import SegmentIndex, SegmentIndexError, check_parts, check_segment, part_span
from swarmcast.swarm.core import Swarm
from swarmcast.swarm.store import StoredPiece
from swarmcast.transport import Descriptor, PieceVerifier
from swarmcast.wire.messages import PieceFlags

log = logging.getLogger("swarmcast.hls.fallback")

FETCH_AFTER = 1.0  # seconds an index may wait for its data from peers before the origin is asked
# Plus a random 0..FETCH_JITTER s per segment and engine: the engine that asks first announces the pieces and the
# others get them from it instead of all asking the origin at the same moment.
FETCH_JITTER = 0.8
FETCH_TIMEOUT = 10.0  # seconds for one segment from the origin, whole
CONNECT_TIMEOUT = 3.0
MAX_INDEXES = 256  # segment indexes kept (older ones are forgotten: a player never goes back that far)
TICK = 0.25
LOG_EVERY = 30.0


def segment_url(base: str, uri: str) -> str | None:
    """Where to fetch a segment: ``uri`` resolved against ``base``; None unless on the base's scheme, host and port
    (a broadcast cannot point its viewers' engines at other hosts, their LAN say, through its index)."""
    url = urljoin(base, uri)
    try:
        target, origin = urlsplit(url), urlsplit(base)
    except ValueError:
        return None
    if target.scheme not in ("http", "https") or (target.scheme, target.netloc) != (origin.scheme, origin.netloc):
        return None
    return url


@dataclass
class FallbackPolicy:
    """Which segments to fetch from the origin, and when (sans-IO; ``now`` passed in)."""

    fetch_after: float = FETCH_AFTER
    jitter: float = 0.0
    rng: random.Random = field(default_factory=random.Random)
    # index piece -> (its segment index, when the origin may be asked for it)
    indexes: dict[int, tuple[SegmentIndex, float]] = field(default_factory=dict)
    tried: set[int] = field(default_factory=set)

    def note_index(self, index: int, segment: SegmentIndex, now: float) -> None:
        self.indexes[index] = (segment, now + self.fetch_after + self.rng.uniform(0, self.jitter))
        while len(self.indexes) > MAX_INDEXES:
            oldest = min(self.indexes)
            del self.indexes[oldest]
            self.tried.discard(oldest)

    def due(self, now: float, have: set[int] | None, positions: list[int]) -> list[int]:
        """Index pieces whose segment should be fetched now; ``have`` = stored indices (None: ask ``missing``)."""
        out = []
        for index, (segment, at) in sorted(self.indexes.items()):
            if index in self.tried or not segment.uri or now < at:
                continue
            last = index + len(segment.entries)
            if not any(p <= last for p in positions):
                continue  # no player will read it (all are past it, or none plays)
            if have is not None and all(i in have for i in range(index + 1, last + 1)):
                continue
            out.append(index)
        return out


class OriginFallback:
    def __init__(self, swarm: Swarm, descriptor: Descriptor, *, local_ip: str | None = None,
                 fetch_after: float = FETCH_AFTER) -> None:  # fmt: skip
        self.swarm = swarm
        self.base = descriptor.hls_base_url or descriptor.hls_manifest
        self.policy = FallbackPolicy(fetch_after, FETCH_JITTER)
        self._verifier = PieceVerifier(descriptor.public_key, swarm.content_id)
        self._local_ip = local_ip
        self._task: asyncio.Task[None] | None = None
        self._last_log = time.monotonic()
        swarm.piece_listeners.append(self._on_piece)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"hls-fallback-{self.swarm.content_id.hex()[:8]}")

    async def close(self) -> None:
        if self._on_piece in self.swarm.piece_listeners:
            self.swarm.piece_listeners.remove(self._on_piece)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # a crash of the fallback must not stop the engine leaving the broadcast
                log.exception("HLS origin fallback of %s ended with an error", self.swarm.content_id.hex())
        self.log_share("leaving")

    def log_share(self, why: str) -> None:
        stats = self.swarm.stats
        total = stats.downloaded + stats.downloaded_from_origin
        share = 100.0 * stats.downloaded_from_origin / total if total else 0.0
        log.info("%s %s: %d bytes from peers, %d from the HLS origin (%.1f %%), %d origin segments rejected",
                 why, self.swarm.content_id.hex(), stats.downloaded, stats.downloaded_from_origin, share,
                 stats.origin_rejected)  # fmt: skip

    def _on_piece(self, index: int) -> None:
        piece = self.swarm.store.get(index)
        if piece is None or not piece.flags & PieceFlags.METADATA:
            return
        try:
            segment = SegmentIndex.decode(piece.data)
        except SegmentIndexError as error:  # signed, so the signer's bug: no fallback for it
            log.warning("segment index in piece %d unusable: %s", index, error)
            return
        self.policy.note_index(index, segment, time.monotonic())

    def _positions(self) -> list[int]:
        return [c.position for c in self.swarm.cursors if c.position is not None]

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT, connect=CONNECT_TIMEOUT)
        local = (self._local_ip, 0) if self._local_ip else None
        connector = aiohttp.TCPConnector(local_addr=local, limit=4)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector, auto_decompress=False) as session:
            while True:
                await asyncio.sleep(TICK)
                now = time.monotonic()
                store = self.swarm.store
                have = set(store.indices())
                for index in self.policy.due(now, have, self._positions()):
                    self.policy.tried.add(index)
                    await self._fetch(session, index)
                if now - self._last_log >= LOG_EVERY and self.swarm.stats.downloaded_from_origin:
                    self._last_log = now
                    self.log_share("broadcast")

    async def _fetch(self, session: aiohttp.ClientSession, index: int) -> None:
        known = self.policy.indexes.get(index)
        if known is None:
            return  # evicted while an earlier fetch of this tick ran (MAX_INDEXES)
        segment, _seen = known
        url = segment_url(self.base, segment.uri)
        if url is None:
            self.swarm.stats.origin_failed += 1
            log.info("HLS segment URI %r is not on the origin %s: not fetched", segment.uri[:300], self.base[:300])
            return
        stats = self.swarm.stats
        store = self.swarm.store
        count = len(segment.entries)
        missing = [j for j in range(count) if index + 1 + j not in store]
        if not missing:
            return
        # Only the bytes of the pieces still missing (HTTP Range, RFC 9110 §14): what peers gave is not fetched
        # again. An origin that ignores Range answers 200 with the whole segment, which is checked whole.
        first, stop = missing[0], missing[-1] + 1
        start, end = part_span(segment, first, stop)
        whole = (first, stop) == (0, count)
        headers = {} if whole else {"Range": f"bytes={start}-{end - 1}"}
        try:
            # No redirects: a 3xx would lead the engine off the origin the transport file names (segment_url).
            async with session.get(url, headers=headers, allow_redirects=False) as response:
                if response.status == 206 and not whole:
                    if response.headers.get("Content-Range", "").split("/")[0] != f"bytes {start}-{end - 1}":
                        raise SegmentError(f"Content-Range {response.headers.get('Content-Range', '')[:80]!r}")
                    data = await read_bounded(response, end - start, "segment range")
                    parts = check_parts(segment, first, stop, data)
                elif response.status == 200:
                    data = await read_bounded(response, segment.total_length, "segment")
                    all_parts = check_segment(segment, data)
                    parts = None if all_parts is None else all_parts[first:stop]
                else:
                    raise OSError(f"HTTP {response.status}")
        except SegmentError as error:  # bigger than its index says: not the signer's segment
            stats.origin_rejected += 1
            log.warning("HLS origin segment %s rejected, not shared: %s", url[:300], error)
            return
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            stats.origin_failed += 1
            log.info("HLS origin segment %s not fetched: %s", url[:300], str(error) or type(error).__name__)
            return
        stats.origin_fetched += len(data)
        now = time.monotonic()
        if parts is None:
            stats.origin_rejected += 1
            log.warning("HLS origin segment %s (pieces %d..%d) does not match its signed index: rejected, not "
                        "shared", url[:300], index + 1 + first, index + stop)  # fmt: skip
            return
        pieces = []
        for offset, part in enumerate(parts, start=first):
            entry, number = segment.entries[offset], index + 1 + offset
            if not self._verifier.verify(number, entry.flags, part, entry.signature):
                stats.origin_rejected += 1
                log.warning("HLS origin segment %s: piece %d fails its signature: rejected", url[:300], number)
                return
            pieces.append(StoredPiece(number, entry.flags, entry.signature, part))
        for piece in pieces:
            if piece.index not in store:
                stats.downloaded_from_origin += len(piece.data)
                self.swarm.add_local_piece(piece, now)
        stats.origin_segments += 1
