"""RTMP media messages → FLV (broadcaster/flv.py), checked with FFmpeg's FLV demuxer (the pipeline's input)."""

from __future__ import annotations

import io

import av

from swarmcast.broadcaster import flv
from tests.flvgen import make_flv


def tags(data: bytes) -> list[tuple[int, int, bytes]]:
    """(type, timestamp ms, body) of every tag of an FLV file: what a publisher sends as RTMP messages."""
    assert data[:3] == b"FLV"
    pos = int.from_bytes(data[5:9], "big") + 4
    out = []
    while pos + 11 <= len(data):
        kind, size = data[pos], int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | data[pos + 7] << 24
        out.append((kind, ts, data[pos + 11 : pos + 11 + size]))
        pos += 11 + size + 4
    return out


def frames(data: bytes) -> list[int | None]:
    with av.open(io.BytesIO(data), mode="r", format="flv") as container:
        return [packet.pts for packet in container.demux(video=0) if packet.size]


def test_messages_rebuilt_as_flv_demux_like_the_original() -> None:
    original = make_flv(2.0, width=64, height=64, fps=10)
    messages = tags(original)
    assert {kind for kind, _, _ in messages} >= {flv.TAG_AUDIO, flv.TAG_VIDEO}
    rebuilt = flv.flv_header() + b"".join(flv.flv_tag(kind, ts, body) for kind, ts, body in messages)
    assert frames(rebuilt) == frames(original) and len(frames(rebuilt)) == 20


def test_timestamps_past_24_bits_use_the_extension_byte() -> None:
    tag = flv.flv_tag(flv.TAG_VIDEO, 0x12345678, b"\x17\x01")
    assert tag[4:8] == bytes([0x34, 0x56, 0x78, 0x12])
    assert tag[-4:] == (11 + 2).to_bytes(4, "big")


def test_set_data_frame_becomes_an_flv_script_tag() -> None:
    meta = b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09"
    assert flv.script_body(b"\x02\x00\x0d@setDataFrame" + meta) == meta
    assert flv.script_body(meta) == meta
    assert flv.script_body(b"\x02\x00\x04junk") is None
