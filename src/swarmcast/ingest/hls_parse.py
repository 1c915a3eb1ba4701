"""HLS playlists as an input (RFC 8216), parsed sans-IO and bounded.

How this works. ``parse_playlist(text, url)`` reads one playlist and returns either a ``MasterPlaylist`` (its
``#EXT-X-STREAM-INF`` variants, each with BANDWIDTH and the URI on the next line) or a ``MediaPlaylist`` (its
``#EXT-X-MEDIA-SEQUENCE``, ``#EXT-X-TARGETDURATION``, segments with ``#EXTINF`` durations and
``#EXT-X-DISCONTINUITY`` marks, ``#EXT-X-ENDLIST``). Only what an ingest needs is read; unknown tags are skipped
(RFC 8216 §4.1: clients ignore tags they do not recognise). Every URI is resolved against the playlist's URL and
must be http(s).

The playlist comes from an origin we do not control, so everything is bounded before it is used: the text (the
reader caps the bytes it reads at ``MAX_PLAYLIST_BYTES``), its lines (``MAX_PLAYLIST_LINES``), segments and
variants (``MAX_SEGMENTS``, ``MAX_VARIANTS``), a URI's length, numbers (a media sequence past 2**63, a duration
past an hour, a NaN). Anything out of bounds is a ``PlaylistError`` naming what was wrong: the tracker
(hls_tracker.py) counts it as a bad manifest.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

MAX_PLAYLIST_BYTES = 1024 * 1024  # a live window of a few hundred segments is a few tens of KiB
MAX_PLAYLIST_LINES = 20_000
MAX_SEGMENTS = 2_000  # segments of one media playlist (a live window is 3..20)
MAX_VARIANTS = 64
MAX_URI_CHARS = 2_048
MAX_SEQUENCE = 2**63 - 1
MAX_DURATION = 3_600.0  # seconds: of one segment, and TARGETDURATION

_KEY = re.compile(r"[A-Z0-9-]{1,64}")
MAX_ATTRIBUTES = 64


class PlaylistError(ValueError):
    """The origin's playlist cannot be used; the message says why (for the log and the monitor)."""


@dataclass(frozen=True)
class Variant:
    url: str
    bandwidth: int
    name: str = ""  # NAME= if given, else the URI's file stem: what --hls-variant matches


@dataclass(frozen=True)
class MasterPlaylist:
    variants: tuple[Variant, ...]


@dataclass(frozen=True)
class Segment:
    url: str  # absolute
    sequence: int  # the origin's media sequence number of this segment
    duration: float
    discontinuity: bool = False


@dataclass(frozen=True)
class MediaPlaylist:
    media_sequence: int
    target_duration: float
    segments: tuple[Segment, ...]
    ended: bool = False

    @property
    def last_sequence(self) -> int | None:
        return self.segments[-1].sequence if self.segments else None


Playlist = MasterPlaylist | MediaPlaylist


def _uri(line: str, base: str, what: str) -> str:
    if len(line) > MAX_URI_CHARS:
        raise PlaylistError(f"{what} URI of {len(line)} characters (more than {MAX_URI_CHARS})")
    url = urljoin(base, line)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PlaylistError(f"{what} URI {line[:100]!r} is not http(s)")
    return url


def _number(text: str, what: str, *, integer: bool) -> float:
    text = text.strip()
    if len(text) > 24:
        raise PlaylistError(f"{what} {text[:30]!r}... is not a number")
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise PlaylistError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise PlaylistError(f"{what} {text!r} out of range")
    return value


def attributes(text: str) -> dict[str, str]:
    """An attribute list (RFC 8216 §4.2): ``KEY=value,KEY="quoted"``; linear in the text (the first 4096 characters:
    a regular expression here backtracked quadratically on a long run of key characters, found by fuzzing)."""
    text = text[:4096]
    out: dict[str, str] = {}
    i = 0
    while len(out) < MAX_ATTRIBUTES:
        eq = text.find("=", i)
        if eq < 0:
            break
        key = text[i:eq].strip()
        if text.startswith('"', eq + 1):
            close = text.find('"', eq + 2)
            close = len(text) if close < 0 else close
            value, comma = text[eq + 2 : close], text.find(",", close)
        else:
            comma = text.find(",", eq + 1)
            value = text[eq + 1 : comma if comma >= 0 else len(text)]
        if _KEY.fullmatch(key):
            out[key] = value
        if comma < 0:
            break
        i = comma + 1
    return out


def parse_playlist(text: str, url: str) -> Playlist:
    lines = text.lstrip("\ufeff").splitlines()
    if len(lines) > MAX_PLAYLIST_LINES:
        raise PlaylistError(f"playlist of {len(lines)} lines (more than {MAX_PLAYLIST_LINES})")
    if not lines or lines[0].strip() != "#EXTM3U":
        raise PlaylistError("not an HLS playlist (no #EXTM3U first line)")
    if any(line.startswith("#EXT-X-STREAM-INF") for line in lines):
        return _parse_master(lines, url)
    return _parse_media(lines, url)


def _parse_master(lines: list[str], url: str) -> MasterPlaylist:
    variants: list[Variant] = []
    pending: dict[str, str] | None = None
    for raw in lines[1:]:
        line = raw.strip()
        if line.startswith("#EXT-X-STREAM-INF:"):
            pending = attributes(line.partition(":")[2])
        elif line and not line.startswith("#") and pending is not None:
            if len(variants) >= MAX_VARIANTS:
                raise PlaylistError(f"master playlist with more than {MAX_VARIANTS} variants")
            variant_url = _uri(line, url, "variant")
            bandwidth = int(_number(pending.get("BANDWIDTH", "0"), "BANDWIDTH", integer=True))
            stem = urlsplit(variant_url).path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            variants.append(Variant(variant_url, bandwidth, pending.get("NAME", stem)[:200]))
            pending = None
    if not variants:
        raise PlaylistError("master playlist without variants")
    return MasterPlaylist(tuple(variants))


def _parse_media(lines: list[str], url: str) -> MediaPlaylist:
    media_sequence = 0
    target = 0.0
    ended = False
    segments: list[Segment] = []
    duration: float | None = None
    discontinuity = False
    seen_sequence = False
    for raw in lines[1:]:
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            tag, _, value = line.partition(":")
            if tag == "#EXT-X-MEDIA-SEQUENCE":
                if segments or seen_sequence:  # RFC 8216 §4.3.3.2: once, before the first segment
                    raise PlaylistError("#EXT-X-MEDIA-SEQUENCE after a segment or twice")
                seen_sequence = True
                media_sequence = int(_number(value, "#EXT-X-MEDIA-SEQUENCE", integer=True))
                if media_sequence > MAX_SEQUENCE:
                    raise PlaylistError(f"#EXT-X-MEDIA-SEQUENCE {media_sequence} out of range")
            elif tag == "#EXT-X-TARGETDURATION":
                target = _number(value, "#EXT-X-TARGETDURATION", integer=True)
            elif tag == "#EXTINF":
                duration = _number(value.partition(",")[0], "#EXTINF duration", integer=False)
            elif tag == "#EXT-X-DISCONTINUITY":
                discontinuity = True
            elif tag == "#EXT-X-ENDLIST":
                ended = True
            continue
        if duration is None:
            raise PlaylistError(f"segment {line[:100]!r} without #EXTINF")
        if len(segments) >= MAX_SEGMENTS:
            raise PlaylistError(f"media playlist with more than {MAX_SEGMENTS} segments")
        sequence = media_sequence + len(segments)
        if sequence > MAX_SEQUENCE:
            raise PlaylistError(f"media sequence {sequence} out of range")
        segments.append(Segment(_uri(line, url, "segment"), sequence, duration, discontinuity))
        duration, discontinuity = None, False
    if target > MAX_DURATION or any(s.duration > MAX_DURATION for s in segments):
        raise PlaylistError(f"a segment duration of more than {MAX_DURATION:g} s")
    if target == 0 and not segments and not ended:
        raise PlaylistError("media playlist without #EXT-X-TARGETDURATION and without segments")
    return MediaPlaylist(media_sequence, target, tuple(segments), ended)


def choose_variant(master: MasterPlaylist, name: str | None = None) -> Variant:
    """The variant named ``name`` (its NAME or file stem), else the one with the highest BANDWIDTH."""
    if name:
        for variant in master.variants:
            if variant.name == name:
                return variant
        names = ", ".join(v.name for v in master.variants)
        raise PlaylistError(f"master playlist has no variant {name!r} (it has: {names})")
    return max(master.variants, key=lambda v: v.bandwidth)
