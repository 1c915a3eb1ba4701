"""Channels in the engine: ``/ace/manifest.m3u8`` of a channel file is a master playlist of its renditions.

How this works. A ``url=`` (of getstream or the manifest) may name a channel file (swarmcast/channel.py) instead
of a transport file; :func:`resolve` loads the location once and tells which. A channel is remembered in the
engine's :class:`ChannelDirectory` (by channel id, and each rendition by content id with the node and internal
tracker its ``url`` names), so that

- ``/ace/manifest.m3u8?url=<channel>`` (or ``id=<channel id>`` once the engine knows the channel) answers a master
  playlist whose variants are the engine's own media playlists, ``manifest.m3u8?infohash=<rendition>``
  (hls_out.rendition_uri), in the channel's order, with its BANDWIDTH, RESOLUTION, CODECS and FRAME-RATE;
- that variant's request, an ``infohash=`` alone, joins the rendition with its descriptor and hints
  (:func:`join_hints`) instead of a content id nobody can look up without a tracker;
- ``/ace/getstream`` of a channel plays its first rendition (the source rendition).

Trust is the channel file's own (docs/protocol.md, Channels): each rendition's descriptor is the embedded
transport file, whose SHA-1 is the content id the engine joins and whose key verifies every piece; the node and
tracker a rendition names are hints like those of a transport file's URL. Bounded: ``MAX_CHANNELS`` channels and
``MAX_KNOWN_RENDITIONS`` renditions remembered (least recently used forgotten first); a location resolved in the
last ``RECENT_SECONDS`` is not fetched again (a master playlist request is followed by the variants' at once).
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from swarmcast.channel import Channel, ChannelError
from swarmcast.http import hls_out
from swarmcast.http.engine_params import ID_KEYS, PlaybackRequest, content_id
from swarmcast.http.hls_out import rendition_uri
from swarmcast.media.hls_playlist import Variant
from swarmcast.node.engine import Engine
from swarmcast.node.joiner import JoinError, LocalFiles, TransportSource, internal_tracker_url, load_location
from swarmcast.swarm.peer import Address
from swarmcast.transport import Descriptor, TransportError

MAX_CHANNELS = 64
MAX_KNOWN_RENDITIONS = 256
MAX_RECENT = 32
RECENT_SECONDS = 5.0


@dataclass(frozen=True)
class Resolved:
    transport: TransportSource  # what getstream plays: the transport file, or a channel's first rendition
    channel: Channel | None


def _lru_put(table: OrderedDict[bytes, object], key: bytes, value: object, limit: int) -> None:
    table.pop(key, None)
    table[key] = value
    while len(table) > limit:
        table.popitem(last=False)


class ChannelDirectory:
    """The channels this engine has read, and their renditions by content id (bounded, least recently used out)."""

    def __init__(self) -> None:
        self._channels: OrderedDict[bytes, object] = OrderedDict()
        self._renditions: OrderedDict[bytes, object] = OrderedDict()
        self._recent: OrderedDict[str, tuple[float, Resolved]] = OrderedDict()

    def add(self, channel: Channel) -> TransportSource:
        """Remember ``channel``; its first rendition as a transport source."""
        _lru_put(self._channels, channel.channel_id, channel, MAX_CHANNELS)
        first: TransportSource | None = None
        for rendition in reversed(channel.renditions):  # the first ends up most recently used
            node: Address | None = None
            trackers: tuple[str, ...] = ()
            if rendition.url is not None:
                parts = urlsplit(rendition.url)
                if parts.hostname and parts.port:
                    node, trackers = (parts.hostname, parts.port), (internal_tracker_url(rendition.url),)
            source = TransportSource(rendition.descriptor, node, trackers)
            _lru_put(self._renditions, rendition.content_id, source, MAX_KNOWN_RENDITIONS)
            first = source
        assert first is not None  # a channel has at least one rendition
        return first

    def channel(self, channel_id: bytes) -> Channel | None:
        found = self._channels.get(channel_id)
        if isinstance(found, Channel):
            self._channels.move_to_end(channel_id)
            return found
        return None

    def rendition(self, cid: bytes) -> TransportSource | None:
        found = self._renditions.get(cid)
        if isinstance(found, TransportSource):
            self._renditions.move_to_end(cid)
            return found
        return None

    def recent(self, location: str, now: float) -> Resolved | None:
        entry = self._recent.get(location)
        if entry is None or now - entry[0] > RECENT_SECONDS:
            return None
        return entry[1]

    def remember(self, location: str, resolved: Resolved, now: float) -> None:
        self._recent.pop(location, None)
        self._recent[location] = (now, resolved)
        while len(self._recent) > MAX_RECENT:
            self._recent.popitem(last=False)


_DIRECTORIES: weakref.WeakKeyDictionary[Engine, ChannelDirectory] = weakref.WeakKeyDictionary()


def directory(engine: Engine) -> ChannelDirectory:
    """The engine's channel directory (kept beside the engine, whose module knows nothing of channels)."""
    found = _DIRECTORIES.get(engine)
    if found is None:
        found = _DIRECTORIES[engine] = ChannelDirectory()
    return found


def decode_location(data: bytes) -> Channel | Descriptor:
    """A channel file or a transport file; JoinError naming what is wrong with it."""
    # Both are canonical bencoded dictionaries (sorted keys): a transport file's first key is 'bitrate', a
    # channel file's is 'name'.
    if data.startswith(b"d4:name"):
        try:
            return Channel.decode(data)
        except ChannelError as error:
            raise JoinError(str(error)) from None
    try:
        return Descriptor.decode(data)
    except TransportError as error:
        raise JoinError(str(error)) from None


async def resolve(engine: Engine, location: str, local: LocalFiles) -> Resolved:
    """What ``url=`` names: a transport file, or a channel (remembered, its first rendition to play)."""
    channels = directory(engine)
    now = time.monotonic()
    recent = channels.recent(location, now)
    if recent is not None:
        return recent
    data, node, trackers = await load_location(location, local)
    found = decode_location(data)
    if isinstance(found, Channel):
        resolved = Resolved(channels.add(found), found)
    else:
        resolved = Resolved(TransportSource(found, node, trackers), None)
    channels.remember(location, resolved, now)
    return resolved


def join_hints(engine: Engine, cid: bytes) -> TransportSource | None:
    """For an ``id=``/``infohash=`` the engine learned from a channel: the rendition (or, for a channel id, the
    channel's first rendition) with its descriptor and hints."""
    channels = directory(engine)
    channel = channels.channel(cid)
    if channel is not None:
        return channels.rendition(channel.renditions[0].content_id) or channels.add(channel)
    return channels.rendition(cid)


def master_response(channel: Channel) -> web.Response:
    variants = [
        Variant(uri=rendition_uri(r.content_id.hex()), bandwidth=r.bandwidth, resolution=r.resolution,
                codecs=r.codecs, frame_rate=r.frame_rate, name=r.name)
        for r in channel.renditions
    ]
    return hls_out.master_response(variants)


async def channel_master(engine: Engine, asked: PlaybackRequest) -> web.Response | None:
    """The master playlist when ``asked`` names a channel (``url=`` of a channel file, or the id of a channel the
    engine has read); None for anything else (the manifest route plays it as one broadcast)."""
    if asked.as_json:
        return None  # the JSON session is the first rendition's; its playback_url is this master playlist
    if asked.selector in ID_KEYS:
        channel = directory(engine).channel(content_id(asked.value))
        return master_response(channel) if channel is not None else None
    if asked.selector != "url":
        return None
    resolved = await resolve(engine, asked.value, engine.local_files)
    return master_response(resolved.channel) if resolved.channel is not None else None
