"""Is the input MPEG-TS? Decided from the first bytes of each connection, sans-IO.

How this works. MPEG-TS is a run of 188-byte packets, each opening with the sync byte 0x47. The input is taken as
TS when, at some offset within the first packet's length, ``SYNC_PACKETS`` sync bytes follow one another at 188-byte
spacing (a stray 0x47 in text is common, seven in a row at that spacing are not). Until ``SNIFF_BYTES`` have come
the answer may be "need more"; past that it is final. What the input is instead is told from its first bytes (an
HLS playlist opens with ``#EXTM3U``, a web page with ``<``) and, failing that, from the response's Content-Type, so
that the log can say what the operator gave us rather than only that it is wrong.

Nothing of a non-TS input reaches the cutter: the ingest loop drops the connection and tries again later (the URL
may start serving TS, e.g. an encoder that was not running yet behind a web server's error page). An HLS playlist
is the one exception: the verdict says ``hls`` and the ingest switches to the HLS reader (ingest/hls.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from swarmcast.media.ts import SYNC_BYTE, TS_PACKET_SIZE

SYNC_PACKETS = 7  # sync bytes in a row at 188-byte spacing that make an input MPEG-TS (7 x 188 = one UDP payload)
# Bytes needed for a final answer: any offset in the first packet plus SYNC_PACKETS packets from there.
SNIFF_BYTES = TS_PACKET_SIZE * (SYNC_PACKETS + 1)
HLS_HINT = "read as HLS; for an HLS broadcast see --create-hls-transport"

_HTML_TYPES = ("text/html", "application/xhtml+xml")
_HLS_TYPES = ("application/vnd.apple.mpegurl", "application/x-mpegurl", "audio/mpegurl", "audio/x-mpegurl")


@dataclass(frozen=True)
class Verdict:
    """``is_ts`` True: TS from ``offset``; False: not TS, ``reason`` says what it looks like; None: need more."""

    is_ts: bool | None
    offset: int = 0
    reason: str = ""
    hls: bool = False  # not TS but an HLS playlist: the ingest routes it to the HLS reader (ingest/hls.py)


NEED_MORE = Verdict(None)


def _sync_offset(data: bytes) -> int | None:
    span = TS_PACKET_SIZE * (SYNC_PACKETS - 1)
    for offset in range(min(TS_PACKET_SIZE, len(data) - span)):
        if all(data[offset + k * TS_PACKET_SIZE] == SYNC_BYTE for k in range(SYNC_PACKETS)):
            return offset
    return None


def describe(data: bytes, content_type: str | None) -> str:
    """What a non-TS input looks like, for the log and the monitor (one line, no input bytes beyond a short hint)."""
    text = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    media_type = (content_type or "").split(";")[0].strip().lower()
    if text.startswith(b"#extm3u") or media_type in _HLS_TYPES:
        return f"input is not MPEG-TS: looks like an HLS playlist ({HLS_HINT})"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or media_type in _HTML_TYPES:
        return "input is not MPEG-TS: looks like an HTML page (is the URL the stream itself, not a web page?)"
    if text.startswith((b"<?xml", b"<")):
        return "input is not MPEG-TS: looks like XML (a DASH manifest or an error document?)"
    if text.startswith((b"{", b"[")) or media_type == "application/json":
        return "input is not MPEG-TS: looks like JSON (an API answer, not a stream)"
    kind = f"Content-Type {media_type}" if media_type else "no Content-Type"
    return f"input is not MPEG-TS: no 0x47 sync bytes at 188-byte spacing in the first {len(data)} bytes ({kind})"


def sniff(data: bytes, content_type: str | None, *, ended: bool = False) -> Verdict:
    """The verdict on a connection's first bytes; ``ended`` when the input closed after ``data``."""
    offset = _sync_offset(data)
    if offset is not None:
        return Verdict(True, offset)
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    # A playlist or a page is recognised from its first bytes: no need to wait for SNIFF_BYTES of it.
    if head[:1] in (b"<", b"{") or head[:7].lower() == b"#extm3u":
        return _not_ts(data, content_type)
    if len(data) >= SNIFF_BYTES:
        return _not_ts(data, content_type)
    if ended:
        if not data:
            return Verdict(False, reason="the input ended before sending any byte")
        what = describe(data, content_type).removeprefix("input is not MPEG-TS: ")
        reason = f"input is not MPEG-TS: it ended after {len(data)} bytes ({what})"
        return Verdict(False, reason=reason, hls=_not_ts(data, content_type).hls)
    return NEED_MORE


def _not_ts(data: bytes, content_type: str | None) -> Verdict:
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:7].lower()
    media_type = (content_type or "").split(";")[0].strip().lower()
    hls = head == b"#extm3u" or (media_type in _HLS_TYPES and head[:1] != b"<")
    return Verdict(False, reason=describe(data, content_type), hls=hls)
