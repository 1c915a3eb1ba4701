"""The media pipeline of one published stream: FLV bytes in, one continuous MPEG-TS byte stream per rendition out.

How this works (threads). The RTMP server hands us FLV bytes on the event loop thread (``feed``); they go into a
bounded in-memory queue (``max_queue_bytes``) and never block the loop: a queue that overflows means the worker
cannot keep up, and the stream is stopped with ``on_error`` rather than growing memory or stalling other streams.
A worker thread opens that queue with PyAV as a blocking file (``av.open(..., format="flv")``: FFmpeg's FLV
demuxer, so a publisher's onMetaData and sequence headers are read as FFmpeg reads them), checks the codecs, and
remuxes every packet without re-encoding into the source rendition's MPEG-TS muxer (media/tsmux.py). Video and
audio packets then go to the transcoder (broadcaster/transcoder.py), which decodes the video once and encodes every
profile in threads of its own, each behind a bounded queue so that a slow rendition never holds up the source.

Every callback runs on the event loop thread: the worker threads hop with ``call_soon_threadsafe``, in order, so
``on_info`` comes before the first ``on_ts``, ``on_error`` comes at most once, and nothing comes after
``wait_closed()`` has returned. ``close()`` ends the input (what is queued is still demuxed and flushed);
``wait_closed()`` joins the threads from a thread executor, so the loop never waits on them.

PyAV releases the GIL while FFmpeg decodes, encodes and scales, so the threads run in parallel with the loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import av
from av.container import InputContainer
from av.stream import Stream

from swarmcast.broadcaster.profiles import SOURCE_RENDITION, Profile
from swarmcast.media.codecs import (
    TS_OVERHEAD,
    audio_codec_string,
    avc_codec_string,
    unsupported_codec_problem,
)
from swarmcast.media.tsmux import TsMuxer, copy_packet

log = logging.getLogger("swarmcast.broadcaster")

DEFAULT_MAX_QUEUE_BYTES: Final = 8 * 1024 * 1024  # of FLV not yet demuxed: ~30 s at 2 Mbit/s
# FFmpeg's probe of the first bytes before the streams are known (the start-up delay of every rendition): an RTMP
# publisher sends its sequence headers first, so 1 s of media is plenty to see video and audio; FFmpeg's default
# (5 s) only adds delay. An audio track that starts more than this after the video is not found (and not sent).
PROBE_SIZE: Final = 1024 * 1024
ANALYZE_DURATION_US: Final = 1_000_000
DEFAULT_AUDIO_BITRATE: Final = 128_000  # for BANDWIDTH when the publisher does not say


@dataclass(frozen=True, slots=True)
class RenditionInfo:
    """What a master playlist says of one rendition (RFC 8216 §4.3.4.2)."""

    name: str
    width: int
    height: int
    bandwidth: int  # bits/s, a peak estimate of the whole TS
    codecs: str  # RFC 6381, e.g. "avc1.64001f,mp4a.40.2"
    frame_rate: float | None


class _FlvQueue:
    """The FLV bytes between the loop and the demuxer: a blocking ``read`` for PyAV, bounded by bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._chunks: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._ended = False  # no more data will come; read returns what is left, then b""
        self._cond = threading.Condition()

    def put(self, data: bytes) -> bool:
        """Queue ``data``; False (and nothing queued) when the queue is over its bound."""
        with self._cond:
            if self._ended:
                return True
            if self._queued + len(data) > self.max_bytes:
                return False
            self._chunks.append(data)
            self._queued += len(data)
            self._cond.notify()
            return True

    def end(self, *, discard: bool = False) -> None:
        with self._cond:
            self._ended = True
            if discard:
                self._chunks.clear()
                self._queued = 0
            self._cond.notify_all()

    def read(self, size: int = -1) -> bytes:
        with self._cond:
            while not self._chunks and not self._ended:
                self._cond.wait()
            if not self._chunks:
                return b""
            chunk = self._chunks.popleft()
            if 0 < size < len(chunk):
                self._chunks.appendleft(chunk[size:])
                chunk = chunk[:size]
            self._queued -= len(chunk)
            return chunk


class _StoppedError(Exception):
    """The pipeline was stopped (an error already reported, or the input discarded)."""


class _InputProblemError(Exception):
    """The published bytes cannot be used; the message says why, for the operator."""


class MediaPipeline:
    """FLV in → the source rendition (remuxed) and each profile (transcoded) as MPEG-TS, through callbacks.

    Construct and call from the event loop thread. ``on_ts(rendition, data)`` gets whole TS packets of the
    rendition (``"source"`` or a profile's name); ``on_info`` the renditions once the input's streams are known;
    ``on_error`` an operator-readable line when the input cannot be used (then the pipeline stops by itself).
    """

    def __init__(
        self,
        stream_id: str,
        profiles: list[Profile],
        *,
        on_ts: Callable[[str, bytes], None],
        on_info: Callable[[list[RenditionInfo]], None],
        on_error: Callable[[str], None],
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        rendition_queue_bytes: int | None = None,
    ) -> None:
        if max_queue_bytes <= 0:
            raise ValueError("max_queue_bytes must be positive")
        self.stream_id = stream_id
        self.profiles = list(profiles)
        self._on_ts = on_ts
        self._on_info = on_info
        self._on_error = on_error
        self._rendition_queue_bytes = rendition_queue_bytes  # None: transcoder.MAX_RENDITION_QUEUE_BYTES
        self._loop = asyncio.get_running_loop()
        self._input = _FlvQueue(max_queue_bytes)
        self._errored = False  # on_error posted (read and written on the loop thread only)
        self._stopping = threading.Event()  # set from any thread: workers stop at their next step
        self._closed = False
        self.bytes_in = 0
        self._thread = threading.Thread(target=self._run, name=f"pipeline-{stream_id[:32]}", daemon=True)
        self._thread.start()

    # -- the loop side ------------------------------------------------------------------------------------------

    def feed(self, flv: bytes) -> None:
        """FLV bytes as received (any chunking). Never blocks; an overflow stops the stream with on_error."""
        if self._closed or self._errored or not flv:
            return
        self.bytes_in += len(flv)
        if not self._input.put(flv):
            self._fail_on_loop(f"stream {self.stream_id}: the media pipeline is more than {self._input.max_bytes} "
                               "bytes behind the publisher (CPU overloaded?); stopping")  # fmt: skip

    def close(self) -> None:
        """End of input: what was fed is still demuxed and flushed; then the threads end."""
        if not self._closed:
            self._closed = True
            self._input.end()

    async def wait_closed(self) -> None:
        """Wait for every thread of the pipeline to end (call close() first, or have it stop on an error)."""
        if self._thread.is_alive():
            await self._loop.run_in_executor(None, self._thread.join)
        # The threads' last callbacks were posted before they ended, hence before the join's result: let them run.
        await asyncio.sleep(0)

    def abort(self) -> None:
        """Stop at once, dropping what is queued (the publisher is gone and nobody wants the tail)."""
        self._closed = True
        self._stopping.set()
        self._input.end(discard=True)

    def _fail_on_loop(self, message: str) -> None:
        if self._errored:
            return
        self._errored = True
        self._stopping.set()
        self._input.end(discard=True)
        log.warning("%s", message)
        self._on_error(message)

    # -- posting from the threads -------------------------------------------------------------------------------

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._deliver, callback, args)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._stopping.set()

    def _deliver(self, callback: Callable[..., None], args: tuple[Any, ...]) -> None:
        if self._errored and callback is not self._fail_on_loop:
            return
        callback(*args)

    def post_ts(self, rendition: str, data: bytes) -> None:
        if data:
            self._post(self._on_ts, rendition, data)

    def post_error(self, message: str) -> None:
        """From a worker thread: report ``message`` and stop everything."""
        self._stopping.set()
        self._input.end(discard=True)
        self._post(self._fail_on_loop, message)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- the demux thread ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._demux()
        except _StoppedError:
            pass
        except _InputProblemError as error:
            self.post_error(f"stream {self.stream_id}: {error}")
        except av.FFmpegError as error:
            self.post_error(f"stream {self.stream_id}: cannot read the published stream: {error}")
        except Exception as error:  # a bug: report it as the stream's error rather than die silently
            log.exception("stream %s: media pipeline failed", self.stream_id)
            self.post_error(f"stream {self.stream_id}: media pipeline failed: {type(error).__name__}: {error}")

    def _open(self) -> InputContainer:
        try:
            container: InputContainer = av.open(
                self._input, mode="r", format="flv",
                options={"probesize": str(PROBE_SIZE), "analyzeduration": str(ANALYZE_DURATION_US)},
            )  # fmt: skip
        except av.FFmpegError as error:
            if self.stopping or self.bytes_in == 0:  # stopped, or closed before anything came: nothing to say
                raise _StoppedError from None
            raise _InputProblemError(f"not a readable FLV stream ({error})") from None
        return container

    def _demux(self) -> None:
        from swarmcast.broadcaster.transcoder import Transcoder  # noqa: PLC0415 (keeps the import graph one-way)

        container = self._open()
        try:
            video = container.streams.video[0] if container.streams.video else None
            audio = container.streams.audio[0] if container.streams.audio else None
            problem = unsupported_codec_problem(video, audio)
            if problem is not None:
                raise _InputProblemError(problem)
            assert video is not None
            source = TsMuxer()
            out_video = source.add_copy(video)
            out_audio = source.add_copy(audio) if audio is not None else None
            transcoder = None
            if self.profiles:
                transcoder = Transcoder(self, self.profiles, video, audio, queue_bytes=self._rendition_queue_bytes)
            self._post(self._on_info, self._infos(container, video, audio))
            try:
                self._pump(container, video, audio, source, out_video, out_audio, transcoder)
            finally:
                if transcoder is not None:
                    transcoder.close()
        finally:
            container.close()

    def _pump(
        self,
        container: InputContainer,
        video: Stream,
        audio: Stream | None,
        source: TsMuxer,
        out_video: Stream,
        out_audio: Stream | None,
        transcoder: Any,
    ) -> None:
        for packet in container.demux(*(s for s in (video, audio) if s is not None)):
            if self.stopping:
                raise _StoppedError
            if packet.dts is None or packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            stream = packet.stream
            if transcoder is not None:
                transcoder.feed(packet)  # before the remux: muxing rescales the packet's timestamps
            source.mux(copy_packet(packet), out_video if stream is video else out_audio)  # type: ignore[arg-type]
            self.post_ts(SOURCE_RENDITION, source.take())
        self.post_ts(SOURCE_RENDITION, source.close())

    def _infos(self, container: InputContainer, video: Stream, audio: Stream | None) -> list[RenditionInfo]:
        vctx: Any = video.codec_context
        fps = float(video.average_rate) if video.average_rate else None
        meta = container.metadata
        audio_codec = audio_codec_string(audio) if audio is not None else None
        audio_rate = (_rate_from_metadata(meta, "audiodatarate") or DEFAULT_AUDIO_BITRATE) if audio else 0
        video_rate = _rate_from_metadata(meta, "videodatarate") or _guess_video_bitrate(vctx.width, vctx.height, fps)
        codecs = ",".join(c for c in (avc_codec_string(vctx.extradata), audio_codec) if c)
        infos = [RenditionInfo(SOURCE_RENDITION, vctx.width, vctx.height, int((video_rate + audio_rate) * TS_OVERHEAD),
                               codecs, fps)]  # fmt: skip
        from swarmcast.broadcaster.transcoder import profile_codec_string  # noqa: PLC0415

        for profile in self.profiles:
            out_fps = profile.output_fps(fps)
            codecs = ",".join(c for c in (profile_codec_string(profile, out_fps), audio_codec) if c)
            bandwidth = int((profile.bitrate + audio_rate) * TS_OVERHEAD)
            infos.append(RenditionInfo(profile.name, profile.width, profile.height, bandwidth, codecs, out_fps))
        return infos


def _rate_from_metadata(meta: dict[str, str], key: str) -> int | None:
    """bits/s from FLV onMetaData's ``videodatarate``/``audiodatarate`` (kbit/s, as OBS and ffmpeg write them)."""
    try:
        kbps = float(meta.get(key, ""))
    except ValueError:
        return None
    if not 1 <= kbps <= 1_000_000:
        return None
    return int(kbps * 1000)


def _guess_video_bitrate(width: int, height: int, fps: float | None) -> int:
    # Without the publisher's word: 0.1 bit per pixel per frame, a typical H.264 live encode.
    return max(int(width * height * (fps or 30) * 0.1), 100_000)
