"""The transcoding ladder: the source video decoded once, then scaled and encoded per profile, keyframes aligned.

How this works. The demux thread hands every video and audio packet to ``Transcoder.feed``. One decoder thread
decodes the video once and offers each picture to every rendition; each rendition has a thread of its own that
drops frames for a lower frame rate (by PTS: a frame is kept when it falls in a new 1/fps slot), scales the picture
to the profile's size, encodes it with libx264 and muxes it, with copies of the source's audio packets (audio is
not re-encoded), into its own continuous MPEG-TS (media/tsmux.py).

Keyframe alignment. x264 never places a keyframe by itself (``scenecut=0``, ``keyint=infinite``); a frame whose
PTS is a source keyframe's is never dropped and is sent with ``pict_type = I``, which libx264 turns into an IDR
(``forced-idr``). Frames keep the source's PTS in the source's time base and every muxer adds the same (zero)
offset, so each rendition's keyframes sit at exactly the source's 90 kHz PTS, and a segmenter that cuts on PTS
(media/ts_segmenter.py) cuts every rendition at the same instants: a player may switch at any segment boundary.

Back-pressure. Queues are bounded and nothing here ever blocks the demux thread (and so the source rendition):
- decoder queue (``MAX_DECODE_QUEUE_BYTES`` of compressed packets): when full, video is dropped until the next
  keyframe (decoding from anywhere else would show garbage) and audio is dropped; logged.
- each rendition's queue (``MAX_RENDITION_QUEUE_BYTES`` of raw pictures): when full, pictures are dropped (the
  rendition's frame rate falls, it stays decodable because every picture is encoded afresh), except source
  keyframes, which are queued beyond the bound so that alignment holds; a rendition more than
  ``BACKLOG_FACTOR`` times that behind even so is stopped with a log line, and the others carry on.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Final

import av
from av.packet import Packet
from av.stream import Stream
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter

from swarmcast.broadcaster.profiles import Profile
from swarmcast.media.tsmux import TsMuxer, copy_packet

if TYPE_CHECKING:
    from swarmcast.broadcaster.pipeline import MediaPipeline

log = logging.getLogger("swarmcast.broadcaster")

ENCODER_PRESET: Final = "veryfast"
# One encoder thread per rendition: the ladder's parallelism is across renditions, and x264's own threads would
# only contend for the same cores (and frame threads add a frame of delay each).
ENCODER_THREADS: Final = 1
MAX_DECODE_QUEUE_BYTES: Final = 16 * 1024 * 1024
MAX_RENDITION_QUEUE_BYTES: Final = 24 * 1024 * 1024  # ~8 pictures at 1080p, ~100 at 360p
BACKLOG_FACTOR: Final = 4  # keyframes alone may queue up to this many times the bound; then the rendition stops
DROP_LOG_EVERY: Final = 10.0  # seconds between "dropping frames" lines per rendition
_MAX_PENDING_KEYS: Final = 64  # keyframe PTS remembered between the decoder's input and output

# H.264 levels (ITU-T H.264 Table A-1): (level_idc, max macroblocks/s, max frame size in macroblocks,
# max High-profile bitrate in bits/s (1.25 x MaxBR)).
_LEVELS: Final = (
    (30, 40_500, 1_620, 12_500_000),
    (31, 108_000, 3_600, 17_500_000),
    (32, 216_000, 5_120, 25_000_000),
    (40, 245_760, 8_192, 25_000_000),
    (41, 245_760, 8_192, 62_500_000),
    (42, 522_240, 8_704, 62_500_000),
    (50, 589_824, 22_080, 168_750_000),
    (51, 983_040, 36_864, 300_000_000),
    (52, 2_073_600, 36_864, 300_000_000),
)


def h264_level(width: int, height: int, fps: float, bitrate: int) -> int:
    """The lowest level_idc whose limits hold a width x height x fps stream at ``bitrate`` (≥ 3.0)."""
    frame_mbs = ((width + 15) // 16) * ((height + 15) // 16)
    for level, max_mbps, max_fs, max_br in _LEVELS:
        if frame_mbs <= max_fs and frame_mbs * fps <= max_mbps and bitrate <= max_br:
            return level
    return 52


def profile_codec_string(profile: Profile, fps: float | None) -> str:
    """RFC 6381 name of a rendition's video: High profile (0x64, no constraint flags) at the level we set."""
    level = h264_level(profile.width, profile.height, fps or 30.0, profile.bitrate)
    return f"avc1.6400{level:02x}"


class _Queue:
    """A blocking FIFO bounded by the size its items declare; ``put`` never blocks, ``get`` waits."""

    def __init__(self) -> None:
        self._items: collections.deque[tuple[Any, int]] = collections.deque()
        self.queued = 0
        self._ended = False
        self._cond = threading.Condition()

    def put(self, item: Any, size: int) -> None:
        with self._cond:
            if self._ended:
                return
            self._items.append((item, size))
            self.queued += size
            self._cond.notify()

    def end(self, *, discard: bool) -> None:
        """No more items: ``get`` returns None once the queue is empty (at once with ``discard``)."""
        with self._cond:
            self._ended = True
            if discard:
                self._items.clear()
                self.queued = 0
            self._cond.notify_all()

    def get(self) -> Any:
        with self._cond:
            while not self._items and not self._ended:
                self._cond.wait()
            if not self._items:
                return None
            item, size = self._items.popleft()
            self.queued -= size
            return item


class _DropLog:
    """Counts dropped items and says so at most every DROP_LOG_EVERY seconds (from a worker thread)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.dropped = 0
        self._unlogged = 0
        self._last: float | None = None

    def drop(self, reason: str) -> None:
        self.dropped += 1
        self._unlogged += 1
        now = time.monotonic()
        if self._last is None or now - self._last >= DROP_LOG_EVERY:
            log.warning("%s: dropped %d frame(s) (%s)", self.what, self._unlogged, reason)
            self._last, self._unlogged = now, 0


class _Rendition:
    """One profile: frame-rate conversion, scaling, libx264, its own TS muxer; runs in its own thread."""

    def __init__(self, pipeline: MediaPipeline, profile: Profile, time_base: Fraction, source_fps: float | None,
                 audio: Stream | None, queue_bytes: int) -> None:  # fmt: skip
        self.pipeline = pipeline
        self.queue_bytes = queue_bytes
        self.profile = profile
        self.time_base = time_base
        self.fps = profile.output_fps(source_fps)
        self.queue = _Queue()
        self.drops = _DropLog(f"stream {pipeline.stream_id} rendition {profile.name}")
        self.stopped = False  # set by the decoder thread when the rendition fell hopelessly behind
        self.muxer = TsMuxer()
        self.video: Any = self._add_encoder()
        self.audio = self.muxer.add_copy(audio) if audio is not None else None
        self._last_slot: int | None = None
        self._started = False  # a source keyframe has been encoded: frames before it are not worth sending
        self.frames_out = 0
        # Its own scaler: frame.reformat() caches one SwsContext on the *frame*, which every rendition gets, and
        # two threads scaling through one SwsContext deadlock (two profiles stalled after their first segment).
        self.reformatter = VideoReformatter()
        self.thread = threading.Thread(target=self._run, name=f"rendition-{profile.name}", daemon=True)
        self.thread.start()

    def _add_encoder(self) -> Any:
        profile = self.profile
        fps = self.fps or 30.0
        rate = Fraction(fps).limit_denominator(1001)
        level = h264_level(profile.width, profile.height, fps, profile.bitrate)
        stream = self.muxer.container.add_stream(
            "libx264",
            rate=rate,
            options={
                "preset": ENCODER_PRESET,
                "tune": "zerolatency",
                "profile": "high",
                "level": f"{level / 10:.1f}",
                "forced-idr": "1",
                "threads": str(ENCODER_THREADS),
                # Keyframes only where the source has them (forced per frame); a one-second VBV at the profile's
                # bitrate keeps each second near it, as Livepeer's "min, avg and max bitrate" does.
                "x264-params": "scenecut=0:keyint=infinite:min-keyint=1",
                "maxrate": str(profile.bitrate),
                "bufsize": str(profile.bitrate),
            },
        )
        ctx = stream.codec_context
        ctx.width, ctx.height, ctx.pix_fmt = profile.width, profile.height, "yuv420p"
        ctx.bit_rate = profile.bitrate
        ctx.time_base = self.time_base  # the source's: frames keep their PTS exactly
        ctx.framerate = rate
        ctx.gop_size = 0x7FFFFFFF
        stream.time_base = self.time_base
        return stream

    # -- called on the decoder thread -----------------------------------------------------------------------

    def offer_frame(self, frame: VideoFrame, keyframe: bool) -> None:
        if self.stopped:
            return
        size = frame.width * frame.height * 3 // 2
        if self.queue.queued + size > self.queue_bytes:
            if not keyframe:
                self.drops.drop("cannot keep up: CPU overloaded?")
                return
            if self.queue.queued + size > BACKLOG_FACTOR * self.queue_bytes:
                self.stopped = True
                self.queue.end(discard=True)
                log.error("stream %s rendition %s: more than %d bytes behind even with only keyframes; rendition "
                          "stopped (the others carry on): use fewer or smaller profiles for this CPU",
                          self.pipeline.stream_id, self.profile.name, BACKLOG_FACTOR * self.queue_bytes)  # fmt: skip
                return
        self.queue.put(("v", frame, keyframe), size)

    def offer_audio(self, packet: Packet[Any]) -> None:
        if not self.stopped and self.audio is not None:
            self.queue.put(("a", packet, False), packet.size)

    # -- the rendition's thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (item := self.queue.get()) is not None:
                if self.pipeline.stopping:
                    return
                kind, payload, keyframe = item
                if kind == "v":
                    self._video(payload, keyframe)
                elif self._started:
                    assert self.audio is not None
                    self.muxer.mux(copy_packet(payload), self.audio)
                self._emit()
            if not self.stopped and not self.pipeline.stopping:
                for packet in self.video.encode(None):
                    self.muxer.mux(packet, self.video)
                self.pipeline.post_ts(self.profile.name, self.muxer.take() + self.muxer.close())
        except Exception as error:
            log.exception("stream %s rendition %s failed", self.pipeline.stream_id, self.profile.name)
            log.error("stream %s rendition %s stopped (%s: %s); the others carry on",
                      self.pipeline.stream_id, self.profile.name, type(error).__name__, error)  # fmt: skip
            self.stopped = True
            self.queue.end(discard=True)
        finally:
            self.muxer.close()

    def _keep(self, pts: int, keyframe: bool) -> bool:
        """Frame-rate conversion by PTS: keep a frame when it opens a new 1/fps slot; keep every keyframe."""
        if self.fps is None or self.profile.fps <= 0:
            return True
        slot = int(float(pts * self.time_base) * self.fps + 0.5)
        if keyframe or self._last_slot is None or slot > self._last_slot:
            self._last_slot = slot
            return True
        return False

    def _video(self, frame: VideoFrame, keyframe: bool) -> None:
        if not self._started and not keyframe:
            return
        if frame.pts is None or not self._keep(frame.pts, keyframe):
            return
        self._started = True
        out = self.reformatter.reformat(frame, self.profile.width, self.profile.height, "yuv420p",
                                        interpolation="BILINEAR")
        out.pts = frame.pts
        out.time_base = self.time_base
        out.pict_type = av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        for packet in self.video.encode(out):
            self.muxer.mux(packet, self.video)
        self.frames_out += 1

    def _emit(self) -> None:
        self.pipeline.post_ts(self.profile.name, self.muxer.take())


class Transcoder:
    """Decodes the source video once and feeds every profile's rendition. Driven from the demux thread."""

    def __init__(self, pipeline: MediaPipeline, profiles: list[Profile], video: Stream, audio: Stream | None, *,
                 queue_bytes: int | None = None) -> None:  # fmt: skip
        self.pipeline = pipeline
        assert video.time_base is not None
        self.time_base: Fraction = video.time_base
        self.video = video
        self.audio = audio
        source_fps = float(video.average_rate) if video.average_rate else None
        self._decoder: Any = av.CodecContext.create(video.codec_context.name, "r")
        self._decoder.extradata = video.codec_context.extradata
        self._decoder.thread_type = "SLICE"  # frame threads would hold each picture back by a frame per thread
        self._queue = _Queue()
        self._skip_to_keyframe = False
        self._drops = _DropLog(f"stream {pipeline.stream_id} decoder")
        bound = queue_bytes or MAX_RENDITION_QUEUE_BYTES
        self.renditions = [_Rendition(pipeline, p, self.time_base, source_fps, audio, bound) for p in profiles]
        self._keys: collections.deque[int] = collections.deque()
        self._thread = threading.Thread(target=self._run, name="transcode-decoder", daemon=True)
        self._thread.start()

    def feed(self, packet: Packet[Any]) -> None:
        """A demuxed packet (video or audio, in demux order); never blocks."""
        is_video = packet.stream is self.video
        if self._queue.queued + packet.size > MAX_DECODE_QUEUE_BYTES:
            if is_video:
                self._skip_to_keyframe = True
                self._drops.drop("decoder cannot keep up: dropping video to the next keyframe")
            return
        if is_video and self._skip_to_keyframe:
            if not packet.is_keyframe:
                return
            self._skip_to_keyframe = False
        self._queue.put((is_video, copy_packet(packet)), packet.size)

    def close(self) -> None:
        """End of input (or stop): flush and join every thread of the ladder."""
        self._queue.end(discard=self.pipeline.stopping)
        self._thread.join()

    # -- the decoder thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                if self.pipeline.stopping:
                    break
                is_video, packet = item
                if is_video:
                    self._decode(packet)
                else:
                    for rendition in self.renditions:
                        rendition.offer_audio(packet)
            if not self.pipeline.stopping:
                self._decode(None)
        except Exception:
            log.exception("stream %s: the transcoder's decoder failed; transcoded renditions end",
                          self.pipeline.stream_id)  # fmt: skip
        finally:
            for rendition in self.renditions:
                rendition.queue.end(discard=self.pipeline.stopping)
            for rendition in self.renditions:
                rendition.thread.join()

    def _decode(self, packet: Packet[Any] | None) -> None:
        if packet is not None and packet.is_keyframe and packet.pts is not None:
            self._keys.append(packet.pts)
            if len(self._keys) > _MAX_PENDING_KEYS:
                self._keys.popleft()
        try:
            frames = self._decoder.decode(packet)
        except av.InvalidDataError as error:
            self._drops.drop(f"undecodable packet: {error}")
            return
        for frame in frames:
            pts = frame.pts
            keyframe = False
            while self._keys and pts is not None and self._keys[0] <= pts:
                keyframe = self._keys.popleft() == pts or keyframe
            for rendition in self.renditions:
                rendition.offer_frame(frame, keyframe)
