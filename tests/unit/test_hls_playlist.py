"""Live HLS playlists: window, rising media sequence, discontinuities, end, master playlists."""

from __future__ import annotations

import pytest

from swarmcast.media.hls_playlist import SegmentWindow, Variant, master_playlist
from swarmcast.media.ts_segmenter import TsSegment


def seg(duration: float = 2.0, *, discontinuity: bool = False, size: int = 188) -> TsSegment:
    return TsSegment(b"\x47" * size, 0, duration, discontinuity)


def tags(playlist: str, name: str) -> list[str]:
    return [line.split(":", 1)[1] for line in playlist.splitlines() if line.startswith(name + ":")]


def test_window_keeps_the_newest_and_media_sequence_rises() -> None:
    window = SegmentWindow(3, target_duration=2)
    assert [window.add(seg()) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert window.get(1) is None
    assert window.get(2) is not None
    text = window.render(lambda n: f"{n}.ts")
    assert tags(text, "#EXT-X-MEDIA-SEQUENCE") == ["2"]
    assert [line for line in text.splitlines() if line.endswith(".ts")] == ["2.ts", "3.ts", "4.ts"]
    assert tags(text, "#EXT-X-TARGETDURATION") == ["2"]
    assert "#EXT-X-ENDLIST" not in text


def test_discontinuity_tag_and_sequence_after_it_leaves() -> None:
    window = SegmentWindow(2)
    window.add(seg())
    window.add(seg(discontinuity=True))
    text = window.render(str)
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1
    assert tags(text, "#EXT-X-DISCONTINUITY-SEQUENCE") == ["0"]
    window.add(seg())
    window.add(seg())
    text = window.render(str)
    assert "#EXT-X-DISCONTINUITY\n" not in text
    assert tags(text, "#EXT-X-DISCONTINUITY-SEQUENCE") == ["1"]


def test_target_duration_covers_every_segment_and_never_falls() -> None:
    window = SegmentWindow(2, target_duration=1)
    window.add(seg(1.0))
    window.add(seg(2.5))
    window.add(seg(1.0))
    window.add(seg(1.0))
    assert tags(window.render(str), "#EXT-X-TARGETDURATION") == ["3"]
    # Rounded to the nearest (RFC 8216 §4.3.3.1), not up: 29.97 fps segments of 2.002 s keep a target of 2.
    ntsc = SegmentWindow(target_duration=2)
    ntsc.add(seg(2.002))
    assert tags(ntsc.render(str), "#EXT-X-TARGETDURATION") == ["2"]


def test_byte_cap_drops_old_segments_but_keeps_the_newest() -> None:
    window = SegmentWindow(6, max_bytes=1000)
    for _ in range(4):
        window.add(seg(size=400))
    assert len(window) == 2
    window.add(seg(size=5000))
    assert len(window) == 1
    assert window.bytes == 5000


def test_end_adds_endlist_and_refuses_more() -> None:
    window = SegmentWindow()
    window.add(seg())
    window.end()
    assert window.render(str).rstrip().endswith("#EXT-X-ENDLIST")
    with pytest.raises(ValueError, match="ended"):
        window.add(seg())


def test_master_playlist_lists_every_variant() -> None:
    text = master_playlist([
        Variant("source.m3u8", 2_000_000, (640, 360), "avc1.64001e,mp4a.40.2", 30.0, "source"),
        Variant("P144p30fps16x9.m3u8", 400_000, (256, 144), None, None, "P144p30fps16x9"),
    ])  # fmt: skip
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U"
    assert lines[3] == (
        '#EXT-X-STREAM-INF:BANDWIDTH=2000000,RESOLUTION=640x360,CODECS="avc1.64001e,mp4a.40.2",FRAME-RATE=30.000'
    )
    assert lines[4] == "source.m3u8"
    assert lines[5] == "#EXT-X-STREAM-INF:BANDWIDTH=400000,RESOLUTION=256x144"
    assert lines[6] == "P144p30fps16x9.m3u8"


def test_a_restarted_window_carries_on_from_its_first_sequence() -> None:
    window = SegmentWindow(first_sequence=41)
    assert window.add(seg()) == 41
    assert tags(window.render(str), "#EXT-X-MEDIA-SEQUENCE") == ["41"]
