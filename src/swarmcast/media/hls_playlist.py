"""HLS playlists (RFC 8216): a live window of segments and its media playlist, and master playlists.

How this works. ``SegmentWindow`` keeps the newest ``size`` segments of one rendition, numbered by a media
sequence that only rises (§6.2.1: a client uses it to find its place after a reload). A segment flagged as a
discontinuity gets ``#EXT-X-DISCONTINUITY`` before it; when such a segment leaves the window the
``#EXT-X-DISCONTINUITY-SEQUENCE`` rises, as §6.2.2 requires, so a player reloading keeps its timeline. Once
``end()`` is called the playlist carries ``#EXT-X-ENDLIST`` and players stop reloading.

``#EXT-X-TARGETDURATION`` must be at least every EXTINF rounded to the nearest integer (§4.3.3.1) and should not
change during the stream, so it is the larger of the configured target and the longest segment ever added, each
rounded to the nearest integer. Not rounded up: a 29.97 fps source's 2.002 s segments keep a target of 2, and
players hold about three target durations behind live.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from swarmcast.media.ts_segmenter import TsSegment

PLAYLIST_CONTENT_TYPE: Final = "application/vnd.apple.mpegurl"
SEGMENT_CONTENT_TYPE: Final = "video/mp2t"
DEFAULT_WINDOW: Final = 6
DEFAULT_WINDOW_BYTES: Final = 64 * 1024 * 1024


def _nearest(seconds: float) -> int:
    """Rounded half up, as §4.3.3.1 rounds EXTINF (Python's round() would round 2.5 to 2)."""
    return math.floor(seconds + 0.5)


@dataclass(frozen=True)
class _Entry:
    sequence: int
    segment: TsSegment


class SegmentWindow:
    def __init__(self, size: int = DEFAULT_WINDOW, *, max_bytes: int = DEFAULT_WINDOW_BYTES,
                 target_duration: float = 0.0, first_sequence: int = 0) -> None:  # fmt: skip
        if size < 1:
            raise ValueError(f"a window holds at least one segment, got {size}")
        self.size = size
        self.max_bytes = max_bytes
        self._entries: deque[_Entry] = deque()
        self._bytes = 0
        # A restarted output carries on from its last number (§6.2.1: a sequence number never goes back).
        self._next_sequence = first_sequence
        self._discontinuity_sequence = 0
        self._target = max(1, _nearest(target_duration))
        self.ended = False

    def add(self, segment: TsSegment) -> int:
        """Append a segment; return its media sequence number. Older segments beyond the window are dropped."""
        if self.ended:
            raise ValueError("the playlist has ended")
        sequence = self._next_sequence
        self._next_sequence += 1
        self._entries.append(_Entry(sequence, segment))
        self._bytes += len(segment.data)
        self._target = max(self._target, _nearest(segment.duration))
        # Always keep the newest segment, even alone over the byte cap: a playlist with none is of no use.
        while len(self._entries) > 1 and (len(self._entries) > self.size or self._bytes > self.max_bytes):
            old = self._entries.popleft()
            self._bytes -= len(old.segment.data)
            if old.segment.discontinuity:
                self._discontinuity_sequence += 1
        return sequence

    def end(self) -> None:
        self.ended = True

    def get(self, sequence: int) -> TsSegment | None:
        if not self._entries:
            return None
        index = sequence - self._entries[0].sequence
        if 0 <= index < len(self._entries):
            return self._entries[index].segment
        return None

    @property
    def next_sequence(self) -> int:
        return self._next_sequence

    @property
    def newest_sequence(self) -> int | None:
        return self._entries[-1].sequence if self._entries else None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def render(self, uri: Callable[[int], str]) -> str:
        """The media playlist of the window; ``uri(sequence)`` names each segment (relative or absolute)."""
        first = self._entries[0].sequence if self._entries else self._next_sequence
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:3",
            f"#EXT-X-TARGETDURATION:{self._target}",
            f"#EXT-X-MEDIA-SEQUENCE:{first}",
            f"#EXT-X-DISCONTINUITY-SEQUENCE:{self._discontinuity_sequence}",
            "#EXT-X-INDEPENDENT-SEGMENTS",
        ]
        for entry in self._entries:
            # A flag is counted in DISCONTINUITY-SEQUENCE only once its segment has left the window (§6.2.2).
            if entry.segment.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            lines.append(f"#EXTINF:{entry.segment.duration:.3f},")
            lines.append(uri(entry.sequence))
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Variant:
    uri: str
    bandwidth: int  # bits/s, peak (§4.4.6.2)
    resolution: tuple[int, int] | None
    codecs: str | None  # RFC 6381, e.g. "avc1.64001f,mp4a.40.2"
    frame_rate: float | None
    name: str  # for our own pages and logs; HLS has no NAME attribute on a variant


def master_playlist(variants: Iterable[Variant]) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for variant in variants:
        attributes = [f"BANDWIDTH={max(1, variant.bandwidth)}"]
        if variant.resolution is not None:
            attributes.append(f"RESOLUTION={variant.resolution[0]}x{variant.resolution[1]}")
        if variant.codecs:
            attributes.append(f'CODECS="{variant.codecs}"')
        if variant.frame_rate:
            attributes.append(f"FRAME-RATE={variant.frame_rate:.3f}")
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attributes))
        lines.append(variant.uri)
    return "\n".join(lines) + "\n"
