"""The playback API's parameters, as Ace Stream documents them (issue 8 item 8), and stat_url's livepos."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from multidict import MultiDict

from swarmcast.http.engine_params import MAX_QUERY_PARAMS, PARAMETERS, parse_playback
from swarmcast.http.livepos import livepos, piece_seconds
from swarmcast.node.joiner import JoinError
from swarmcast.transport import Descriptor, public_key_bytes

ID = "ab" * 20

# What Ace Stream's players and playlists send alongside the id (docs.acestream.net, the engine's HTTP API wiki).
COMPAT = {
    "pid": "5e8a3c1f-2d4b-4f1e-9a7c-0b1d2e3f4a5b",
    "sid": "session-17",
    "use_stop_notifications": "1",
    "transcode_audio": "0",
    "transcode_mp3": "0",
    "transcode_ac3": "1",
    "preferred_audio_language": "eng",
    "hlc": "1",
    "file_indexes": "0",
    "_idx": "0",
    "developer_id": "0",
    "affiliate_id": "0",
    "zone_id": "0",
}


def q(**params: str) -> MultiDict[str]:
    return MultiDict(params)


def test_every_documented_parameter_is_accepted_with_a_good_value() -> None:
    asked = parse_playback(q(id=ID, format="json", **COMPAT))
    assert (asked.selector, asked.value, asked.as_json) == ("id", ID, True)
    assert set(COMPAT) <= set(PARAMETERS)


def test_unknown_parameters_are_ignored_like_ace_stream() -> None:
    asked = parse_playback(q(content_id=ID, _="1733050000000", player="vlc"))
    assert asked.selector == "content_id" and not asked.as_json


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("pid", "has space", "expected 1..128 printable"),
        ("pid", "x" * 129, "expected 1..128 printable"),
        ("sid", "", "expected 1..128 printable"),
        ("use_stop_notifications", "yes", "expected 0 or 1"),
        ("transcode_audio", "2", "expected 0 or 1"),
        ("transcode_mp3", "", "expected 0 or 1"),
        ("transcode_ac3", "true", "expected 0 or 1"),
        ("preferred_audio_language", "english!", "language code"),
        ("preferred_audio_language", "e", "language code"),
        ("hlc", "-1", "expected 0 or 1"),
        ("file_indexes", "1", "one stream, index 0"),
        ("file_indexes", "0,x", "comma-separated"),
        ("file_indexes", ",".join("0" * 65), "comma-separated"),
        ("_idx", "3", "one stream, index 0"),
        ("developer_id", "-5", "whole number"),
        ("zone_id", "9" * 20, "whole number"),
        ("affiliate_id", "\u0663", "whole number"),  # an Arabic-Indic digit is a digit to str.isdigit
        ("format", "xml", "the only format is json"),
    ],
)
def test_a_bad_value_is_refused_naming_the_parameter(key: str, value: str, message: str) -> None:
    with pytest.raises(JoinError) as error:
        parse_playback(q(id=ID, **{key: value}))
    assert str(error.value).startswith(f"{key}=") and message in str(error.value)


def test_a_bad_value_is_refused_even_when_repeated_after_a_good_one() -> None:
    query: MultiDict[str] = MultiDict([("id", ID), ("pid", "good"), ("pid", "bad value")])
    with pytest.raises(JoinError, match="pid="):
        parse_playback(query)


def test_selectors_in_ace_stream_order() -> None:
    assert parse_playback(q(url="http://h/x", infohash=ID)).selector == "infohash"
    assert parse_playback(q(magnet="magnet:?xt=urn:btih:" + ID, url="http://h/x")).selector == "url"
    assert parse_playback(q(content_id=ID, id="cd" * 20)).selector == "id"


def test_no_selector_says_which_to_give() -> None:
    with pytest.raises(JoinError, match="give one of content_id"):
        parse_playback(q(pid="p"))


def test_direct_url_is_refused_with_the_reason() -> None:
    with pytest.raises(JoinError, match="direct_url: a direct media link cannot be played by a P2P engine"):
        parse_playback(q(direct_url="http://cdn.example/movie.mp4"))
    with pytest.raises(JoinError, match="direct_url: expected an http"):
        parse_playback(q(direct_url="file:///etc/passwd"))


def _descriptor() -> Descriptor:
    return Descriptor(name="t", title="T", piece_size=188 * 64, bitrate=125_000,
                      public_key=public_key_bytes(Ed25519PrivateKey.generate()))  # fmt: skip


def test_data_carries_a_transport_file_in_base64() -> None:
    raw = _descriptor().encode()
    for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")):
        asked = parse_playback(q(data=encoded))
        assert asked.selector == "data"


@pytest.mark.parametrize(("value", "message"), [("!!!", "not base64"), (base64.b64encode(b"hello").decode(),
                                                                           "not a transport file")])  # fmt: skip
def test_bad_data_is_refused(value: str, message: str) -> None:
    with pytest.raises(JoinError, match=f"data: {message}"):
        parse_playback(q(data=value))


def test_query_bounds_still_hold() -> None:
    with pytest.raises(JoinError, match=f"more than {MAX_QUERY_PARAMS}"):
        parse_playback(MultiDict([("id", ID)] + [(f"k{i}", "v") for i in range(MAX_QUERY_PARAMS)]))


def test_livepos_reckons_times_back_from_the_live_edge() -> None:
    # 10 pieces of 62_500 bytes at 125_000 bytes/s: half a second each; the player reads piece 106 next.
    seconds = piece_seconds(10 * 62_500, 10, 125_000)
    assert seconds == 0.5
    pos = livepos(now=1_000_000.0, oldest=100, newest=109, position=106, held=range(100, 110),
                  seconds_per_piece=seconds)  # fmt: skip
    assert pos["last_ts"] == pos["live_last"] == pos["last"] == 1_000_000
    assert pos["first_ts"] == pos["live_first"] == pos["first"] == int(1_000_000 - 4.5)  # 9 pieces back
    assert pos["pos"] == int(1_000_000 - 1.5)  # 3 pieces behind the edge
    assert pos["buffer_pieces"] == 4  # 106..109 held ahead of the player
    assert pos["is_live"] == 1
    assert (pos["first_piece"], pos["last_piece"], pos["pos_piece"]) == (100, 109, 106)


def test_livepos_before_anything_is_held_or_played() -> None:
    empty = livepos(now=5.0, oldest=None, newest=None, position=None, held=(), seconds_per_piece=0.0)
    assert empty["first_ts"] is None and empty["pos"] is None and empty["buffer_pieces"] == 0
    waiting = livepos(now=5.0, oldest=1, newest=3, position=None, held=(1, 2, 3), seconds_per_piece=0.5)
    assert waiting["last_ts"] == 5 and waiting["pos"] is None and waiting["buffer_pieces"] == 0
    assert piece_seconds(0, 0, 125_000) == 0.0 and piece_seconds(100, 1, 0) == 0.0
