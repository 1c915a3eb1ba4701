"""--transcoding-options: Livepeer's names, JSON profile files, and the errors for anything else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swarmcast.broadcaster.profiles import (
    LIVEPEER_PROFILES,
    MAX_PROFILE_FILE_BYTES,
    Profile,
    parse_profiles_json,
    parse_transcoding_options,
)

# lpms ffmpeg/videoprofile.go: name -> (resolution, bitrate, fps)
LPMS = {
    "P720p60fps16x9": ("1280x720", "6000k", 60),
    "P720p30fps16x9": ("1280x720", "4000k", 30),
    "P720p25fps16x9": ("1280x720", "3500k", 25),
    "P720p30fps4x3": ("960x720", "3500k", 30),
    "P576p30fps16x9": ("1024x576", "1500k", 30),
    "P576p25fps16x9": ("1024x576", "1500k", 25),
    "P360p30fps16x9": ("640x360", "1200k", 30),
    "P360p25fps16x9": ("640x360", "1000k", 25),
    "P360p30fps4x3": ("480x360", "1000k", 30),
    "P240p30fps16x9": ("426x240", "600k", 30),
    "P240p25fps16x9": ("426x240", "600k", 25),
    "P240p30fps4x3": ("320x240", "600k", 30),
    "P144p30fps16x9": ("256x144", "400k", 30),
    "P144p25fps16x9": ("256x144", "400k", 25),
}


def test_livepeer_table_matches_lpms() -> None:
    assert list(LIVEPEER_PROFILES) == list(LPMS)
    for name, (resolution, bitrate, fps) in LPMS.items():
        profile = LIVEPEER_PROFILES[name]
        assert f"{profile.width}x{profile.height}" == resolution
        assert profile.bitrate == int(bitrate.removesuffix("k")) * 1000
        assert profile.fps == fps
        assert profile.gop == 0


def test_comma_list_keeps_order() -> None:
    profiles = parse_transcoding_options(" P144p30fps16x9, P720p30fps16x9 ")
    assert [p.name for p in profiles] == ["P144p30fps16x9", "P720p30fps16x9"]
    assert parse_transcoding_options("") == []


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown profile 'P1080p30fps16x9'") as info:
        parse_transcoding_options("P144p30fps16x9,P1080p30fps16x9")
    for name in LPMS:
        assert name in str(info.value)


@pytest.mark.parametrize(("text", "message"), [
    ("P144p30fps16x9,,P240p30fps16x9", "empty profile name"),
    ("P144p30fps16x9,P144p30fps16x9", "given twice"),
])  # fmt: skip
def test_bad_lists(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_transcoding_options(text)


def test_json_file(tmp_path: Path) -> None:
    path = tmp_path / "ladder.json"
    path.write_text(json.dumps([
        {"name": "low", "width": 320, "height": 180, "bitrate": 300000, "fps": 15, "gop": "2"},
        {"width": 640, "height": 360, "bitrate": 800000, "fps": 30000, "fpsDen": 1001},
    ]))  # fmt: skip
    low, custom = parse_transcoding_options(str(path))
    assert low == Profile("low", 320, 180, 300_000, 15.0, 2.0)
    assert custom.name == "custom_640x360_800000"  # Livepeer's default name
    assert custom.fps == pytest.approx(29.97, abs=0.01)
    assert parse_profiles_json(json.dumps({"profiles": [{"name": "a", "width": 2, "height": 2,
                                                          "bitrate": 10000}]}))[0].fps == 0  # fmt: skip


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "a", "width": "x", "height": 2, "bitrate": 1}, "profiles[1].width: 'x' is not a positive even integer"),
    ({"name": "a", "width": 641, "height": 360, "bitrate": 10000}, "profiles[1].width: 641 is not a positive even"),
    ({"name": "a", "width": 640, "height": True, "bitrate": 10000}, "profiles[1].height: True is not"),
    ({"name": "a", "width": 640, "height": 360}, "profiles[1].bitrate: missing"),
    ({"name": "a", "width": 640, "height": 360, "bitrate": 1.5}, r"profiles\[1\].bitrate: 1.5 is not"),
    ({"name": "a/b", "width": 640, "height": 360, "bitrate": 10000}, r"profiles\[1\].name: 'a/b'"),
    ({"name": "source", "width": 640, "height": 360, "bitrate": 10000}, r"profiles\[1\].name: 'source'"),
    ({"name": "a", "width": 640, "height": 360, "bitrate": 10000, "fps": -1}, r"profiles\[1\].fps: -1"),
    ({"name": "a", "width": 640, "height": 360, "bitrate": 10000, "fps": 30, "fpsDen": 0}, r"fpsDen: 0"),
    ({"name": "a", "width": 640, "height": 360, "bitrate": 10000, "gop": "intra"}, r"profiles\[1\].gop: 'intra'"),
    ({"name": "a", "width": 640, "height": 360, "bitrate": 10000, "gop": "soon"}, r"profiles\[1\].gop: 'soon'"),
    ({"name": "a", "width": 640, "height": 360, "bitrate": 10000, "quality": 9}, r"profiles\[1\]: unknown .*'quality'"),
    ("P144p30fps16x9", r"profiles\[1\]: expected an object"),
])  # fmt: skip
def test_bad_json_entries_named_with_their_index(entry: object, message: str) -> None:
    good = {"name": "ok", "width": 320, "height": 180, "bitrate": 300000, "fps": 30}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]") if "\\" not in message
                       else message):  # fmt: skip
        parse_profiles_json(json.dumps([good, entry]))


@pytest.mark.parametrize(("document", "message"), [
    ("{", "not valid JSON"),
    ('{"a": 1}', "expected a JSON array"),
    ("[]", "empty"),
    (json.dumps([{"name": f"p{i}", "width": 2, "height": 2, "bitrate": 10000} for i in range(17)]), "at most 16"),
])  # fmt: skip
def test_bad_json_documents(document: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_profiles_json(document)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the profile file"):
        parse_transcoding_options(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="not a regular file"):
        parse_transcoding_options(str(tmp_path) + "/")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_PROFILE_FILE_BYTES + 1))
    with pytest.raises(ValueError, match="larger than"):
        parse_transcoding_options(str(big))
