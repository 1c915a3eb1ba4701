"""The engine's HLS output: ``/ace/manifest.m3u8`` and its segments, one live output per broadcast for every player.

How this works. The first playlist request for a broadcast starts an :class:`HlsOutput`: a task that reads the
broadcast's verified pieces in order exactly as one ``/ace/getstream`` player does (``EngineBroadcast.pieces``: a
cursor of its own, counted as a player, so the broadcast stays joined while the output runs), feeds them to a
``TsSegmenter`` (segments cut at keyframes, ``SEGMENT_SECONDS`` long) and keeps the newest ones in a
``SegmentWindow`` (``WINDOW_SEGMENTS``, at most ``MAX_WINDOW_BYTES``). Every playlist and segment request of every
player is answered from that window, so the swarm has one reader per broadcast however many HLS players watch, and
all of them see the same playlist. A run of pieces the cursor skipped (not received in time: the data jumps to the
next random-access piece), or a piece the source flagged DISCONTINUITY (its input restarted: timestamps start
again), flags the next segment ``#EXT-X-DISCONTINUITY``. A timestamp jump nobody flagged (a segment that would last
longer than ``MAX_SEGMENT_SECONDS``) is treated alike: that segment is given the previous one's duration and the
next is flagged, so one bad jump does not leave the playlist with a target duration of hours.

Short segments and a short window are what keep an HLS player near live: hls.js and FFmpeg start three segments
from the end of a live playlist, so with 1 s segments they play about 3-4 s behind the engine's live edge, where a
2 s-fragment origin puts them 6-10 s behind.

Bounds: at most ``MAX_OUTPUTS`` outputs at once (the next broadcast's first playlist request is a 503, nothing is
evicted); an output stops ``IDLE_SECONDS`` after the last playlist or segment request (then its broadcast idles out
as after a getstream player); a broadcast that produces nothing within the engine's ``--startup-timeout`` ends its
output with a 504 naming the reason; a playlist request waits at most ``FIRST_SEGMENT_WAIT`` for the first segment
(a cold start gets a playlist with a segment in it rather than an empty one, which players treat as an error), and
is a 503 (retried by players) if there is none by then.
A segment URL outside the window is a 404.

A channel (several renditions of one broadcast) is answered with a master playlist by its own module, which lists
each rendition's media playlist at :func:`rendition_uri` and answers with :func:`master_response`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
import urllib.parse
from dataclasses import dataclass

from aiohttp import web

from swarmcast.media.hls_playlist import PLAYLIST_CONTENT_TYPE, SegmentWindow, Variant, master_playlist
from swarmcast.media.ts_segmenter import TsSegment, TsSegmenter
from swarmcast.node.engine import EngineBroadcast
from swarmcast.node.engine_limits import EngineBusyError

log = logging.getLogger("swarmcast.engine.hls")

SEGMENT_SECONDS = 1.0  # target segment duration (cut at the first keyframe at least this far from the last cut)
WINDOW_SEGMENTS = 6  # segments a playlist lists
MAX_SEGMENT_BYTES = 8 * 1024 * 1024  # one segment (a 1 s segment at 64 Mbit/s); the segmenter cuts at the cap
MAX_SEGMENT_SECONDS = 30.0  # a longer segment is a timestamp jump (PTS went back or leapt), not a long GOP
MAX_WINDOW_BYTES = 24 * 1024 * 1024  # all segments an output holds; the oldest go first past it
MAX_OUTPUTS = 8  # HLS outputs (broadcasts played over HLS) at once
MAX_ALIASES = 64  # remembered playlist requests (url=, magnet=, ...) -> their running output; the oldest go first
IDLE_SECONDS = 20.0  # an output nobody asked for a playlist or segment for this long stops
FIRST_SEGMENT_WAIT = 8.0  # a playlist request waits up to this long for an output's first segment

SEGMENT_PATH = "/ace/hls/{infohash}/{seq}.ts"
PLAYLIST_HEADERS = {"Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*"}
SEGMENT_HEADERS = {"Content-Type": "video/mp2t", "Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*"}
_SEQ = re.compile(r"\d{1,12}")
_INFOHASH = re.compile(r"[0-9a-f]{40}")


def rendition_uri(infohash: str) -> str:
    """The media playlist of one broadcast, relative to ``/ace/manifest.m3u8``: what a channel's master playlist
    lists for each of its renditions."""
    return "manifest.m3u8?" + urllib.parse.urlencode({"infohash": infohash})


def master_response(variants: list[Variant]) -> web.Response:
    """A channel's master playlist, answered as the media playlists are (the seam for channels: their module
    builds ``variants`` with ``uri=rendition_uri(infohash)`` for each rendition and returns this from the
    ``/ace/manifest.m3u8`` route)."""
    return web.Response(text=master_playlist(variants), content_type=PLAYLIST_CONTENT_TYPE, headers=PLAYLIST_HEADERS)


def segment_uri(infohash: str, seq: int) -> str:
    """A segment's URI as the playlist lists it: relative to ``/ace/manifest.m3u8``, so it works behind a proxy."""
    return f"hls/{infohash}/{seq}.ts"


class HlsStartError(Exception):
    """The broadcast produced nothing within the startup timeout (answered 504, the message says why)."""


class HlsNotReadyError(Exception):
    """No segment yet after ``first_segment_wait`` (answered 503: players retry, hls.js by its load policy)."""


@dataclass(frozen=True)
class HlsSettings:
    segment_seconds: float = SEGMENT_SECONDS
    window_segments: int = WINDOW_SEGMENTS
    max_segment_bytes: int = MAX_SEGMENT_BYTES
    max_window_bytes: int = MAX_WINDOW_BYTES
    max_outputs: int = MAX_OUTPUTS
    idle_seconds: float = IDLE_SECONDS
    first_segment_wait: float = FIRST_SEGMENT_WAIT


class HlsOutput:
    """One broadcast's live HLS output: a reader of its pieces, a segmenter and the window players are served from."""

    def __init__(self, broadcast: EngineBroadcast, settings: HlsSettings, *, startup_timeout: float,
                 now: float, first_sequence: int = 0) -> None:  # fmt: skip
        self.broadcast = broadcast
        self.settings = settings
        self.window = SegmentWindow(settings.window_segments, max_bytes=settings.max_window_bytes,
                                    target_duration=settings.segment_seconds,
                                    first_sequence=first_sequence)  # fmt: skip
        self.segmenter = TsSegmenter(settings.segment_seconds, max_segment_bytes=settings.max_segment_bytes)
        self.startup_timeout = startup_timeout
        self.last_request = now
        self.segments = 0  # segments cut so far
        self.error: str | None = None  # why the output ended without a segment
        self.finished = False
        self._ready = asyncio.Event()  # set at the first segment, or when the output ends
        self._jumped = False  # the next piece does not continue the last one
        # The next segment out of the segmenter is a discontinuity; so is the first of an output that continues
        # the numbering of an earlier one: a player still reloading the old playlist jumps in time there.
        self._flag_next = first_sequence > 0
        self._last_duration = settings.segment_seconds
        self._stop = False

    @property
    def infohash(self) -> str:
        return self.broadcast.infohash

    def touch(self, now: float) -> None:
        self.last_request = now

    def stop(self) -> None:
        self._stop = True

    def _stopped(self) -> bool:
        # Checked by the piece reader at least every engine.POLL_INTERVAL, so an idle output ends within that.
        return self._stop or time.monotonic() - self.last_request > self.settings.idle_seconds

    def _on_discontinuity(self) -> None:
        self._jumped = True

    def _add(self, segments: list[TsSegment]) -> None:
        for cut in segments:
            segment = cut
            if self._flag_next:
                segment = dataclasses.replace(segment, discontinuity=True)
                self._flag_next = False
            if segment.duration > MAX_SEGMENT_SECONDS:
                segment = dataclasses.replace(segment, duration=self._last_duration)
                self._flag_next = True
            self._last_duration = segment.duration
            self.window.add(segment)
            self.segments += 1
            self._ready.set()

    async def run(self) -> None:
        pieces = self.broadcast.pieces(self._stopped, on_discontinuity=self._on_discontinuity)
        try:
            try:
                async with asyncio.timeout(self.startup_timeout):
                    first = await anext(pieces)
            except StopAsyncIteration:
                return  # stopped (idle) or the broadcast was left before it started
            except TimeoutError:
                self.error = (f"broadcast {self.infohash} did not start within {self.startup_timeout:.0f} s: "
                              f"{self.broadcast.startup_problem()}")  # fmt: skip
                return
            self._add(self.segmenter.feed(first))
            async for data in pieces:
                if self._jumped:
                    self._jumped = False
                    self.segmenter.discontinuity()
                self._add(self.segmenter.feed(data))
            if self.broadcast.closed.is_set():
                self._add(self.segmenter.flush())
        finally:
            await pieces.aclose()
            self.window.end()
            self.finished = True
            self._ready.set()

    async def wait_ready(self, timeout: float) -> None:
        """Until the first segment is cut or the output has ended, for at most ``timeout`` s."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._ready.wait()

    def playlist(self) -> str:
        return self.window.render(lambda seq: segment_uri(self.infohash, seq))


class HlsOutputs:
    """The engine's HLS outputs by infohash; each one's task is owned here and ended by ``close()``."""

    def __init__(self, settings: HlsSettings | None = None) -> None:
        self.settings = settings or HlsSettings()
        self._outputs: dict[str, HlsOutput] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # What a playlist request named (selector, value) -> the infohash it resolved to. Players reload the playlist
        # every second at the URL they were given; with url= that would fetch the transport file each time (and
        # fail while its server is away). A running output answers those reloads without a lookup.
        self._aliases: dict[tuple[str, str], str] = {}
        # Where an ended output's numbering stopped, by infohash: an output started again for the same broadcast
        # carries on from there, so a player's media sequence never goes back (RFC 8216 §6.2.1).
        self._next_sequence: dict[str, int] = {}

    def running(self, selector: str, value: str) -> HlsOutput | None:
        """The running output a playlist request like this one resolved to, if any."""
        infohash = self._aliases.get((selector, value))
        output = self._outputs.get(infohash) if infohash is not None else None
        if output is None or output.finished or output.broadcast.closed.is_set():
            return None
        return output

    def remember(self, selector: str, value: str, infohash: str) -> None:
        key = (selector, value)
        self._aliases.pop(key, None)
        self._aliases[key] = infohash
        while len(self._aliases) > MAX_ALIASES:
            del self._aliases[next(iter(self._aliases))]

    def __len__(self) -> int:
        """Outputs running (one that has just ended is not counted: its slot is free)."""
        return sum(1 for output in self._outputs.values() if not output.finished)

    def get(self, infohash: str) -> HlsOutput | None:
        return self._outputs.get(infohash)

    def start(self, broadcast: EngineBroadcast, *, startup_timeout: float, now: float) -> HlsOutput:
        """The broadcast's output, started if need be; EngineBusyError at ``max_outputs``."""
        output = self._outputs.get(broadcast.infohash)
        if output is not None and output.broadcast is broadcast and not output.finished:
            output.touch(now)
            return output
        if output is not None:
            self._forget(output)  # ended, or of a broadcast the engine left and joined again
        if len(self) >= self.settings.max_outputs:
            raise EngineBusyError(f"the engine already gives HLS out of {self.settings.max_outputs} broadcasts "
                                  "(the limit); try again later, or play /ace/getstream")  # fmt: skip
        output = HlsOutput(broadcast, self.settings, startup_timeout=startup_timeout, now=now,
                           first_sequence=self._next_sequence.get(broadcast.infohash, 0))  # fmt: skip
        task = asyncio.create_task(output.run(), name=f"hls-out-{broadcast.infohash[:8]}")
        self._outputs[output.infohash] = output
        self._tasks[output.infohash] = task
        task.add_done_callback(lambda done: self._ended(output, done))
        log.info("HLS output of %s started", output.infohash)
        return output

    def _ended(self, output: HlsOutput, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("HLS output of %s failed", output.infohash, exc_info=task.exception())
        log.info("HLS output of %s ended after %d segments%s", output.infohash, output.segments,
                 f": {output.error}" if output.error else "")  # fmt: skip
        # A request waiting on it still holds it (and reads its error); the next request starts a new one.
        self._forget(output)

    def _forget(self, output: HlsOutput) -> None:
        if self._outputs.get(output.infohash) is output:
            del self._outputs[output.infohash]
            self._tasks.pop(output.infohash, None)
            self._next_sequence.pop(output.infohash, None)
            self._next_sequence[output.infohash] = output.window.next_sequence
            while len(self._next_sequence) > MAX_ALIASES:
                del self._next_sequence[next(iter(self._next_sequence))]

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for output in self._outputs.values():
            output.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._outputs.clear()
        self._tasks.clear()


async def playlist_response(outputs: HlsOutputs, broadcast: EngineBroadcast | HlsOutput, *,
                            startup_timeout: float) -> web.Response:  # fmt: skip
    """The broadcast's (or a running output's) live media playlist; HlsStartError (504) if it did not start,
    HlsNotReadyError (503) if no segment came in time, EngineBusyError (503) at the limit of outputs."""
    if isinstance(broadcast, HlsOutput):
        output = broadcast
    else:
        output = outputs.start(broadcast, startup_timeout=startup_timeout, now=time.monotonic())
    await output.wait_ready(outputs.settings.first_segment_wait)
    output.touch(time.monotonic())
    if output.error is not None:
        raise HlsStartError(output.error)
    if output.segments == 0 and not output.finished:
        # An empty live playlist is an error to hls.js and to FFmpeg; a 503 is retried by both kinds of player.
        raise HlsNotReadyError(f"broadcast {broadcast.infohash} has not produced its first HLS segment yet "
                               f"(waited {outputs.settings.first_segment_wait:.0f} s); try again")  # fmt: skip
    return web.Response(text=output.playlist(), content_type=PLAYLIST_CONTENT_TYPE, headers=PLAYLIST_HEADERS)


def segment_response(outputs: HlsOutputs, infohash: str, seq_text: str) -> web.Response:
    """One segment of a live output; 404 for an output that does not run or a segment outside its window."""
    if not _INFOHASH.fullmatch(infohash) or not _SEQ.fullmatch(seq_text):
        raise web.HTTPNotFound
    output = outputs.get(infohash)
    segment = output.window.get(int(seq_text)) if output is not None else None
    if output is None or segment is None:
        raise web.HTTPNotFound
    output.touch(time.monotonic())
    return web.Response(body=segment.data, headers=SEGMENT_HEADERS)
