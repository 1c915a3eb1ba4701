"""The HLS segmenter: keyframe cuts by PTS, self-contained segments, discontinuities, bounds."""

from __future__ import annotations

import functools
import io

import av
import pytest

from swarmcast.media.testsignal import TestSignalConfig, generate_test_signal
from swarmcast.media.ts import TS_PACKET_SIZE, keyframe_pts
from swarmcast.media.ts_segmenter import PTS_HZ, TsSegment, TsSegmenter

SIGNAL = TestSignalConfig(bitrate=300_000, width=160, height=96, fps=30)  # a keyframe every second


@functools.cache
def signal(seconds: float) -> bytes:
    return b"".join(generate_test_signal(SIGNAL, realtime=False, duration=seconds))


def decoded_frames(data: bytes) -> int:
    with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
        return len(list(container.decode(video=0)))


def segment_all(data: bytes, target: float, chunk: int) -> list[TsSegment]:
    segmenter = TsSegmenter(target)
    out: list[TsSegment] = []
    for offset in range(0, len(data), chunk):
        out += segmenter.feed(data[offset : offset + chunk])
    return out + segmenter.flush()


@pytest.mark.parametrize(("target", "per_segment"), [(1.0, 1), (2.0, 2)])
def test_segments_start_at_keyframes_and_last_the_target(target: float, per_segment: int) -> None:
    data = signal(6.0)
    keys = keyframe_pts(data)
    assert len(keys) == 6
    segments = segment_all(data, target, 1000)
    assert [s.start_pts for s in segments] == keys[::per_segment]
    for segment in segments[:-1]:
        assert segment.duration == pytest.approx(target, abs=0.01)
    for segment in segments:
        assert not segment.discontinuity
        assert len(segment.data) % TS_PACKET_SIZE == 0
        # Each segment decodes on its own from its first frame: it opens with the tables and a keyframe.
        assert keyframe_pts(segment.data)[0] == segment.start_pts
        assert decoded_frames(segment.data) >= SIGNAL.fps * per_segment - 2


def test_chunking_does_not_change_the_cut() -> None:
    data = signal(4.0)
    whole = segment_all(data, 1.0, len(data))
    tiny = segment_all(data, 1.0, 77)
    assert [s.data for s in whole] == [s.data for s in tiny]


def test_the_flushed_last_segment_lasts_to_its_last_frame() -> None:
    segments = segment_all(signal(3.0), 1.0, 4096)
    assert segments[-1].duration == pytest.approx(1.0, abs=0.05)


def test_bytes_before_the_first_keyframe_are_dropped() -> None:
    data = signal(3.0)
    start = 188 * 40  # mid-GOP, before the second keyframe
    segmenter = TsSegmenter(1.0)
    segments = segmenter.feed(data[start:]) + segmenter.flush()
    assert segments[0].start_pts == keyframe_pts(data)[1]
    assert segmenter.dropped_bytes > 0


def test_a_discontinuity_closes_the_open_segment_and_flags_the_next() -> None:
    data = signal(3.0)
    segmenter = TsSegmenter(1.0)
    first = segmenter.feed(data)
    segmenter.discontinuity()
    # The "new publisher" starts again from timestamp zero with the same stream.
    second = segmenter.feed(data) + segmenter.flush()
    segments = first + second
    assert [s.discontinuity for s in segments] == [False] * 3 + [True, False, False]
    assert segments[3].start_pts == keyframe_pts(data)[0]


def test_a_segment_without_keyframes_past_the_byte_cap_is_dropped() -> None:
    data = signal(3.0)
    segmenter = TsSegmenter(5.0, max_segment_bytes=len(data) // 4)
    segments = segmenter.feed(data) + segmenter.flush()
    assert all(len(s.data) <= len(data) // 4 + TS_PACKET_SIZE for s in segments)
    assert segmenter.dropped_bytes > 0


def test_garbage_input_gives_no_segment() -> None:
    segmenter = TsSegmenter(1.0)
    assert segmenter.feed(bytes(range(256)) * 400) + segmenter.flush() == []


def test_pts_wrap_is_a_short_step() -> None:
    segmenter = TsSegmenter(1.0)
    # _due works modulo 2**33: one second after the wrap point is one second, not -26 hours.
    segmenter._start_pts = (1 << 33) - PTS_HZ // 2
    assert segmenter._due(PTS_HZ // 2)
    assert not segmenter._due(PTS_HZ // 4)


def test_non_positive_target_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        TsSegmenter(0.0)


def test_an_unannounced_timestamp_jump_back_is_a_discontinuity() -> None:
    data = signal(3.0)
    segmenter = TsSegmenter(1.0)
    # The same stream twice on one connection: PTS fall back to zero with no discontinuity() call.
    segments = segmenter.feed(data) + segmenter.feed(data) + segmenter.flush()
    assert max(s.duration for s in segments) < 1.5
    assert [s.discontinuity for s in segments] == [False] * 3 + [True, False, False]
