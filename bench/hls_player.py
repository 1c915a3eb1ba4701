"""An HLS player model for the engine's ``/ace/manifest.m3u8`` (``bench/swarm.py --player hls``).

It plays like bench/baseline_nginx.py's players of the nginx origin, so the two are compared on equal terms: fetch
the playlist, start at the third-last segment (hls.js ``liveSyncDurationCount`` = 3, FFmpeg ``live_start_index`` =
-3), download every later segment once, in order, reload every target duration / 2. What differs is how a keyframe's
source stamp is found: the engine passes the source's bytes through unchanged and its segmenter keeps the clock
packet with the keyframe it precedes, so each segment is fed to the swarm players' own ``StreamWatcher`` at the
moment it finished downloading: startup (first decoded frame), and (stamp, arrival) for every keyframe, arrival
being the segment's (a player cannot use a segment before it has it all), as in the nginx baseline.

Alone, against any live playlist whose segments carry the clock packets (e.g. a second player joining an output
that already runs): ``python bench/hls_player.py 'http://127.0.0.1:6878/ace/manifest.m3u8?url=...' --duration 20``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.baseline_nginx import (
    LIVE_START_FROM_END,
    MIN_POLL_S,
    PLAYLIST_MAX_BYTES,
    SEGMENT_MAX_BYTES,
    Playlist,
    _fetch,
    _HttpStatusError,
    parse_playlist,
)
from bench.common import StreamStats, StreamWatcher, percentile

REQUEST_TIMEOUT_S = 20.0  # the engine may hold a cold playlist request up to ~8 s for its first segment


@dataclass
class HlsCounters:
    playlist_requests: int = 0
    segments: int = 0
    skipped_segments: int = 0  # left the window before this player fetched them
    http_errors: int = 0
    last_error: str | None = None


async def play_hls(url: str, stats: StreamStats, until: float) -> HlsCounters:
    """Play the live playlist at ``url`` until the monotonic time ``until``; fills ``stats`` as a swarm player's."""
    counters = HlsCounters()
    watcher = StreamWatcher(stats)
    next_sequence: int | None = None
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < until:
            poll = 0.5
            try:
                body = await _fetch(session, url, PLAYLIST_MAX_BYTES)
                counters.playlist_requests += 1
                playlist = parse_playlist(body.decode("utf-8", "replace"))
                if playlist.target_duration > 0:
                    poll = max(MIN_POLL_S, playlist.target_duration / 2)
                if next_sequence is None and playlist.segments:
                    start = max(0, len(playlist.segments) - LIVE_START_FROM_END)
                    next_sequence = playlist.segments[start].sequence
                next_sequence = await _download_new(session, url, playlist, next_sequence, watcher, counters, until)
            except (aiohttp.ClientError, TimeoutError, ValueError, _HttpStatusError) as error:
                counters.http_errors += 1
                counters.last_error = f"{type(error).__name__}: {error}"
            await asyncio.sleep(max(0.0, min(poll, until - time.monotonic())))
    return counters


async def _download_new(session: aiohttp.ClientSession, url: str, playlist: Playlist, next_sequence: int | None,
                        watcher: StreamWatcher, counters: HlsCounters, until: float) -> int | None:  # fmt: skip
    for segment in playlist.segments:
        if next_sequence is None or segment.sequence < next_sequence:
            continue
        if time.monotonic() >= until:
            break
        data = await _fetch(session, urllib.parse.urljoin(url, segment.uri), SEGMENT_MAX_BYTES)
        watcher.feed(data, time.time())
        counters.skipped_segments += segment.sequence - next_sequence
        counters.segments += 1
        next_sequence = segment.sequence + 1
    return next_sequence


def main(argv: list[str] | None = None) -> int:
    """``python bench/hls_player.py URL [--duration S]``: one player of a live playlist; its delay figures."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("url")
    parser.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args(argv)
    stats = StreamStats(requested_wall=time.time())
    counters = asyncio.run(play_hls(args.url, stats, time.monotonic() + args.duration))
    delays = [arrival - stamp for stamp, arrival in stats.stamps]
    first = stats.stamps[0][1] - stats.stamps[0][0] if stats.stamps else None
    startup = None if stats.first_frame_wall is None else stats.first_frame_wall - stats.requested_wall
    print(json.dumps({
        "startup_s": None if startup is None else round(startup, 3),
        "first_segment_delay_s": None if first is None else round(first, 3),
        "delay_p50": percentile(delays, 50), "delay_p95": percentile(delays, 95),
        "delay_max": max(delays, default=None), "stamps": len(delays), **asdict(counters),
    }))  # fmt: skip
    return 0 if delays else 1


if __name__ == "__main__":
    sys.exit(main())
