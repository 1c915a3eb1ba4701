"""Cuts a live MPEG-TS byte stream into HLS segments at video keyframes, sans-IO.

How this works. Bytes are framed into 188-byte packets (``TsPacketizer``) and followed PAT → PMT → video PID
(``TsAnalyzer``). A segment opens at a video keyframe: the packet that starts a keyframe's PES with the
random_access_indicator set, which FFmpeg's muxer sets. The run of table/clock packets just before it (PAT, PMT,
SDT, our clock packet) opens the segment with it; where the muxer did not repeat PAT and PMT there, the latest
ones are put in front, so every segment decodes on its own (HLS, RFC 8216 §3 and EXT-X-INDEPENDENT-SEGMENTS).

The cut rule depends only on PTS: a segment ends at the first keyframe whose PTS is at least ``target_duration``
(less ``CUT_TOLERANCE``) after the segment's first keyframe. Renditions of one stream whose keyframes sit at the
same PTS (the transcoder forces them there) are therefore cut at the same PTS, and a player can switch between
renditions at any segment boundary. The tolerance is a fixed number, not a fraction of a frame, for the same
reason: renditions at different frame rates must decide alike.

A keyframe whose PTS is behind the segment's start, or more than ``MAX_SEGMENT_SECONDS`` after it, is a timestamp
jump nobody announced: the open segment is closed at its own last frame and the next is flagged a discontinuity.

Bytes before the first keyframe are dropped (a player could not start there). A segment that grows past
``max_segment_bytes`` without a keyframe (an input with keyframes far apart, or none) is dropped and the cutter
waits for the next keyframe: it bounds memory and no HLS player could use such a segment anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from swarmcast.media.ts import (
    PAT_PID,
    PREAMBLE_PIDS,
    PTS_WRAP,
    TS_PACKET_SIZE,
    TsAnalyzer,
    TsPacketizer,
    pes_pts,
)

PTS_HZ: Final = 90_000
CUT_TOLERANCE: Final = 0.05  # seconds: keyframes a little early (29.97 fps, encoder rounding) still cut on time
MAX_SEGMENT_SECONDS: Final = 60  # a keyframe further on than this from the segment's start is a jump, not a GOP
DEFAULT_MAX_SEGMENT_BYTES: Final = 16 * 1024 * 1024
MAX_PREAMBLE_PACKETS: Final = 32  # a stream of nothing but tables and padding is cut as it comes
_DEFAULT_FRAME: Final = 1 / 30  # the duration given to the last frame of a stream whose frame rate is unknown


@dataclass(frozen=True)
class TsSegment:
    data: bytes  # whole TS packets: PAT, PMT, then a video keyframe and what follows it
    start_pts: int  # 90 kHz PTS of the keyframe that opens the segment
    duration: float  # seconds: to the next segment's keyframe, or to the end of the last frame at a flush
    discontinuity: bool  # the first segment after the input restarted: timestamps and codecs may change here


class TsSegmenter:
    def __init__(self, target_duration: float, *, max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES) -> None:
        if not target_duration > 0:
            raise ValueError(f"target_duration must be positive, got {target_duration}")
        self.target_duration = target_duration
        self.max_segment_bytes = max_segment_bytes
        self._cut_after = round((target_duration - CUT_TOLERANCE) * PTS_HZ)
        self._packetizer = TsPacketizer()
        self._analyzer = TsAnalyzer()
        self._current: bytearray | None = None  # the open segment, None before the first keyframe
        self._start_pts = 0
        self._last_pts: int | None = None  # newest video PTS in the open segment
        self._frame = round(_DEFAULT_FRAME * PTS_HZ)  # smallest positive step between video PTS seen
        self._preamble: list[bytes] = []  # table/clock packets that may belong to the next keyframe
        self._flag_next = False  # the next segment to open is the first after a discontinuity
        self._current_flagged = False
        self._ready: list[TsSegment] = []  # segments completed outside feed() (by discontinuity())
        self.dropped_bytes = 0  # input thrown away: before the first keyframe, or oversized segments

    def feed(self, data: bytes) -> list[TsSegment]:
        """Add input in any chunking; return the segments it completed, oldest first."""
        out, self._ready = self._ready, []
        for packet in self._packetizer.feed(data):
            self._packet(packet, out)
        return out

    def discontinuity(self) -> None:
        """The input restarted (a new publisher, new timestamps): close what is open; flag the next segment."""
        self._close_open(self._ready)
        self._packetizer = TsPacketizer()
        self._analyzer = TsAnalyzer()
        self._preamble = []
        self._flag_next = True

    def flush(self) -> list[TsSegment]:
        """End of input: the open segment, completed with its last frame's duration."""
        out, self._ready = self._ready, []
        self._close_open(out)
        return out

    def _packet(self, packet: bytes, out: list[TsSegment]) -> None:
        info = self._analyzer.feed_packet(packet)
        pts = pes_pts(packet) if info.pid == self._analyzer.video_pid else None
        if info.is_video_keyframe_start and pts is not None:
            if self._current is not None and self._jumped(pts):
                # Timestamps went back or leapt ahead with nobody calling discontinuity() (an encoder restart
                # behind an unchanged connection): measuring across the jump would give a segment of hours.
                self._close_open(out)
                self._flag_next = True
            if self._current is None or self._due(pts):
                self._close(pts, out)
                self._open(pts)
                self._current += packet  # type: ignore[operator]  # _open made it a bytearray
                return
        elif (info.pid in PREAMBLE_PIDS or info.is_pmt) and len(self._preamble) < MAX_PREAMBLE_PACKETS:
            self._preamble.append(packet)
            return
        if pts is not None:
            self._note_pts(pts)
        self._append_preamble()
        if self._current is None:
            self.dropped_bytes += len(packet)
            return
        self._current += packet
        if len(self._current) > self.max_segment_bytes:
            self.dropped_bytes += len(self._current)
            self._current = None
            self._last_pts = None

    def _jumped(self, pts: int) -> bool:
        step = (pts - self._start_pts) % PTS_WRAP
        return step >= PTS_WRAP // 2 or step > MAX_SEGMENT_SECONDS * PTS_HZ

    def _due(self, pts: int) -> bool:
        return (pts - self._start_pts) % PTS_WRAP >= self._cut_after

    def _note_pts(self, pts: int) -> None:
        if self._last_pts is not None:
            step = (pts - self._last_pts) % PTS_WRAP
            if 0 < step < self._frame:
                self._frame = step
        if self._last_pts is None or 0 < (pts - self._last_pts) % PTS_WRAP < PTS_WRAP // 2:
            self._last_pts = pts  # B-frames arrive with lower PTS than the frame before: keep the newest

    def _append_preamble(self) -> None:
        if self._current is not None:
            for packet in self._preamble:
                self._current += packet
        elif self._preamble:
            self.dropped_bytes += len(self._preamble) * TS_PACKET_SIZE
        self._preamble = []

    def _open(self, pts: int) -> None:
        head = bytearray()
        pids = {((p[1] & 0x1F) << 8) | p[2] for p in self._preamble}
        if PAT_PID not in pids or self._analyzer.pmt_pid not in pids:
            # The muxer did not repeat the tables before this keyframe: put the latest in front.
            pat, pmt = self._analyzer.latest_pat, self._analyzer.latest_pmt
            if pat is not None and pmt is not None:
                head += pat + pmt
        for packet in self._preamble:
            head += packet
        self._preamble = []
        self._current = head
        self._start_pts = pts
        self._last_pts = pts
        self._current_flagged = self._flag_next
        self._flag_next = False

    def _close(self, next_pts: int, out: list[TsSegment]) -> None:
        if self._current is None:
            return
        duration = ((next_pts - self._start_pts) % PTS_WRAP) / PTS_HZ
        out.append(TsSegment(bytes(self._current), self._start_pts, duration, self._current_flagged))
        self._current = None

    def _close_open(self, out: list[TsSegment]) -> None:
        if self._current is None:
            return
        self._append_preamble()
        last = self._last_pts if self._last_pts is not None else self._start_pts
        self._close((last + self._frame) % PTS_WRAP, out)
        self._last_pts = None
