"""The stream registry: stream id → its renditions' live playlists, fed by the publisher of the moment.

How this works. The RTMP server calls ``start_publish`` for every publish it accepts. A new id gets a
``Stream`` and a media pipeline (broadcaster/pipeline.py, part of the ladder); the pipeline's MPEG-TS for each
rendition goes through that rendition's ``TsSegmenter`` into its ``SegmentWindow`` (the playlist) and to the
clients of its continuous ``.ts``. When the publisher goes, the pipeline is drained and the open segment flushed,
and the stream waits ``reconnect_grace`` seconds: a publisher that comes back to the same id in that time gets a
new pipeline feeding the same segmenters after a ``discontinuity()``, so the playlists go on with
``#EXT-X-DISCONTINUITY`` and rising sequence numbers and players need not reload. After the grace the playlists
end (``#EXT-X-ENDLIST``), and ``forget_after`` seconds later the stream is forgotten.

A second publisher for an id that is live is refused (the first keeps it), as nginx-rtmp does. At most
``max_streams`` streams exist at once (live, in grace or ended but not yet forgotten; an ended one is forgotten
early to make room).

Part E (the P2P renditions) plugs in with ``on_stream_started`` (the first time a stream's renditions are
known) and ``on_stream_ended``: lists of callables on the registry, called on the event loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from swarmcast.broadcaster.profiles import SOURCE_RENDITION
from swarmcast.broadcaster.rtmp_server import Publisher, PublishRefusedError
from swarmcast.bytequeue import BoundedByteQueue
from swarmcast.media.hls_playlist import DEFAULT_WINDOW, SegmentWindow
from swarmcast.media.ts_segmenter import TsSegment, TsSegmenter

if TYPE_CHECKING:
    from swarmcast.broadcaster.pipeline import RenditionInfo
    from swarmcast.broadcaster.profiles import Profile

log = logging.getLogger("swarmcast.broadcaster.streams")


DEFAULT_RECONNECT_GRACE: Final = 10.0
DEFAULT_MAX_STREAMS: Final = 16
DEFAULT_FORGET_AFTER: Final = 60.0  # seconds an ended stream's playlists (with ENDLIST) stay up
DEFAULT_SEGMENT_DURATION: Final = 2.0
DEFAULT_LIVE_QUEUE_BYTES: Final = 8 * 1024 * 1024  # per /stream/<id>/<rendition>.ts client
MAX_REMEMBERED_SEQUENCES: Final = 1024  # (stream id, rendition) numberings kept after their streams are forgotten
PIPELINE_CLOSE_TIMEOUT: Final = 5.0  # at shutdown: a pipeline thread stuck in FFmpeg must not hold the process


class Pipeline(Protocol):
    def feed(self, flv: bytes) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    async def wait_closed(self) -> None: ...


class PipelineFactory(Protocol):
    def __call__(self, stream_id: str, profiles: list[Profile], *, on_ts: Callable[[str, bytes], None],
                 on_info: Callable[[list[RenditionInfo]], None],
                 on_error: Callable[[str], None]) -> Pipeline: ...  # fmt: skip


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    profiles: tuple[Profile, ...] = ()
    segment_duration: float = DEFAULT_SEGMENT_DURATION
    window: int = DEFAULT_WINDOW
    reconnect_grace: float = DEFAULT_RECONNECT_GRACE
    max_streams: int = DEFAULT_MAX_STREAMS
    forget_after: float = DEFAULT_FORGET_AFTER
    live_queue_bytes: int = DEFAULT_LIVE_QUEUE_BYTES


class LiveClient(BoundedByteQueue):
    """One reader of a rendition's continuous MPEG-TS: whole segments as they complete, from a keyframe on.

    The queue is bounded: a client more than ``max_bytes`` behind is dropped (``on_drop``), so a slow reader
    never holds memory or the others."""


class Rendition:
    def __init__(self, name: str, config: RegistryConfig, *, first_sequence: int = 0) -> None:
        self.name = name
        self.segmenter = TsSegmenter(config.segment_duration)
        self.window = SegmentWindow(config.window, target_duration=config.segment_duration,
                                    first_sequence=first_sequence)  # fmt: skip
        self.info: RenditionInfo | None = None
        self.clients: set[LiveClient] = set()
        self._live_queue_bytes = config.live_queue_bytes

    def feed(self, data: bytes) -> None:
        self._add(self.segmenter.feed(data))

    def flush(self) -> None:
        self._add(self.segmenter.flush())

    def _add(self, segments: list[TsSegment]) -> None:
        for segment in segments:
            self.window.add(segment)
            for client in tuple(self.clients):
                client.push(segment.data)

    def subscribe(self, on_drop: Callable[[], None]) -> LiveClient:
        """A live client, primed with the newest segment (a keyframe with PAT and PMT in front)."""
        client = LiveClient(self._live_queue_bytes, on_drop)
        if self.window.ended:
            client.end()
            return client
        newest = self.window.newest_sequence
        segment = self.window.get(newest) if newest is not None else None
        if segment is not None:
            client.push(segment.data)
        self.clients.add(client)
        return client

    def unsubscribe(self, client: LiveClient) -> None:
        self.clients.discard(client)

    def end(self) -> None:
        self.window.end()
        for client in tuple(self.clients):
            client.end()
        self.clients.clear()


@dataclass
class Stream:
    stream_id: str
    renditions: dict[str, Rendition] = field(default_factory=dict)
    state: str = "live"  # "live" (a publisher), "grace" (waiting for one), "ended"
    publisher_peer: str | None = None
    publishes: int = 0
    started: bool = False  # on_stream_started has run
    ended_at: float | None = None

    @property
    def infos(self) -> list[RenditionInfo]:
        return [r.info for r in self.renditions.values() if r.info is not None]


class _Publish:
    """The registry's side of one accepted publish (the rtmp_server.Publisher the session feeds)."""

    def __init__(self, registry: StreamRegistry, stream: Stream, generation: int, pipeline: Pipeline) -> None:
        self.registry = registry
        self.stream = stream
        self.generation = generation
        self.pipeline = pipeline
        self.ended = False

    def feed(self, data: bytes) -> None:
        if not self.ended:
            self.pipeline.feed(data)

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.registry._publisher_gone(self)


def _default_pipeline(stream_id: str, profiles: list[Profile], *, on_ts: Callable[[str, bytes], None],
                      on_info: Callable[[list[RenditionInfo]], None], on_error: Callable[[str], None]) -> Pipeline:
    # Imported here: PyAV costs every command that imports this module 0.3 s and 50 MB at start.
    from swarmcast.broadcaster.pipeline import MediaPipeline  # noqa: PLC0415

    return MediaPipeline(stream_id, profiles, on_ts=on_ts, on_info=on_info, on_error=on_error)  # fmt: skip


class StreamRegistry:
    """Every stream of this broadcaster. Use from the event loop thread; ``close()`` ends everything it owns."""

    def __init__(self, config: RegistryConfig, *, pipeline_factory: PipelineFactory = _default_pipeline,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.config = config
        self._pipeline_factory = pipeline_factory
        self._clock = clock
        self._streams: dict[str, Stream] = {}
        self._current: dict[str, _Publish] = {}  # stream id -> its publish of the moment (live or draining)
        self._generation = 0
        self._grace_timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.current_stream: str | None = None  # the last stream to start (/stream/current.m3u8)
        self.on_stream_started: list[Callable[[str, list[RenditionInfo]], None]] = []
        self.on_stream_ended: list[Callable[[str], None]] = []
        self.rendition_names = (SOURCE_RENDITION, *(p.name for p in config.profiles))
        # Where each (stream id, rendition)'s numbering got to: an id published again after its stream ended goes
        # on from there, so a segment URL (cached up to SEGMENT_CACHE seconds) never names two different segments.
        self._next_sequence: dict[tuple[str, str], int] = {}

    def get(self, stream_id: str) -> Stream | None:
        self._forget_old()
        return self._streams.get(stream_id)

    def streams(self) -> list[Stream]:
        self._forget_old()
        return list(self._streams.values())

    # -- publishers ----------------------------------------------------------------------------------------------

    def start_publish(self, stream_id: str, peer: str, close: Callable[[str], None]) -> Publisher:
        self._forget_old()
        stream = self._streams.get(stream_id)
        if stream is not None and stream.state == "live":
            raise PublishRefusedError(f"stream {stream_id!r} is already being published (from "
                                      f"{stream.publisher_peer})")  # fmt: skip
        if stream is not None and stream.state == "ended":
            del self._streams[stream_id]  # an id used again after its end is a new stream
            stream = None
        if stream is None:
            self._make_room(stream_id)
            stream = Stream(stream_id)
            self._streams[stream_id] = stream
            log.info("stream %r: new, from %s", stream_id, peer)
        else:
            timer = self._grace_timers.pop(stream_id, None)
            if timer is not None:
                timer.cancel()
            old = self._current.pop(stream_id, None)
            if old is not None:
                old.pipeline.abort()  # still draining the last publisher's tail: the new one wins
            for rendition in stream.renditions.values():
                rendition.flush()
                rendition.segmenter.discontinuity()
            log.info("stream %r: publisher back from %s within the %g s grace: the playlists continue after a "
                     "discontinuity", stream_id, peer, self.config.reconnect_grace)  # fmt: skip
        stream.state = "live"
        stream.publisher_peer = peer
        stream.publishes += 1
        self._generation += 1
        generation = self._generation

        def current() -> bool:
            publish = self._current.get(stream_id)
            return publish is not None and publish.generation == generation

        def on_ts(rendition: str, data: bytes) -> None:
            if current():
                self._on_ts(stream, rendition, data)

        def on_info(infos: list[RenditionInfo]) -> None:
            if current():
                self._on_info(stream, infos)

        def on_error(message: str) -> None:
            if current():  # the pipeline has logged it; the session logs the close with it
                close(message)

        pipeline = self._pipeline_factory(stream_id, list(self.config.profiles), on_ts=on_ts, on_info=on_info,
                                          on_error=on_error)  # fmt: skip
        publish = _Publish(self, stream, generation, pipeline)
        self._current[stream_id] = publish
        return publish

    def _make_room(self, stream_id: str) -> None:
        if len(self._streams) < self.config.max_streams:
            return
        ended = [s for s in self._streams.values() if s.state == "ended"]
        if not ended:
            raise PublishRefusedError(f"stream {stream_id!r}: {len(self._streams)} streams already "
                                      "(--max-streams)")  # fmt: skip
        oldest = min(ended, key=lambda s: s.ended_at or 0.0)
        del self._streams[oldest.stream_id]

    def _publisher_gone(self, publish: _Publish) -> None:
        stream = publish.stream
        if self._current.get(stream.stream_id) is not publish:
            return
        stream.state = "grace"
        stream.publisher_peer = None
        publish.pipeline.close()
        task = asyncio.get_running_loop().create_task(self._drain(publish), name=f"drain-{stream.stream_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        loop = asyncio.get_running_loop()
        self._grace_timers[stream.stream_id] = loop.call_later(self.config.reconnect_grace, self._grace_over,
                                                               stream)  # fmt: skip
        log.info("stream %r: publisher gone; waiting %g s for it to come back", stream.stream_id,
                 self.config.reconnect_grace)  # fmt: skip

    async def _drain(self, publish: _Publish) -> None:
        """Let the pipeline deliver what it was fed, then close the open segments (unless a new publisher came)."""
        try:
            await publish.pipeline.wait_closed()
        finally:
            if self._current.get(publish.stream.stream_id) is publish:
                for rendition in publish.stream.renditions.values():
                    rendition.flush()

    def _grace_over(self, stream: Stream) -> None:
        self._grace_timers.pop(stream.stream_id, None)
        if stream.state != "grace" or self._streams.get(stream.stream_id) is not stream:
            return
        publish = self._current.pop(stream.stream_id, None)
        if publish is not None:
            publish.pipeline.abort()
        self._end(stream)
        log.info("stream %r: no publisher for %g s: ended", stream.stream_id, self.config.reconnect_grace)

    def _end(self, stream: Stream) -> None:
        for rendition in stream.renditions.values():
            rendition.flush()
            rendition.end()
            key = (stream.stream_id, rendition.name)
            self._next_sequence.pop(key, None)  # most recent last: the oldest go first past the bound
            self._next_sequence[key] = rendition.window.next_sequence
            while len(self._next_sequence) > MAX_REMEMBERED_SEQUENCES:
                del self._next_sequence[next(iter(self._next_sequence))]
        stream.state = "ended"
        stream.ended_at = self._clock()
        if stream.started:
            for hook in tuple(self.on_stream_ended):
                try:
                    hook(stream.stream_id)
                except Exception:
                    log.exception("stream %r: an on_stream_ended hook failed", stream.stream_id)

    def _forget_old(self) -> None:
        now = self._clock()
        for stream in [s for s in self._streams.values() if s.state == "ended"]:
            if stream.ended_at is not None and now - stream.ended_at >= self.config.forget_after:
                del self._streams[stream.stream_id]
                if self.current_stream == stream.stream_id:
                    self.current_stream = None

    # -- the pipeline's callbacks --------------------------------------------------------------------------------

    def _rendition(self, stream: Stream, name: str) -> Rendition | None:
        rendition = stream.renditions.get(name)
        if rendition is None and name in self.rendition_names:  # the pipeline names only these: a bound
            first = self._next_sequence.get((stream.stream_id, name), 0)
            rendition = stream.renditions[name] = Rendition(name, self.config, first_sequence=first)
        return rendition

    def _on_ts(self, stream: Stream, name: str, data: bytes) -> None:
        rendition = self._rendition(stream, name)
        if rendition is not None:
            rendition.feed(data)

    def _on_info(self, stream: Stream, infos: list[RenditionInfo]) -> None:
        for info in infos:
            rendition = self._rendition(stream, info.name)
            if rendition is not None:
                rendition.info = info
        if not stream.started:
            stream.started = True
            self.current_stream = stream.stream_id
            log.info("stream %r: renditions %s", stream.stream_id,
                     ", ".join(f"{i.name} {i.width}x{i.height} {i.bandwidth} bit/s" for i in stream.infos))
            for hook in tuple(self.on_stream_started):
                try:
                    hook(stream.stream_id, stream.infos)
                except Exception:
                    log.exception("stream %r: an on_stream_started hook failed", stream.stream_id)

    async def close(self) -> None:
        """Stop every pipeline and end every stream (their playlists get ENDLIST)."""
        for timer in self._grace_timers.values():
            timer.cancel()
        self._grace_timers.clear()
        for publish in self._current.values():
            publish.ended = True
            publish.pipeline.abort()
        pipelines = [p.pipeline for p in self._current.values()]
        self._current.clear()
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for pipeline in pipelines:
            try:
                await asyncio.wait_for(pipeline.wait_closed(), PIPELINE_CLOSE_TIMEOUT)
            except TimeoutError:
                log.warning("a media pipeline did not stop within %g s; leaving it", PIPELINE_CLOSE_TIMEOUT)
            except Exception:
                log.exception("a media pipeline failed while stopping")
        for stream in self._streams.values():
            if stream.state != "ended":
                self._end(stream)
