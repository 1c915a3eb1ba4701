"""The channel file (swarmcast/channel.py): round trip, the documented example, and every rejection by name."""

from __future__ import annotations

import hashlib

import pytest

from swarmcast import bencoding
from swarmcast.channel import (
    MAX_CHANNEL_SIZE,
    MAX_RENDITIONS,
    Channel,
    ChannelError,
    Rendition,
    check_name,
    format_frame_rate,
)
from swarmcast.transport import Descriptor

SOURCE = Descriptor(name="hello_world-source", title="hello_world source", piece_size=94000, bitrate=250_000,
                    public_key=bytes(32), trackers=("udp://t.example:6969",))  # fmt: skip
LOW = Descriptor(name="hello_world-P144p30fps16x9", title="hello_world P144p30fps16x9", piece_size=18800,
                 bitrate=50_000, public_key=bytes(range(32)), trackers=("udp://t.example:6969",))  # fmt: skip


def channel() -> Channel:
    return Channel(name="hello_world", title="hello_world", renditions=(
        Rendition(name="source", bandwidth=2_000_000, transport=SOURCE.encode(), width=1280, height=720,
                  codecs="avc1.64001f,mp4a.40.2", frame_rate=30.0,
                  url="http://127.0.0.1:7800/app/get_transport_file"),
        Rendition(name="P144p30fps16x9", bandwidth=400_000, transport=LOW.encode(), width=256, height=144,
                  codecs="avc1.42c01e,mp4a.40.2", frame_rate=29.97),
    ))  # fmt: skip


def fields() -> dict[bytes, object]:
    value = bencoding.decode(channel().encode(), max_size=MAX_CHANNEL_SIZE)
    assert isinstance(value, dict)
    return value


def rendition_fields(f: dict[bytes, object], index: int = 0) -> dict[bytes, object]:
    items = f[b"renditions"]
    assert isinstance(items, list)
    item = items[index]
    assert isinstance(item, dict)
    return item


def test_round_trip_keeps_every_field_and_the_content_ids() -> None:
    original = channel()
    data = original.encode()
    decoded = Channel.decode(data)
    assert decoded == original
    assert decoded.encode() == data
    assert decoded.channel_id == hashlib.sha1(data).digest()
    assert [r.content_id for r in decoded.renditions] == [SOURCE.content_id, LOW.content_id]
    assert decoded.renditions[0].descriptor == SOURCE
    assert decoded.renditions[1].frame_rate == pytest.approx(29.97)
    assert decoded.renditions[1].resolution == (256, 144)
    assert decoded.rendition("P144p30fps16x9") == decoded.renditions[1]
    assert decoded.rendition("nope") is None


def test_optional_keys_are_left_out_when_absent() -> None:
    bare = Channel(name="x", title="", renditions=(Rendition(name="audio", bandwidth=128_000,
                                                             transport=SOURCE.encode()),))  # fmt: skip
    data = bare.encode()
    item = rendition_fields(bencoding.decode(data, max_size=MAX_CHANNEL_SIZE))  # type: ignore[arg-type]
    assert sorted(item) == [b"bandwidth", b"name", b"transport"]
    assert Channel.decode(data) == bare


def test_documented_example_bytes() -> None:
    """docs/protocol.md shows this channel; its length and channel id are quoted there."""
    data = channel().encode()
    assert data.startswith(b"d4:name11:hello_world10:renditionsld9:bandwidthi2000000e6:codecs21:avc1.64001f,"
                           b"mp4a.40.210:frame_rate2:306:heighti720e4:name6:source9:transport267:d7:bitrate")
    assert data.endswith(b"5:widthi256eee17:swarmcast_channeli1e5:title11:hello_worlde")
    assert len(data) == 944
    assert channel().channel_id.hex() == "5bc7ed360db72f00696eb9bf0ac0cb5bf94a8bf1"


def test_frame_rate_text_is_canonical() -> None:
    assert format_frame_rate(30.0) == "30"
    assert format_frame_rate(29.97) == "29.97"
    assert format_frame_rate(59.94006) == "59.94"
    with pytest.raises(ValueError, match="frame rate"):
        format_frame_rate(0.5)


def test_names_are_file_name_safe() -> None:
    assert check_name("P144p30fps16x9", "rendition") == "P144p30fps16x9"
    for bad in ("", ".hidden", "a/b", "a b", "x" * 65, 'q"uote', "ünï"):
        with pytest.raises(ValueError, match="rendition"):
            check_name(bad, "rendition")


def _refused(f: dict[bytes, object], match: str) -> None:
    with pytest.raises(ChannelError, match=match):
        Channel.decode(bencoding.encode(f))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda f: f.pop(b"name"), "channel file lacks key 'name'"),
        (lambda f: f.pop(b"title"), "lacks key 'title'"),
        (lambda f: f.pop(b"renditions"), "lacks key 'renditions'"),
        (lambda f: f.pop(b"swarmcast_channel"), "lacks key 'swarmcast_channel'"),
        (lambda f: f.update({b"swarmcast_channel": 2}), "'swarmcast_channel' = 2, this engine reads 1"),
        (lambda f: f.update({b"swarmcast_channel": b"1"}), "'swarmcast_channel' = b'1' is not a non-negative"),
        (lambda f: f.update({b"zz": 1}), "unknown key\\(s\\): 'zz'"),
        (lambda f: f.update({b"name": b"../etc"}), "key name '../etc' is not"),
        (lambda f: f.update({b"name": 5}), "key 'name' is not a string"),
        (lambda f: f.update({b"title": b"\xff"}), "key 'title' is not UTF-8"),
        (lambda f: f.update({b"title": b"t" * 513}), "'title' is more than 512 bytes"),
        (lambda f: f.update({b"renditions": b"x"}), "'renditions' is not a list"),
        (lambda f: f.update({b"renditions": []}), "'renditions' has 0 entries, not 1..16"),
        (lambda f: f.update({b"renditions": [b"x"]}), "rendition 0 is not a dictionary"),
    ],
)
def test_top_level_rejections_name_the_key(change: object, match: str) -> None:
    f = fields()
    change(f)  # type: ignore[operator]
    _refused(f, match)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        (b"name", None, "rendition 0 lacks key 'name'"),
        (b"name", b"a/b", "rendition 0 key name 'a/b' is not"),
        (b"bandwidth", None, "rendition 'source' lacks key 'bandwidth'"),
        (b"bandwidth", 0, "'bandwidth' = 0 is not in 1..10000000000"),
        (b"bandwidth", 10**10 + 1, "'bandwidth' = 10000000001 is not in"),
        (b"bandwidth", -5, "'bandwidth' = -5 is not a non-negative integer"),
        (b"transport", None, "rendition 'source' lacks key 'transport'"),
        (b"transport", 7, "'transport' is not a byte string"),
        (b"transport", b"d1:ai1ee", "'transport': transport file has unknown key\\(s\\): 'a'"),
        (b"width", None, "has one of 'width' and 'height' without the other"),
        (b"width", 0, "'width' = 0 is not in 1..16384"),
        (b"height", 16385, "'height' = 16385 is not in 1..16384"),
        (b"codecs", b'avc1"', "'codecs' = 'avc1\"' is not a list of RFC 6381 codecs"),
        (b"codecs", b"avc1,,mp4a", "'codecs' = 'avc1,,mp4a' is not"),
        (b"codecs", b"a" * 257, "'codecs' = 'a+' is not"),
        (b"frame_rate", b"30.0", "'frame_rate' = '30.0' is not a canonical decimal"),
        (b"frame_rate", b"030", "'frame_rate' = '030' is not"),
        (b"frame_rate", b"1001", "'frame_rate' = '1001' is not"),
        (b"frame_rate", b"29.9999", "'frame_rate' = '29.9999' is not"),
        (b"frame_rate", 30, "'frame_rate' is not a string"),
        (b"url", b"ftp://x/y", "'url' 'ftp://x/y' is not an http\\(s\\) URL"),
        (b"url", b"http://", "'url' 'http://' is not an http\\(s\\) URL with a host"),
        (b"url", b"http://a b/", "'url' holds a space"),
        (b"url", b"http://h:99999/", "'url' is not a URL"),
        (b"url", b"http://h/" + b"x" * 2048, "'url' is 2057 characters, more than 2048"),
        (b"zzz", b"1", "rendition 'source' has unknown key\\(s\\): 'zzz'"),
    ],
)
def test_rendition_rejections_name_the_rendition_and_key(key: bytes, value: object, match: str) -> None:
    f = fields()
    item = rendition_fields(f)
    if value is None:
        item.pop(key)
    else:
        item[key] = value
    _refused(f, match)


def test_two_renditions_with_one_name_or_one_transport_file_are_refused() -> None:
    f = fields()
    rendition_fields(f, 1)[b"name"] = b"source"
    _refused(f, "names a rendition twice")
    f = fields()
    rendition_fields(f, 1)[b"transport"] = SOURCE.encode()
    _refused(f, "one transport file for two renditions")


def test_too_many_renditions() -> None:
    f = fields()
    item = rendition_fields(f)
    many = []
    for i in range(MAX_RENDITIONS + 1):
        d = Descriptor(**{**SOURCE.__dict__, "name": f"r{i}"})
        many.append({**item, b"name": f"r{i}".encode(), b"transport": d.encode()})
    f[b"renditions"] = many
    _refused(f, f"has {MAX_RENDITIONS + 1} entries, not 1..{MAX_RENDITIONS}")


def test_size_bencoding_and_canonical_form() -> None:
    data = channel().encode()
    with pytest.raises(ChannelError, match=f"more than {MAX_CHANNEL_SIZE}"):
        Channel.decode(b"d" + b"0" * MAX_CHANNEL_SIZE)
    with pytest.raises(ChannelError, match="channel file: "):
        Channel.decode(data[:-1])
    with pytest.raises(ChannelError, match="not a bencoded dictionary"):
        Channel.decode(b"i1e")
    with pytest.raises(ChannelError, match="channel file: "):  # trailing bytes
        Channel.decode(data + b"x")
    # Keys out of order: the strict decoder refuses before canonical form is checked.
    with pytest.raises(ChannelError, match="channel file: "):
        Channel.decode(b"d5:title1:t4:name1:xe")
