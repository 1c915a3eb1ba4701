"""A live HLS input: poll the media playlist, fetch each new segment once, in order.

How this works. ``read_hls_segments`` reads the playlist at ``url`` (a master playlist is followed to its
highest-BANDWIDTH variant, or to the one ``variant`` names), hands each parse to the sans-IO ``SequenceTracker``
(hls_tracker.py: media sequence, bad manifests, resets, origin restarts) and fetches the segments it answers with,
yielding each as a ``FetchedSegment`` (the TS bytes, our sequence number, a discontinuity mark). The playlist is
read again every half target duration (bounded to ``MIN_POLL``..``MAX_POLL``), after a bad playlist every
``bad_manifest_retry_interval`` seconds, after an unreachable origin every ``reconnect_interval``.

Bounded everywhere: a playlist answer is read up to ``MAX_PLAYLIST_BYTES`` (a bigger or endless one is a bad
manifest) within ``PLAYLIST_TIMEOUT``; a segment up to ``max_segment_bytes`` within ``SEGMENT_TIMEOUT``, tried
``SEGMENT_ATTEMPTS`` times, then skipped (the next one carries a discontinuity); a segment that is not MPEG-TS
(sniff.py) is skipped likewise. A failure never ends the reader: the source keeps its broadcast and its monitor
(``InputStatus``) says what the origin does.

``read_hls_source`` is the byte-stream face the source node's ingest loop takes (as http_ts.read_ts_source):
segment bytes in order, ``on_reconnect`` before each discontinuity so the cutter marks one. ``read_source`` picks
the reader: an ``.m3u8`` URL is HLS from the start, and a URL that answers with a playlist (sniffed from its first
bytes or its Content-Type) is switched to HLS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from swarmcast.ingest.hls_parse import (
    MAX_PLAYLIST_BYTES,
    MasterPlaylist,
    MediaPlaylist,
    PlaylistError,
    choose_variant,
    parse_playlist,
)
from swarmcast.ingest.hls_tracker import SequenceTracker, Update
from swarmcast.ingest.http_ts import CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, HlsInputError, read_ts_source
from swarmcast.ingest.reconnect import ReconnectPolicy
from swarmcast.ingest.sniff import sniff
from swarmcast.ingest.status import InputStatus

log = logging.getLogger("swarmcast.ingest.hls")

MAX_SEGMENT_BYTES = 16 * 1024 * 1024  # one segment; 8 s of 16 Mbit/s
PLAYLIST_TIMEOUT = 5.0  # seconds for one playlist answer, whole
SEGMENT_TIMEOUT = 15.0  # seconds for one segment, whole
SEGMENT_ATTEMPTS = 2  # tries of one segment before it is skipped
MIN_POLL = 0.5
MAX_POLL = 5.0
LOG_EVERY = 30.0  # seconds between repeated lines of one kind of trouble
HLS_CONTENT_TYPES = ("application/vnd.apple.mpegurl", "application/x-mpegurl", "audio/mpegurl", "audio/x-mpegurl")


class SegmentError(Exception):
    """A segment that cannot be used (HTTP error, too big, not TS); the message says why."""


@dataclass(frozen=True)
class HlsSettings:
    bad_manifest_max_errors: int = 5  # --hls-bad-manifest-max-errors: consecutive bad playlists before a reset
    bad_manifest_retry_interval: float = 2.0  # --hls-bad-manifest-retry-interval: seconds between bad ones
    force_monotonic: bool = False  # --hls-force-monotonic-sequence 1
    variant: str | None = None  # --hls-variant: a master playlist's variant by NAME or file stem
    reconnect_interval: float = 1.0  # seconds between attempts to reach an unreachable origin
    max_segment_bytes: int = MAX_SEGMENT_BYTES


@dataclass(frozen=True)
class FetchedSegment:
    data: bytes
    url: str
    sequence: int  # ours (hls_tracker.py)
    duration: float
    discontinuity: bool


def is_hls_url(url: str) -> bool:
    return urlsplit(url).path.lower().endswith((".m3u8", ".m3u"))


async def read_bounded(response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """The whole body, or SegmentError once it passes ``limit`` bytes (by Content-Length or as it comes)."""
    if response.content_length is not None and response.content_length > limit:
        raise SegmentError(f"{what} of {response.content_length} bytes (more than {limit})")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise SegmentError(f"{what} of more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _Logger:
    """One line per kind of trouble, then one every LOG_EVERY seconds: a broken origin does not fill the log."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def warn_once(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if len(self._last) > 64:
            self._last.clear()
        if now - self._last.get(kind, -LOG_EVERY) >= LOG_EVERY:
            self._last[kind] = now
            log.warning(message, *args)


async def _get_playlist(session: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=PLAYLIST_TIMEOUT)) as response:
        if response.status != 200:
            raise SegmentError(f"playlist: HTTP {response.status} {response.reason or ''}".rstrip())
        try:
            body = await read_bounded(response, MAX_PLAYLIST_BYTES, "playlist")
        except SegmentError as error:
            raise PlaylistError(str(error)) from None
        return body.decode("utf-8", errors="replace"), str(response.url)


async def _get_segment(session: aiohttp.ClientSession, url: str, limit: int) -> bytes:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=SEGMENT_TIMEOUT)) as response:
        if response.status != 200:
            raise SegmentError(f"HTTP {response.status} {response.reason or ''}".rstrip())
        data = await read_bounded(response, limit, "segment")
    verdict = sniff(data[:2048], response.headers.get("Content-Type"), ended=True)
    if not verdict.is_ts:
        raise SegmentError(verdict.reason or "not MPEG-TS")
    return data[verdict.offset :]


def _poll_delay(playlist: MediaPlaylist | None) -> float:
    target = playlist.target_duration if playlist is not None and playlist.target_duration else 2.0
    return max(MIN_POLL, min(MAX_POLL, target / 2))


async def read_hls_segments(
    url: str, settings: HlsSettings | None = None, *, status: InputStatus | None = None
) -> AsyncIterator[FetchedSegment]:
    settings = settings or HlsSettings()
    status = status if status is not None else InputStatus(url)
    tracker = SequenceTracker(max_bad=settings.bad_manifest_max_errors, force_monotonic=settings.force_monotonic)
    policy = ReconnectPolicy(settings.reconnect_interval)
    logger = _Logger()
    media_url: str | None = None
    pending_discontinuity = False
    timeout = aiohttp.ClientTimeout(total=SEGMENT_TIMEOUT, connect=CONNECT_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            playlist: MediaPlaylist | None = None
            update = Update()
            delay: float
            try:
                text, final_url = await _get_playlist(session, media_url or url)
                parsed = parse_playlist(text, final_url)
                if isinstance(parsed, MasterPlaylist):
                    if media_url is not None:
                        raise PlaylistError("a variant playlist is a master playlist")
                    variant = choose_variant(parsed, settings.variant)
                    log.info("master playlist: variant %r (BANDWIDTH %d) %s", variant.name, variant.bandwidth,
                             variant.url)  # fmt: skip
                    media_url = variant.url
                    continue
                playlist = parsed
                update = tracker.update(playlist)
            except PlaylistError as error:
                update = tracker.bad(str(error))
            except (SegmentError, aiohttp.ClientError, TimeoutError, OSError) as error:
                reason = str(error) or type(error).__name__
                policy.failed(time.monotonic())
                status.connected, status.attempts = False, policy.attempts
                status.last_error, status.last_error_at = f"HLS playlist: {reason}"[:300], time.time()
                logger.warn_once("unreachable", "HLS playlist %s unreachable: %s; retrying every %g s",
                               media_url or url, reason, settings.reconnect_interval)  # fmt: skip
                media_url = None  # read the master playlist again: the variant may have moved
                await asyncio.sleep(settings.reconnect_interval)
                continue
            if update.bad is not None:
                status.last_error, status.last_error_at = f"bad HLS manifest: {update.bad}"[:300], time.time()
                logger.warn_once("bad", "bad HLS manifest (%d in a row, reset after %d): %s", tracker.bad_count,
                               settings.bad_manifest_max_errors, update.bad)  # fmt: skip
            if update.reset:
                log.warning("HLS stream reset after %d bad manifests: starting again at the live end",
                            settings.bad_manifest_max_errors)  # fmt: skip
            if update.restarted:
                log.info("HLS origin restarted its media sequence: following the new run")
            if playlist is not None and update.bad is None:
                if not status.connected:
                    log.info("HLS input connected: %s", media_url or url)
                    if policy.attempts:
                        status.reconnects += 1
                status.connected, status.attempts = True, 0
                policy.connected()
            for wanted in update.wanted:
                data = None
                for attempt in range(SEGMENT_ATTEMPTS):
                    try:
                        data = await _get_segment(session, wanted.segment.url, settings.max_segment_bytes)
                        break
                    except (SegmentError, aiohttp.ClientError, TimeoutError, OSError) as error:
                        reason = str(error) or type(error).__name__
                        if attempt + 1 == SEGMENT_ATTEMPTS:
                            status.last_error, status.last_error_at = f"HLS segment: {reason}"[:300], time.time()
                            logger.warn_once("segment", "HLS segment %s skipped: %s", wanted.segment.url[:300], reason)
                if data is None:
                    pending_discontinuity = True
                    continue
                status.bytes_received += len(data)
                yield FetchedSegment(data, wanted.segment.url, wanted.sequence, wanted.segment.duration,
                                     wanted.discontinuity or pending_discontinuity)  # fmt: skip
                pending_discontinuity = False
            if update.bad is not None and not update.reset:
                delay = settings.bad_manifest_retry_interval
            else:
                delay = _poll_delay(playlist)
            await asyncio.sleep(delay)


async def read_hls_source(
    url: str,
    *,
    settings: HlsSettings | None = None,
    on_reconnect: Callable[[], None] | None = None,
    status: InputStatus | None = None,
) -> AsyncIterator[bytes]:
    """The segments' bytes in order; ``on_reconnect`` before each discontinuity after the first segment."""
    first = True
    async for segment in read_hls_segments(url, settings, status=status):
        if segment.discontinuity and not first and on_reconnect is not None:
            on_reconnect()
        first = False
        yield segment.data


async def read_source(
    url: str,
    *,
    reconnect_interval: float = 1.0,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    on_reconnect: Callable[[], None] | None = None,
    status: InputStatus | None = None,
    hls: HlsSettings | None = None,
) -> AsyncIterator[bytes]:
    """The source node's input: MPEG-TS over HTTP, or HLS (by its URL, or by what the URL answers)."""
    settings = hls or HlsSettings(reconnect_interval=reconnect_interval)
    if not is_hls_url(url):
        try:
            async for chunk in read_ts_source(url, reconnect_interval=reconnect_interval, read_timeout=read_timeout,
                                              on_reconnect=on_reconnect, status=status):  # fmt: skip
                yield chunk
        except HlsInputError:
            log.info("the input answers with an HLS playlist: reading it as HLS: %s", url)
    async for chunk in read_hls_source(url, settings=settings, on_reconnect=on_reconnect, status=status):
        yield chunk
