"""Transcoding profiles: Livepeer's named ladder and its JSON profile files (``--transcoding-options``).

The names, sizes, bitrates and frame rates are Livepeer's, as in lpms ``ffmpeg/videoprofile.go`` (the table
``VideoProfileLookup`` there, plus ``P144p25fps16x9`` which lpms defines but leaves out of that lookup). A JSON
file is what go-livepeer's ``-transcodingOptions file.json`` reads: an array of ``{name, width, height, bitrate, fps,
gop}`` objects (``fpsDen`` too); we also take ``{"profiles": [...]}``. Unlike Livepeer, which skips an unknown name
without a word, anything we cannot honour is a ValueError naming the entry and the bad value.

``gop`` (seconds; 0 or absent: follow the source) is parsed for compatibility with Livepeer's files, but every
rendition's keyframes are the source's own (see broadcaster/transcoder.py): that is what lets a player switch
renditions at any segment boundary. The keyframe interval is the publisher's (OBS: Output → Keyframe Interval).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from swarmcast.files import UnreadableFileError, read_regular_file
from swarmcast.media.units import MAX_FPS

log = logging.getLogger("swarmcast.broadcaster")

MAX_PROFILES: Final = 16  # renditions per stream besides the source: each is an encoder thread
MAX_PROFILE_FILE_BYTES: Final = 64 * 1024
MAX_WIDTH: Final = 4096
MAX_HEIGHT: Final = 4096
MIN_PROFILE_BITRATE: Final = 10_000
MAX_PROFILE_BITRATE: Final = 50_000_000
MAX_GOP_SECONDS: Final = 60.0
# A rendition name is a path element of the HLS layout (/stream/<id>/<name>.m3u8) and a swarm name.
NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", re.ASCII)
SOURCE_RENDITION: Final = "source"


@dataclass(frozen=True, slots=True)
class Profile:
    """One transcoded rendition: picture size, video bitrate (bits/s), frame rate (0: the source's), GOP (s)."""

    name: str
    width: int
    height: int
    bitrate: int
    fps: float
    gop: float = 0.0

    def output_fps(self, source_fps: float | None) -> float | None:
        """The frame rate this rendition has for a source of ``source_fps``: frames are dropped, never repeated."""
        if self.fps <= 0:
            return source_fps
        if source_fps is None or source_fps <= 0:
            return self.fps
        return min(self.fps, source_fps)


def _livepeer(name: str, width: int, height: int, kbps: int, fps: int) -> Profile:
    return Profile(name, width, height, kbps * 1000, fps)


# lpms ffmpeg/videoprofile.go, in its order.
LIVEPEER_PROFILES: Final[dict[str, Profile]] = {
    p.name: p
    for p in (
        _livepeer("P720p60fps16x9", 1280, 720, 6000, 60),
        _livepeer("P720p30fps16x9", 1280, 720, 4000, 30),
        _livepeer("P720p25fps16x9", 1280, 720, 3500, 25),
        _livepeer("P720p30fps4x3", 960, 720, 3500, 30),
        _livepeer("P576p30fps16x9", 1024, 576, 1500, 30),
        _livepeer("P576p25fps16x9", 1024, 576, 1500, 25),
        _livepeer("P360p30fps16x9", 640, 360, 1200, 30),
        _livepeer("P360p25fps16x9", 640, 360, 1000, 25),
        _livepeer("P360p30fps4x3", 480, 360, 1000, 30),
        _livepeer("P240p30fps16x9", 426, 240, 600, 30),
        _livepeer("P240p25fps16x9", 426, 240, 600, 25),
        _livepeer("P240p30fps4x3", 320, 240, 600, 30),
        _livepeer("P144p30fps16x9", 256, 144, 400, 30),
        _livepeer("P144p25fps16x9", 256, 144, 400, 25),
    )
}

_KNOWN_KEYS: Final = ("name", "width", "height", "bitrate", "fps", "fpsDen", "gop")


def _valid_names() -> str:
    return ", ".join(LIVEPEER_PROFILES)


def parse_transcoding_options(text: str) -> list[Profile]:
    """The profiles ``--transcoding-options`` names: a comma list of Livepeer names, or a path to a JSON file.

    As in go-livepeer, a value ending in ``.json`` (or naming a path, with a ``/``) is a file; anything else is a
    list of names. An empty value is no transcoding (the source rendition only). ValueError says what is wrong.
    """
    text = text.strip()
    if not text:
        return []
    if text.lower().endswith(".json") or "/" in text:
        return _parse_file(Path(text))
    profiles: list[Profile] = []
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            raise ValueError(f"empty profile name in {text[:200]!r} (a comma too many?)")
        profile = LIVEPEER_PROFILES.get(name)
        if profile is None:
            raise ValueError(f"unknown profile {name[:80]!r}; valid names: {_valid_names()} "
                             "(or a path to a .json file)")
        profiles.append(profile)
    return _checked_set(profiles)


def _checked_set(profiles: list[Profile]) -> list[Profile]:
    if len(profiles) > MAX_PROFILES:
        raise ValueError(f"{len(profiles)} profiles: at most {MAX_PROFILES} renditions besides the source")
    seen: set[str] = set()
    for profile in profiles:
        if profile.name in seen:
            raise ValueError(f"profile {profile.name!r} given twice")
        seen.add(profile.name)
    return profiles


def _parse_file(path: Path) -> list[Profile]:
    try:
        data = read_regular_file(path, MAX_PROFILE_FILE_BYTES)
    except UnreadableFileError as error:
        raise ValueError(f"cannot read the profile file {str(path)[:200]!r}: {error}") from None
    if len(data) > MAX_PROFILE_FILE_BYTES:
        raise ValueError(f"profile file {str(path)[:200]!r} is larger than {MAX_PROFILE_FILE_BYTES} bytes")
    return parse_profiles_json(data, source=str(path)[:200])


def parse_profiles_json(data: bytes | str, *, source: str = "profile file") -> list[Profile]:
    """Profiles from Livepeer's JSON: a list of objects, or ``{"profiles": [...]}``."""
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{source}: not valid JSON ({error})") from None
    if isinstance(document, dict) and set(document) == {"profiles"}:
        document = document["profiles"]
    if not isinstance(document, list):
        raise ValueError(f"{source}: expected a JSON array of profiles (or {{\"profiles\": [...]}})")  # noqa: TRY004
    if not document:
        raise ValueError(f"{source}: the profile list is empty")
    if len(document) > MAX_PROFILES:
        raise ValueError(f"{source}: {len(document)} profiles; at most {MAX_PROFILES} renditions besides the source")
    profiles = [_parse_entry(entry, f"profiles[{i}]") for i, entry in enumerate(document)]
    for profile in profiles:
        if profile.gop > 0:
            log.info("profile %s: gop %g s noted; keyframes follow the source's (renditions stay aligned)",
                     profile.name, profile.gop)  # fmt: skip
    return _checked_set(profiles)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_entry(entry: object, where: str) -> Profile:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object with name, width, height, bitrate, fps, gop")  # noqa: TRY004
    unknown = [key for key in entry if key not in _KNOWN_KEYS]
    if unknown:
        known = ", ".join(_KNOWN_KEYS)
        raise ValueError(f"{where}: unknown or unsupported key {str(unknown[0])[:40]!r} (known: {known})")
    for key in ("width", "height", "bitrate"):
        if key not in entry:
            raise ValueError(f"{where}.{key}: missing")
    width, height, bitrate = entry["width"], entry["height"], entry["bitrate"]
    for key, value, limit in (("width", width, MAX_WIDTH), ("height", height, MAX_HEIGHT)):
        if not _is_int(value) or value <= 0 or value % 2:
            raise ValueError(f"{where}.{key}: {_show(value)} is not a positive even integer")
        if value > limit:
            raise ValueError(f"{where}.{key}: {value} is larger than {limit}")
    if not _is_int(bitrate) or not MIN_PROFILE_BITRATE <= bitrate <= MAX_PROFILE_BITRATE:
        raise ValueError(f"{where}.bitrate: {_show(bitrate)} is not an integer number of bits/s in "
                         f"{MIN_PROFILE_BITRATE}..{MAX_PROFILE_BITRATE}")  # fmt: skip
    name = entry.get("name", "")
    if name in ("", None):
        name = f"custom_{width}x{height}_{bitrate}"  # Livepeer's default name
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name == SOURCE_RENDITION:
        raise ValueError(f"{where}.name: {_show(name)} is not a rendition name (letters, digits, _ and -, at most "
                         f"64, not {SOURCE_RENDITION!r})")  # fmt: skip
    fps = _parse_fps(entry, where)
    return Profile(name, width, height, bitrate, fps, _parse_gop(entry.get("gop", 0), where))


def _parse_fps(entry: dict[str, object], where: str) -> float:
    # Livepeer's fps/fpsDen pair: 30000/1001 is NTSC's 29.97.
    fps, den = entry.get("fps", 0), entry.get("fpsDen", 1)
    if not _is_int(den) or not 1 <= den <= 1001:  # type: ignore[operator]
        raise ValueError(f"{where}.fpsDen: {_show(den)} is not an integer in 1..1001")
    if not (_is_int(fps) or isinstance(fps, float)):
        raise ValueError(f"{where}.fps: {_show(fps)} is not a number")
    rate = float(fps) / den  # type: ignore[arg-type, operator]
    if not math.isfinite(rate) or not 0 <= rate <= MAX_FPS:
        raise ValueError(f"{where}.fps: {_show(fps)} is not a frame rate in 0..{MAX_FPS} (0: the source's)")
    return rate


def _parse_gop(gop: object, where: str) -> float:
    # Livepeer writes it as a string ("2", "0.5", "intra"); a plain number is taken too.
    value: float
    if isinstance(gop, str):
        if gop.strip().lower() == "intra":
            raise ValueError(f"{where}.gop: 'intra' (all-intra) is not supported: keyframes follow the source")
        try:
            value = float(gop) if gop.strip() else 0.0
        except ValueError:
            raise ValueError(f"{where}.gop: {_show(gop)} is not a number of seconds") from None
    elif _is_int(gop) or isinstance(gop, float):
        value = float(gop)  # type: ignore[arg-type]
    else:
        raise ValueError(f"{where}.gop: {_show(gop)} is not a number of seconds")
    if not math.isfinite(value) or not 0 <= value <= MAX_GOP_SECONDS:
        raise ValueError(f"{where}.gop: {_show(gop)} is not in 0..{MAX_GOP_SECONDS:g} seconds")
    return value


def _show(value: object) -> str:
    return repr(value)[:60]
