"""How an engine finds a broadcast by its registry name or content id: the registry, or a static bootstrap file.

How this works. :class:`StreamDirectory` answers ``hint(id_or_name)`` with a :class:`StreamHint`: the broadcast's
descriptor (its transport file) and peer candidates. It asks, in order,

1. the bootstrap file (``--bootstrap FILE``, read once at start; format below), then
2. the registry (``--registry URL``): ``GET /api/streams/<id>``, ``.../transport``, ``.../peers``.

Trust: the registry and the file are hints, like a tracker. The transport file's SHA-1 must be the content id the
registry (or the file) gives, else it is refused; the descriptor's key then verifies every piece as usual. Peers
are only candidates to dial. A registry that is down, hangs or answers garbage costs at most ``LOOKUP_TIMEOUT``
per lookup; a content id then still plays through its trackers, a name gets a clear error. While a broadcast
plays, its peers are asked again every ``REFRESH_SECONDS`` (:func:`refresh_peers`).

Bounded: answers are cached ``CACHE_SECONDS`` (a miss ``MISS_SECONDS``) in ``MAX_CACHED`` entries, at most
``MAX_CONCURRENT_LOOKUPS`` are under way at once (a web page cannot make the engine flood the registry), and each
answer is read up to its size cap.

The bootstrap file (JSON, at most ``MAX_BOOTSTRAP_BYTES``)::

    {"streams": [
      {"name": "news",                         # optional: the name to play it by ([a-z0-9._-]{1,64})
       "content_id": "<40 hex>",               # optional: checked against the transport file
       "transport": "<base64 of the transport file>"  # or "transport_file": "news.acelive" (relative to FILE)
       "peers": ["127.0.0.1:8621", "[::1]:8622"]}    # optional: support / start nodes to dial
    ]}
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import logging
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from swarmcast.channel import Channel, ChannelError
from swarmcast.files import UnreadableFileError, read_regular_file
from swarmcast.http.channel_out import directory as channel_directory
from swarmcast.http.channel_out import master_response
from swarmcast.node.joiner import JoinError, parse_content_id
from swarmcast.registry.client import RegistryEndpoint
from swarmcast.registry.http_client import (
    MAX_RESPONSE_BYTES,
    RegistryError,
    client_session,
    error_text,
    read_bounded,
    request_json,
)
from swarmcast.registry.names import NAME_PATTERN, is_content_id
from swarmcast.swarm.peer import Address
from swarmcast.transport import Descriptor, TransportError
from swarmcast.wire.messages import MAX_METADATA_SIZE

if TYPE_CHECKING:
    from swarmcast.node.engine import Engine, EngineBroadcast

log = logging.getLogger("swarmcast.registry.bootstrap")

LOOKUP_TIMEOUT = 5.0  # one lookup, its three requests together
CONTENT_ID_WAIT = 1.0  # a content id's join waits this long for the registry, then starts with its trackers
CACHE_SECONDS = 10.0  # a found stream is asked again after this (its peers change)
MISS_SECONDS = 3.0  # an id the registry does not know (or could not answer) is not asked again for this long
MAX_CACHED = 256
MAX_CONCURRENT_LOOKUPS = 4
REFRESH_SECONDS = 30.0  # how often a playing broadcast's peers are asked again
MAX_PEERS = 64  # peer candidates taken from one answer (or one bootstrap entry)
MAX_BOOTSTRAP_BYTES = 4 * 1024 * 1024
MAX_BOOTSTRAP_STREAMS = 1024
MAX_HOST_LENGTH = 253


class BootstrapError(ValueError):
    """The bootstrap file cannot be used; the message names the entry and what is wrong (one line)."""


@dataclass(frozen=True)
class StreamHint:
    """What the engine joins a broadcast with: its descriptor and the peers to dial (support, start nodes)."""

    descriptor: Descriptor  # of a channel: its first rendition's (what getstream plays)
    peers: tuple[Address, ...] = ()
    startup_nodes: tuple[Address, ...] = ()
    name: str | None = None
    channel: Channel | None = None  # the registry's "transport" was a channel file (swarmcast/channel.py)

    @property
    def content_id(self) -> bytes:
        return self.descriptor.content_id


def is_name(text: str) -> bool:
    return NAME_PATTERN.fullmatch(text) is not None


def is_registry_name(text: str) -> bool:
    """Whether ``id=TEXT`` is a registry name to look up (not a content id, hex or base32)."""
    try:
        parse_content_id(text)
    except JoinError:
        return is_name(text)
    return False


def parse_peer(text: object) -> Address:
    """``host:port`` / ``[v6]:port`` with port 1..65535; ValueError naming the text otherwise."""
    if not isinstance(text, str) or len(text) > MAX_HOST_LENGTH + 8:
        raise ValueError(f"{str(text)[:80]!r} is not HOST:PORT")
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # ValueError
    elif ":" in host:
        raise ValueError(f"{text[:80]!r}: an IPv6 address goes in brackets, [v6]:PORT")
    if not sep or not host or not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text[:80]!r} is not HOST:PORT")
    if not all(c.isalnum() or c in ".-_:" for c in host):
        raise ValueError(f"{text[:80]!r}: {host[:80]!r} is not a host name or address")
    return host, int(port_text)


def decode_transport(data: bytes, content_id: str | None, where: str) -> Descriptor:
    try:
        descriptor = Descriptor.decode(data)
    except TransportError as error:
        raise ValueError(f"{where}: {error}") from None
    if content_id is not None and descriptor.infohash != content_id.lower():
        raise ValueError(f"{where}: the transport file's content id is {descriptor.infohash}, not {content_id}")
    return descriptor


CHANNEL_START = b"d4:name"  # a channel file's first key (canonical bencoding); a transport file's is 'bitrate'


def decode_channel(data: bytes, content_id: str) -> Channel:
    """A channel file whose SHA-1 is ``content_id`` (a channel's id); ValueError otherwise."""
    try:
        channel = Channel.decode(data)
    except ChannelError as error:
        raise ValueError(f"the registry's channel file: {error}") from None
    if channel.channel_id.hex() != content_id.lower():
        raise ValueError(f"the registry's channel file's id is {channel.channel_id.hex()}, not {content_id}")
    return channel


# -- the bootstrap file -----------------------------------------------------------------------------------------


def load_bootstrap(path: Path) -> list[StreamHint]:
    """The streams of a bootstrap file; BootstrapError (one line, naming the entry) for anything wrong with it."""
    try:
        raw = read_regular_file(path, MAX_BOOTSTRAP_BYTES)
    except UnreadableFileError as error:
        raise BootstrapError(f"cannot read {path}: {error}") from None
    if len(raw) > MAX_BOOTSTRAP_BYTES:
        raise BootstrapError(f"{path} is more than {MAX_BOOTSTRAP_BYTES} bytes")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise BootstrapError(f"{path} is not JSON: {error}"[:300]) from None
    entries = document.get("streams") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise BootstrapError(f'{path}: expected {{"streams": [...]}}')
    if len(entries) > MAX_BOOTSTRAP_STREAMS:
        raise BootstrapError(f"{path}: {len(entries)} streams, more than {MAX_BOOTSTRAP_STREAMS}")
    hints: list[StreamHint] = []
    names: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"streams[{i}]"
        try:
            hint = _bootstrap_entry(entry, path.parent, where)
        except ValueError as error:
            raise BootstrapError(f"{path}: {error}") from None
        if hint.name is not None:
            if hint.name in names:
                raise BootstrapError(f"{path}: {where}.name {hint.name!r} is given twice")
            names.add(hint.name)
        hints.append(hint)
    return hints


def _bootstrap_entry(entry: object, base: Path, where: str) -> StreamHint:
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not an object")  # noqa: TRY004 - a bad file, as every other error here
    unknown = sorted(set(entry) - {"name", "content_id", "transport", "transport_file", "peers"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")
    name = entry.get("name")
    if name is not None and (not isinstance(name, str) or not is_name(name)):
        raise ValueError(f"{where}.name {str(name)[:80]!r} is not [a-z0-9._-]{{1,64}}")
    content_id = entry.get("content_id")
    if content_id is not None and (not isinstance(content_id, str) or not is_content_id(content_id)):
        raise ValueError(f"{where}.content_id {str(content_id)[:80]!r} is not 40 hex digits")
    peers = entry.get("peers", [])
    if not isinstance(peers, list) or len(peers) > MAX_PEERS:
        raise ValueError(f"{where}.peers is not a list of at most {MAX_PEERS} HOST:PORT")
    addresses: list[Address] = []
    for j, peer in enumerate(peers):
        try:
            addresses.append(parse_peer(peer))
        except ValueError as error:
            raise ValueError(f"{where}.peers[{j}]: {error}") from None
    if ("transport" in entry) == ("transport_file" in entry):
        raise ValueError(f"{where}: give one of transport (base64) or transport_file (a path)")
    if "transport" in entry:
        text = entry["transport"]
        try:
            data = base64.b64decode(text if isinstance(text, str) else b"-", validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{where}.transport is not base64") from None
    else:
        file_name = entry["transport_file"]
        if not isinstance(file_name, str) or not file_name:
            raise ValueError(f"{where}.transport_file is not a path")
        try:
            data = read_regular_file(base / file_name, MAX_METADATA_SIZE)
        except UnreadableFileError as error:
            raise ValueError(f"{where}.transport_file {file_name!r}: {error}") from None
    descriptor = decode_transport(data, content_id, f"{where}.transport")
    return StreamHint(descriptor, tuple(dict.fromkeys(addresses)), name=name)


# -- the registry ---------------------------------------------------------------------------------------------------


def _peers_of(answer: object) -> tuple[tuple[Address, ...], tuple[Address, ...]]:
    """(support and source nodes, start nodes) of a /peers answer; entries that are not peers are skipped."""
    items = answer.get("peers") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        raise RegistryError("peers answer has no list 'peers'")
    peers: dict[Address, None] = {}
    startup: dict[Address, None] = {}
    for item in items[: MAX_PEERS * 4]:
        if not isinstance(item, dict):
            continue
        try:
            address = parse_peer(item.get("address"))
        except ValueError:
            continue
        target = startup if item.get("role") == "start" else peers
        if len(target) < MAX_PEERS:
            target[address] = None
    return tuple(peers), tuple(startup)


async def registry_hint(endpoint: RegistryEndpoint, key: str) -> StreamHint | None:
    """The registry's answer for a name or content id; None when it does not know it. RegistryError when it cannot
    say (down, slow, garbage, a transport file that is not the stream's)."""
    async with client_session(LOOKUP_TIMEOUT) as session:
        status, answer = await request_json(session, "GET", endpoint.api("streams", key), headers={})
        if status == 404:
            return None
        if status != 200 or not isinstance(answer, dict):
            raise RegistryError(f"stream {key[:80]!r}: {error_text(answer, status)}")
        content_id = answer.get("content_id")
        if not isinstance(content_id, str) or not is_content_id(content_id):
            raise RegistryError(f"stream {key[:80]!r}: the answer has no content id")
        if is_content_id(key) and content_id.lower() != key.lower():
            raise RegistryError(f"asked for {key}, the registry answered stream {content_id}")
        name = answer.get("name") if isinstance(answer.get("name"), str) else None
        try:
            async with session.get(endpoint.api("streams", content_id, "transport"), allow_redirects=False) as got:
                if got.status != 200:
                    raise RegistryError(f"transport file of {content_id}: HTTP {got.status}")
                data = await read_bounded(got, MAX_METADATA_SIZE)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
            raise RegistryError(f"transport file of {content_id}: {type(error).__name__} {error}"[:300]) from None
        channel: Channel | None = None
        peers_of = content_id
        try:
            if data.startswith(CHANNEL_START):  # a broadcaster's channel: its renditions' transport files
                channel = decode_channel(data, content_id)
                descriptor = channel.renditions[0].descriptor
                peers_of = descriptor.infohash  # the rendition's nodes (the broadcaster itself has no address)
            else:
                descriptor = decode_transport(data, content_id, "the registry's transport file")
        except ValueError as error:
            raise RegistryError(str(error)) from None
        peers: tuple[Address, ...] = ()
        startup: tuple[Address, ...] = ()
        try:
            status, answer = await request_json(session, "GET", endpoint.api("streams", peers_of, "peers"),
                                                headers={}, limit=MAX_RESPONSE_BYTES)  # fmt: skip
            if status == 200:
                peers, startup = _peers_of(answer)
        except RegistryError as error:  # the descriptor alone plays through trackers and PEX
            log.info("registry %s: no peers for %s: %s", endpoint.url, content_id, error)
    return StreamHint(descriptor, peers, startup, name=name if name and is_name(name) else None, channel=channel)


class StreamDirectory:
    """The engine's bootstrap file and registry, asked in that order, with a bounded cache."""

    def __init__(self, endpoint: RegistryEndpoint | None = None, bootstrap: list[StreamHint] | None = None) -> None:
        self.endpoint = endpoint
        self._static: dict[str, StreamHint] = {}
        for hint in bootstrap or []:
            self._static[hint.descriptor.infohash] = hint
            if hint.name is not None:
                self._static[hint.name] = hint
        self._cache: OrderedDict[str, tuple[float, StreamHint | None]] = OrderedDict()
        self._lookups = asyncio.Semaphore(MAX_CONCURRENT_LOOKUPS)
        # Lookups that answer after their join started (join_content_id): each ends within LOOKUP_TIMEOUT (its
        # own bound in hint()), at most MAX_CONCURRENT_LOOKUPS of them; kept here so none is left unowned.
        self._late: set[asyncio.Task[StreamHint | None]] = set()
        self.lookups = 0  # registry lookups made (for tests and the log)
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None or bool(self._static)

    @property
    def has_static(self) -> bool:
        return bool(self._static)

    async def hint(self, key: str) -> StreamHint | None:
        """What is known of ``key`` (a name or a 40-hex content id); None when nobody knows it or the registry
        cannot answer (logged)."""
        key = key.lower() if is_content_id(key) else key
        static = self._static.get(key)
        if static is not None or self.endpoint is None:
            return static
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now < cached[0]:
            self._cache.move_to_end(key)
            return cached[1]
        if self._lookups.locked():
            # Lookups are under way to their limit: a client asking more waits for none of them (bounded work).
            log.info("registry lookups busy: %s not looked up", key[:80])
            return cached[1] if cached is not None else None
        async with self._lookups:
            self.lookups += 1
            try:
                async with asyncio.timeout(LOOKUP_TIMEOUT):
                    found = await registry_hint(self.endpoint, key)
            except (RegistryError, TimeoutError) as error:
                self.failures += 1
                log.warning("registry %s cannot resolve %r: %s", self.endpoint.url, key[:80],
                            error or f"no answer within {LOOKUP_TIMEOUT:g} s")
                found = cached[1] if cached is not None else None  # an older answer beats none
                self._remember(key, found, time.monotonic() + MISS_SECONDS)
                return found
        self._remember(key, found, time.monotonic() + (CACHE_SECONDS if found is not None else MISS_SECONDS))
        if found is not None:  # the same answer serves the content id (a name's lookup plays by content id next)
            self._remember(found.descriptor.infohash, found, time.monotonic() + CACHE_SECONDS)
        return found

    def answered(self, key: str) -> bool:
        """Whether ``hint(key)`` answers without asking the registry (the bootstrap file, or a fresh cache entry)."""
        cached = self._cache.get(key)
        return self.endpoint is None or key in self._static or (cached is not None and time.monotonic() < cached[0])

    def follow(self, task: asyncio.Task[StreamHint | None], engine: Engine, broadcast: EngineBroadcast) -> None:
        """When the lookup ``task`` answers, hand its peers to ``broadcast`` (if the engine still plays it)."""
        self._late.add(task)

        def done(task: asyncio.Task[StreamHint | None]) -> None:
            self._late.discard(task)
            hint = None if task.cancelled() or task.exception() is not None else task.result()
            cid = broadcast.swarm.content_id
            if hint is not None and hint.channel is None and engine.broadcasts.get(cid) is broadcast:
                add_peers(engine, broadcast, hint)

        task.add_done_callback(done)

    async def close(self) -> None:
        """Cancel the lookups still under way (the engine is stopping)."""
        for task in list(self._late):
            task.cancel()
        await asyncio.gather(*self._late, return_exceptions=True)

    def _remember(self, key: str, hint: StreamHint | None, until: float) -> None:
        self._cache.pop(key, None)
        self._cache[key] = (until, hint)
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)


_DIRECTORIES: weakref.WeakKeyDictionary[Engine, StreamDirectory] = weakref.WeakKeyDictionary()


def attach(engine: Engine, directory: StreamDirectory) -> None:
    """Give ``engine`` its directory (kept beside the engine, whose module knows nothing of the registry)."""
    if directory.enabled:
        _DIRECTORIES[engine] = directory


def directory_of(engine: Engine) -> StreamDirectory | None:
    return _DIRECTORIES.get(engine)


async def join_hint(engine: Engine, hint: StreamHint) -> EngineBroadcast:
    """Join (or find) the broadcast ``hint`` describes and hand its peers to the swarm as candidates. A channel
    is remembered as a channel file read by url= is (http/channel_out.py) and its first rendition joined."""
    if hint.channel is not None:
        first = channel_directory(engine).add(hint.channel)
        broadcast = await engine.join(first.descriptor.content_id, descriptor=first.descriptor,
                                      trackers=first.trackers, node=first.node)  # fmt: skip
    else:
        broadcast = await engine.join(hint.content_id, descriptor=hint.descriptor)
    add_peers(engine, broadcast, hint)
    return broadcast


async def named_master(engine: Engine, key: str) -> web.Response | None:
    """``/ace/manifest.m3u8?id=NAME`` of a channel: its master playlist; None for a single broadcast."""
    hint = await lookup(engine, key)
    if hint is None or hint.channel is None:
        return None
    channel_directory(engine).add(hint.channel)
    return master_response(hint.channel)


def add_peers(engine: Engine, broadcast: EngineBroadcast, hint: StreamHint) -> None:
    if hint.startup_nodes:
        broadcast.membership.add_startup_nodes(hint.startup_nodes)
    if hint.peers:
        broadcast.swarm.add_candidates(hint.peers)
        engine.host.dial_now(broadcast.swarm)


async def refresh_peers(engine: Engine, interval: float = REFRESH_SECONDS) -> None:
    """Every ``interval``, the registry's live peers of each broadcast the engine plays, as new candidates: support
    and start nodes that came after the join are found without a tracker. Runs until cancelled (its owner is the
    engine command); a registry that is down only makes the lookups fail, the swarm keeps its trackers and PEX."""
    while True:
        await asyncio.sleep(interval)
        directory = directory_of(engine)
        if directory is None or directory.endpoint is None:
            continue
        for cid, broadcast in list(engine.broadcasts.items()):
            hint = await directory.hint(cid.hex())
            if hint is not None and engine.broadcasts.get(cid) is broadcast:
                add_peers(engine, broadcast, hint)


async def join_content_id(engine: Engine, cid: bytes) -> EngineBroadcast | None:
    """For ``id=<content id>``: the broadcast joined with what the directory knows of it, without waiting long for
    a registry that is slow or hangs. The registry is asked first, but after ``CONTENT_ID_WAIT`` an engine with
    trackers joins through them at once and the registry's peers are added when its answer comes
    (StreamDirectory.follow). Without trackers the answer is needed (a content id alone cannot be joined), as it is
    for a name (:func:`lookup`). None: nobody knows it, join as before."""
    directory = directory_of(engine)
    if directory is None:
        return None
    joined = engine.broadcasts.get(cid)
    if joined is not None and joined.swarm.descriptor is not None:
        return None  # playing already: no lookup per player
    key = cid.hex()
    if directory.answered(key) or not engine.config.trackers:
        hint = await directory.hint(key)
        return None if hint is None else await join_hint(engine, hint)
    task = asyncio.ensure_future(directory.hint(key))
    try:
        await asyncio.wait({task}, timeout=CONTENT_ID_WAIT)
    except BaseException:  # the request was cancelled (the player left): its lookup goes too
        task.cancel()
        raise
    if task.done():
        hint = task.result()
        return None if hint is None else await join_hint(engine, hint)
    log.info("registry slow for %s: joining through the trackers, its peers added when it answers", key)
    try:
        broadcast = await engine.join(cid)
    except BaseException:
        task.cancel()
        raise
    directory.follow(task, engine, broadcast)
    return broadcast


async def lookup(engine: Engine, key: str) -> StreamHint | None:
    """For ``id=KEY``: the directory's hint, or None to join as before (no directory; a content id the engine
    plays already, or that nobody knows: its trackers may). JoinError for a name nobody knows."""
    directory = directory_of(engine)
    if directory is None:
        return None
    try:
        cid: bytes | None = parse_content_id(key)
    except JoinError:
        cid = None
    if cid is not None:
        joined = engine.broadcasts.get(cid)
        if joined is not None and joined.swarm.descriptor is not None:
            return None  # playing already: no lookup per player
        return await directory.hint(cid.hex())
    hint = await directory.hint(key)
    if hint is None:
        where = " or ".join(w for w, on in (("the bootstrap file", directory.has_static),
                                            ("the registry", directory.endpoint is not None)) if on)
        raise JoinError(f"no stream named {key[:80]!r} in {where} (or it could not be asked: see the engine's log)")
    return hint
