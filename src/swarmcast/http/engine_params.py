"""The query parameters of ``/ace/getstream`` and ``/ace/manifest.m3u8``, as the Ace Stream engine documents them.

How this works. Every parameter Ace Stream documents for starting playback is known here with the values it may
take (``PARAMETERS``); a known parameter with a bad value is a 400 that names it, whether we use it or not, so a
player with a bug hears of it instead of getting a stream that ignores what it asked for without a word.

- What names the broadcast, in Ace Stream's order (the first one present wins, the others are ignored):
  ``id``/``content_id``, ``infohash``, ``url``, ``magnet``, then ``data`` (a transport file, base64) and
  ``direct_url`` (a plain media link: refused with a 400 that says so, a P2P engine has nothing to fetch it from).
- ``format=json`` answers the session's URLs instead of the stream; no other format exists.
- Accepted and ignored, checked all the same: ``pid`` (player id: Ace Stream lets one player per pid play a live
  stream, we let any number of players share one), ``sid`` (session id), ``use_stop_notifications`` (we stop a
  session only when asked, so there is nothing to notify), ``transcode_audio``, ``transcode_mp3``,
  ``transcode_ac3``, ``preferred_audio_language`` (the stream is passed on as the broadcaster sent it, every audio
  track included; the player picks), ``hlc``, ``developer_id``, ``affiliate_id``, ``zone_id``, and
  ``file_indexes``/``_idx`` (a live broadcast has one stream: index 0, any other is a 400).
- Unknown parameters are ignored, as Ace Stream does (players and pages add cache busters such as ``_=<time>``),
  within the query's bounds: ``MAX_QUERY_PARAMS`` parameters, ``MAX_VALUE_LENGTH`` characters each.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from multidict import MultiMapping

from swarmcast.node.joiner import MAX_LOCATION_LENGTH, JoinError, parse_content_id, parse_magnet
from swarmcast.transport import Descriptor, TransportError

MAX_QUERY_PARAMS = 32  # parameters in one query string
MAX_VALUE_LENGTH = MAX_LOCATION_LENGTH + 1024  # characters of one (decoded) parameter; a magnet carries trackers
MAX_MAGNET_TRACKERS = 8  # tr= in one magnet link
MAX_TOKEN_LENGTH = 128  # characters of a pid or sid
MAX_ID_NUMBER = 2**31 - 1  # developer_id, affiliate_id, zone_id
MAX_FILE_INDEXES = 64  # entries in file_indexes
ID_KEYS = ("id", "content_id", "infohash")
SELECTORS = (*ID_KEYS, "url", "magnet", "data", "direct_url")

_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space: what players send as pid/sid (uuids, hex, words)
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})?")  # ISO 639 code, optionally with a region
_INDEXES = re.compile(r"\d{1,6}(?:,\d{1,6})*")


def content_id(text: str) -> bytes:
    try:
        return parse_content_id(text)
    except ValueError as error:
        raise JoinError(str(error) if isinstance(error, JoinError) else f"bad content id: {error}") from None


def magnet(text: str) -> tuple[bytes, tuple[str, ...]]:
    try:
        cid, trackers = parse_magnet(text)
    except ValueError as error:  # JoinError, or urlsplit's own on a malformed link
        raise JoinError(f"bad magnet link: {error}" if type(error) is ValueError else str(error)) from None
    if len(trackers) > MAX_MAGNET_TRACKERS:
        raise JoinError(f"the magnet link has {len(trackers)} trackers (tr=), more than {MAX_MAGNET_TRACKERS}")
    return cid, trackers


def transport_data(text: str) -> Descriptor:
    """``data=``: a transport file, base64 (standard or URL-safe alphabet, padding optional)."""
    cleaned = text.strip().replace("-", "+").replace("_", "/").replace(" ", "+")  # a '+' left unescaped is a space
    try:
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise JoinError("data: not base64 (give the transport file's bytes, base64-encoded)") from None
    try:
        return Descriptor.decode(raw)
    except TransportError as error:
        raise JoinError(f"data: not a transport file: {error}") from None


def _flag(value: str) -> str | None:
    return None if value in ("0", "1") else "expected 0 or 1"


def _token(value: str) -> str | None:
    if len(value) > MAX_TOKEN_LENGTH or not _TOKEN.fullmatch(value):
        return f"expected 1..{MAX_TOKEN_LENGTH} printable characters without spaces"
    return None


def _language(value: str) -> str | None:
    return None if _LANGUAGE.fullmatch(value) else "expected a language code such as eng, en or pt-BR"


def _number(value: str) -> str | None:
    if not value.isascii() or not value.isdigit() or int(value) > MAX_ID_NUMBER:
        return f"expected a whole number 0..{MAX_ID_NUMBER}"
    return None


def _indexes(value: str) -> str | None:
    if not _INDEXES.fullmatch(value) or value.count(",") >= MAX_FILE_INDEXES:
        return f"expected file indexes as comma-separated numbers (at most {MAX_FILE_INDEXES})"
    if any(int(index) != 0 for index in value.split(",")):
        return "a live broadcast has one stream, index 0"
    return None


def _format(value: str) -> str | None:
    return None if value == "json" else "the only format is json (leave it out for the MPEG-TS stream)"


def _http_url(value: str) -> str | None:
    try:
        parts = urlsplit(value)
    except ValueError:
        return "not a URL"
    return None if parts.scheme in ("http", "https") and parts.hostname else "expected an http(s) URL"


Check = Callable[[str], str | None]  # None: good; else what is wrong with the value

# Parameters checked by value (the selectors are checked by _selector: their check is the parse itself).
PARAMETERS: dict[str, Check] = {
    "format": _format,
    "pid": _token,
    "sid": _token,
    "use_stop_notifications": _flag,
    "transcode_audio": _flag,
    "transcode_mp3": _flag,
    "transcode_ac3": _flag,
    "preferred_audio_language": _language,
    "hlc": _flag,
    "file_indexes": _indexes,
    "_idx": _indexes,
    "developer_id": _number,
    "affiliate_id": _number,
    "zone_id": _number,
}


@dataclass(frozen=True)
class PlaybackRequest:
    """What a playback request asks for, every parameter checked."""

    selector: str  # the parameter that names the broadcast (one of SELECTORS)
    value: str
    as_json: bool


def _check_bounds(query: MultiMapping[str]) -> None:
    if len(query) > MAX_QUERY_PARAMS:
        raise JoinError(f"the query has {len(query)} parameters, more than {MAX_QUERY_PARAMS}")
    for key, value in query.items():
        if len(value) > MAX_VALUE_LENGTH:
            raise JoinError(f"query parameter {key[:40]!r} is {len(value)} characters, more than {MAX_VALUE_LENGTH}")


def _selector(query: MultiMapping[str], names: Callable[[str], bool] | None) -> str:
    """The parameter that names the broadcast, checked where that costs no I/O."""
    for key in SELECTORS:
        if key not in query:
            continue
        value = query[key]
        if key in ID_KEYS:
            if names is None or not names(value):
                content_id(value)
        elif key == "magnet":
            magnet(value)
        elif key == "data":
            transport_data(value)
        elif key == "direct_url":
            problem = _http_url(value) or ("a direct media link cannot be played by a P2P engine; give content_id, "
                                           "infohash, url, magnet or data")  # fmt: skip
            raise JoinError(f"direct_url: {problem}")
        return key
    raise JoinError("give one of content_id (id), infohash, url, magnet or data")


def parse_playback(query: MultiMapping[str], names: Callable[[str], bool] | None = None) -> PlaybackRequest:
    """The request, or JoinError (a 400) naming the first parameter whose value is bad. ``names``: which ``id=``
    values that are not content ids the engine may still resolve (registry names, registry/bootstrap.py)."""
    _check_bounds(query)
    for key, value in query.items():
        check = PARAMETERS.get(key)
        problem = check(value) if check is not None else None
        if problem is not None:
            raise JoinError(f"{key}={value[:60]!r}: {problem}")
    key = _selector(query, names)
    return PlaybackRequest(key, query[key], as_json=query.get("format") == "json")
