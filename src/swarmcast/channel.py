"""The channel file (``<id>.acechannel``): the renditions of one broadcast, each a signed P2P broadcast of its own.

How this works. A broadcaster that transcodes one published stream into a ladder runs one P2P broadcast per
rendition (broadcaster/p2p.py), each with its own key, transport file and content id. The channel file lists
them, in ladder order (the first is the source rendition), with what a player needs to choose between them
(bandwidth, resolution, codecs, frame rate: the attributes of an HLS master playlist's ``#EXT-X-STREAM-INF``)
and each rendition's transport file embedded byte for byte. The engine turns it into one master playlist whose
variants are its own per-rendition playlists.

Trust: the channel file is not signed. It adds nothing an attacker could not already do with a transport file
URL: whoever can hand an engine a channel file could as well hand it a transport file. What a rendition *plays*
is authenticated exactly as before: its embedded transport file is the descriptor whose SHA-1 is the content id
(so a rendition's id cannot be claimed with another key), and every piece is checked against that descriptor's
public key. The rendition's ``url`` (the source node's ``/app/get_transport_file``) is only a hint for where to
find a peer and an internal tracker, as a transport file's own URL is. docs/protocol.md, "Channels", has the
byte layout and the reasons; like the transport file the encoding is canonical (sorted keys, nothing extra), and
the channel id is the SHA-1 of the file.

Every field is bounded and every rejection names the rendition and key at fault.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from swarmcast import bencoding
from swarmcast.transport import Descriptor, TransportError
from swarmcast.wire.messages import MAX_METADATA_SIZE

CHANNEL_VERSION = 1
# Bytes of a channel file: fetched like a transport file, under the same cap; real ones are a few hundred bytes
# per rendition (the transport files embedded are most of it).
MAX_CHANNEL_SIZE = MAX_METADATA_SIZE
MAX_RENDITIONS = 16  # renditions of one channel (Livepeer's ladder has 14 profiles plus the source)
MAX_TITLE_BYTES = 512
MAX_URL_LENGTH = 2048  # the same bound as a transport file's location (node/joiner.py)
MAX_BANDWIDTH = 10**10  # bits per second (10 Gbit/s)
MAX_DIMENSION = 16_384  # pixels of width or height
MAX_FRAME_RATE = 1000
MAX_CODECS_LENGTH = 256
CHANNEL_CONTENT_TYPE = "application/x-swarmcast-channel"

# Stream and rendition names become file names (<id>-<rendition>.acelive) and HLS attribute values: a short
# portable set, never starting with a dot.
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
# RFC 6381 codec strings ("avc1.64001f,mp4a.40.2"): letters, digits, dots, plus and minus, comma-separated.
_CODECS = re.compile(r"[A-Za-z0-9.+-]+(,[A-Za-z0-9.+-]+)*")
# A frame rate in canonical decimal: no leading zeros, 1..3 decimals, no trailing zero ("30", "29.97").
_FRAME_RATE = re.compile(r"[1-9][0-9]{0,3}(\.[0-9]{0,2}[1-9])?")

_TOP_KEYS = frozenset({b"name", b"renditions", b"swarmcast_channel", b"title"})
_RENDITION_KEYS = frozenset(
    {b"bandwidth", b"codecs", b"frame_rate", b"height", b"name", b"transport", b"url", b"width"}
)


class ChannelError(ValueError):
    """A channel file that cannot be used; the message names the rendition and key at fault."""


def check_name(text: str, what: str) -> str:
    """``text`` if it is a usable stream or rendition name; ValueError naming ``what`` otherwise."""
    if not _NAME.fullmatch(text):
        raise ValueError(f"{what} {text[:80]!r} is not 1..64 of A-Z a-z 0-9 _ - . (not starting with '.')")
    return text


def format_frame_rate(value: float) -> str:
    """The canonical text of a frame rate (three decimals at most, no trailing zeros): ``29.97``, ``30``."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    if not _FRAME_RATE.fullmatch(text) or not 1 <= float(text) <= MAX_FRAME_RATE:
        raise ValueError(f"frame rate {value!r} is not in 1..{MAX_FRAME_RATE}")
    return text


def check_url(text: str) -> str:
    if len(text) > MAX_URL_LENGTH:
        raise ValueError(f"is {len(text)} characters, more than {MAX_URL_LENGTH}")
    if any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError("holds a space or a control character")
    try:
        parts = urlsplit(text)
        _ = parts.port
    except ValueError as error:
        raise ValueError(f"is not a URL ({error})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text[:80]!r} is not an http(s) URL with a host")
    return text


@dataclass(frozen=True)
class Rendition:
    name: str  # "source" or a ladder profile's name
    bandwidth: int  # bits per second, the HLS BANDWIDTH
    transport: bytes  # the rendition's transport file, exactly as its source node published it
    width: int | None = None  # both or neither (an audio-only rendition has none)
    height: int | None = None
    codecs: str | None = None  # RFC 6381
    frame_rate: float | None = None
    url: str | None = None  # where the source node serves the transport file: a peer and an internal tracker

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor.decode(self.transport)

    @property
    def content_id(self) -> bytes:
        return hashlib.sha1(self.transport, usedforsecurity=False).digest()

    @property
    def resolution(self) -> tuple[int, int] | None:
        return (self.width, self.height) if self.width is not None and self.height is not None else None

    def _fields(self) -> dict[bytes, object]:
        fields: dict[bytes, object] = {
            b"name": self.name.encode(), b"bandwidth": self.bandwidth, b"transport": self.transport,
        }  # fmt: skip
        if self.width is not None and self.height is not None:
            fields[b"width"], fields[b"height"] = self.width, self.height
        if self.codecs is not None:
            fields[b"codecs"] = self.codecs.encode()
        if self.frame_rate is not None:
            fields[b"frame_rate"] = format_frame_rate(self.frame_rate).encode()
        if self.url is not None:
            fields[b"url"] = self.url.encode()
        return fields


@dataclass(frozen=True)
class Channel:
    name: str  # the published stream's id
    title: str
    renditions: tuple[Rendition, ...]  # the first is what /ace/getstream plays (the source rendition)

    def encode(self) -> bytes:
        return bencoding.encode({
            b"swarmcast_channel": CHANNEL_VERSION,
            b"name": self.name.encode(),
            b"title": self.title.encode(),
            b"renditions": [r._fields() for r in self.renditions],
        })  # fmt: skip

    @property
    def channel_id(self) -> bytes:
        return hashlib.sha1(self.encode(), usedforsecurity=False).digest()

    def rendition(self, name: str) -> Rendition | None:
        return next((r for r in self.renditions if r.name == name), None)

    @classmethod
    def decode(cls, data: bytes) -> Channel:
        if len(data) > MAX_CHANNEL_SIZE:
            raise ChannelError(f"channel file is {len(data)} bytes, more than {MAX_CHANNEL_SIZE}")
        try:
            fields = bencoding.decode(data, max_size=MAX_CHANNEL_SIZE)
        except bencoding.BencodeError as error:
            raise ChannelError(f"channel file: {error}") from None
        if not isinstance(fields, dict):
            raise ChannelError("channel file is not a bencoded dictionary")
        _no_unknown_keys(fields, _TOP_KEYS, "channel file")
        version = _int(fields, "swarmcast_channel", "channel file")
        if version != CHANNEL_VERSION:
            raise ChannelError(f"channel file format 'swarmcast_channel' = {version}, this engine reads "
                               f"{CHANNEL_VERSION}")  # fmt: skip
        name = _text(fields, "name", "channel file")
        try:
            check_name(name, "name")
        except ValueError as error:
            raise ChannelError(f"channel file key {error}") from None
        title = _text(fields, "title", "channel file")
        if len(title.encode()) > MAX_TITLE_BYTES:
            raise ChannelError(f"channel file key 'title' is more than {MAX_TITLE_BYTES} bytes")
        items = _get(fields, "renditions", "channel file")
        if not isinstance(items, list):
            raise ChannelError("channel file key 'renditions' is not a list")
        if not 1 <= len(items) <= MAX_RENDITIONS:
            raise ChannelError(f"channel file key 'renditions' has {len(items)} entries, not 1..{MAX_RENDITIONS}")
        renditions = tuple(_rendition(i, item) for i, item in enumerate(items))
        names = [r.name for r in renditions]
        if len(set(names)) != len(names):
            raise ChannelError("channel file names a rendition twice")
        ids = [r.content_id for r in renditions]
        if len(set(ids)) != len(ids):
            raise ChannelError("channel file lists one transport file for two renditions")
        channel = cls(name=name, title=title, renditions=renditions)
        if channel.encode() != data:
            # Two encodings of one channel would give two channel ids (and hide fields from a reader).
            raise ChannelError("channel file is not in canonical form")
        return channel


def _rendition(index: int, item: object) -> Rendition:
    where = f"channel file rendition {index}"
    if not isinstance(item, dict):
        raise ChannelError(f"{where} is not a dictionary")
    name = _text(item, "name", where)
    try:
        check_name(name, "name")
    except ValueError as error:
        raise ChannelError(f"{where} key {error}") from None
    where = f"channel file rendition {name!r}"
    _no_unknown_keys(item, _RENDITION_KEYS, where)
    bandwidth = _int(item, "bandwidth", where)
    if not 1 <= bandwidth <= MAX_BANDWIDTH:
        raise ChannelError(f"{where} key 'bandwidth' = {bandwidth} is not in 1..{MAX_BANDWIDTH}")
    transport = _get(item, "transport", where)
    if not isinstance(transport, bytes):
        raise ChannelError(f"{where} key 'transport' is not a byte string")
    try:
        Descriptor.decode(transport)
    except TransportError as error:
        raise ChannelError(f"{where} key 'transport': {error}") from None
    width = height = None
    if (b"width" in item) != (b"height" in item):
        raise ChannelError(f"{where} has one of 'width' and 'height' without the other")
    if b"width" in item:
        width, height = _int(item, "width", where), _int(item, "height", where)
        for key, value in (("width", width), ("height", height)):
            if not 1 <= value <= MAX_DIMENSION:
                raise ChannelError(f"{where} key {key!r} = {value} is not in 1..{MAX_DIMENSION}")
    codecs = None
    if b"codecs" in item:
        codecs = _text(item, "codecs", where)
        if len(codecs) > MAX_CODECS_LENGTH or not _CODECS.fullmatch(codecs):
            raise ChannelError(f"{where} key 'codecs' = {codecs[:80]!r} is not a list of RFC 6381 codecs")
    frame_rate = None
    if b"frame_rate" in item:
        text = _text(item, "frame_rate", where)
        if not _FRAME_RATE.fullmatch(text) or not 1 <= float(text) <= MAX_FRAME_RATE:
            raise ChannelError(f"{where} key 'frame_rate' = {text[:20]!r} is not a canonical decimal in "
                               f"1..{MAX_FRAME_RATE}")  # fmt: skip
        frame_rate = float(text)
    url = None
    if b"url" in item:
        url = _text(item, "url", where)
        try:
            check_url(url)
        except ValueError as error:
            raise ChannelError(f"{where} key 'url' {error}") from None
    return Rendition(name=name, bandwidth=bandwidth, transport=transport, width=width, height=height,
                     codecs=codecs, frame_rate=frame_rate, url=url)  # fmt: skip


def _no_unknown_keys(fields: dict[bytes, object], known: frozenset[bytes], where: str) -> None:
    unknown = sorted(k.decode(errors="replace") for k in fields if k not in known)
    if unknown:
        raise ChannelError(f"{where} has unknown key(s): {', '.join(repr(k[:40]) for k in unknown[:8])}")


def _get(fields: dict[bytes, object], key: str, where: str) -> object:
    if key.encode() not in fields:
        raise ChannelError(f"{where} lacks key {key!r}")
    return fields[key.encode()]


def _int(fields: dict[bytes, object], key: str, where: str) -> int:
    value = _get(fields, key, where)
    if not isinstance(value, int) or value < 0:
        raise ChannelError(f"{where} key {key!r} = {str(value)[:40]} is not a non-negative integer")
    return value


def _text(fields: dict[bytes, object], key: str, where: str) -> str:
    value = _get(fields, key, where)
    if not isinstance(value, bytes):
        raise ChannelError(f"{where} key {key!r} is not a string")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise ChannelError(f"{where} key {key!r} is not UTF-8") from None
