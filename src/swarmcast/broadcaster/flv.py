"""RTMP media messages as an FLV byte stream (the FLV file format, Adobe's spec version 10, annex E).

An RTMP audio or video message's payload is exactly an FLV tag's body, and its timestamp the tag's; so the FLV
stream a publisher's messages make is a 9-byte header, then for each message an 11-byte tag header, the payload
and the 4-byte size of the tag just written. That is what FFmpeg's flv demuxer (the media pipeline's input)
reads.
"""

from __future__ import annotations

from typing import Final

TAG_AUDIO: Final = 8
TAG_VIDEO: Final = 9
TAG_SCRIPT: Final = 18
MAX_TAG_BODY: Final = 0xFFFFFF  # the tag's 24-bit size field
# "@setDataFrame" as an AMF0 string: publishers put it before onMetaData; an FLV file's script tag has no such
# prefix.
_SET_DATA_FRAME: Final = b"\x02\x00\x0d@setDataFrame"


def flv_header(*, audio: bool = True, video: bool = True) -> bytes:
    """The file header and PreviousTagSize0."""
    flags = (4 if audio else 0) | (1 if video else 0)
    return b"FLV\x01" + bytes([flags]) + (9).to_bytes(4, "big") + b"\x00\x00\x00\x00"


def flv_tag(tag_type: int, timestamp_ms: int, body: bytes) -> bytes:
    """One tag and its trailing PreviousTagSize; the 32-bit timestamp is split as the format wants it (low 24
    bits, then the high 8)."""
    if len(body) > MAX_TAG_BODY:
        raise ValueError(f"FLV tag body of {len(body)} bytes, more than {MAX_TAG_BODY}")
    ts = timestamp_ms & 0xFFFFFFFF
    header = (
        bytes([tag_type])
        + len(body).to_bytes(3, "big")
        + (ts & 0xFFFFFF).to_bytes(3, "big")
        + bytes([ts >> 24])
        + b"\x00\x00\x00"
    )
    return header + body + (11 + len(body)).to_bytes(4, "big")


def script_body(rtmp_data_payload: bytes) -> bytes | None:
    """The FLV script tag body for an RTMP data message (onMetaData), or None if it is not ``@setDataFrame``
    metadata (other data messages mean nothing to the demuxer)."""
    if rtmp_data_payload.startswith(_SET_DATA_FRAME):
        return rtmp_data_payload[len(_SET_DATA_FRAME) :]
    if rtmp_data_payload.startswith(b"\x02\x00\x0aonMetaData"):
        return rtmp_data_payload
    return None
