"""Joining an existing broadcast: find its transport file, its peers and its trackers.

Shared by the support node and the viewer engine. A transport file fetched over HTTP from a node also tells us
that node's address (a peer to dial at once) and its internal tracker (``/announce`` on the same port).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import aiohttp

from swarmcast.discovery.announcer import Announcer
from swarmcast.discovery.metatracker import MetatrackerClient, MetatrackerStatus
from swarmcast.discovery.metatracker_protocol import MetatrackerAnswer, format_node_address
from swarmcast.files import UnreadableFileError, read_regular_file
from swarmcast.node.host import PeerHost
from swarmcast.swarm.core import Swarm
from swarmcast.swarm.peer import Address
from swarmcast.transport import Descriptor, TransportError
from swarmcast.wire.messages import MAX_METADATA_SIZE

FETCH_TIMEOUT = 10.0  # the whole HTTP fetch of a transport file, redirects included
MAX_REDIRECTS = 3
MAX_LOCATION_LENGTH = 2048  # characters of a transport file's URL or path
# A magnet link is a content id and a few trackers; anything much longer is not one.
MAX_MAGNET_CHARS = 8192
MAX_MAGNET_FIELDS = 64
MAX_MAGNET_TRACKERS = 16  # extra ``tr=`` are dropped: each one is a host we would announce to

MAX_REMEMBERED_STARTUP_NODES = 256  # start nodes a membership remembers (for logs and status), oldest forgotten

log = logging.getLogger("swarmcast.join")

_HEX_ID = re.compile(r"[0-9a-fA-F]{40}")
_BASE32_ID = re.compile(r"[A-Za-z2-7]{32}")


class JoinError(ValueError):
    """The broadcast cannot be joined as asked; the message says why."""


@dataclass(frozen=True)
class TransportSource:
    descriptor: Descriptor
    node: Address | None  # the node that served the file, when it came over HTTP
    trackers: tuple[str, ...]  # that node's internal tracker


@dataclass(frozen=True)
class LocalFiles:
    """Which local paths a transport file location may name.

    The support node's ``--url`` is the operator's own: any path (``OPERATOR_FILES``). The engine's ``url=`` comes
    from any local HTTP client, and a web page can make a browser send one: no path unless the operator allowed
    all (``--allow-local-transport-files``) or named a directory (``--transport-files-dir``).
    """

    allow_any: bool = False
    directory: Path | None = None

    @property
    def allowed(self) -> bool:
        return self.allow_any or self.directory is not None


OPERATOR_FILES = LocalFiles(allow_any=True)


async def load_transport(location: str, local: LocalFiles = OPERATOR_FILES) -> TransportSource:
    """A transport file from an http(s) URL or (as ``local`` allows) a local path, checked and decoded.

    Every failure is a JoinError with a message for the client; what a refused path names is never looked at, so
    the message does not tell whether it exists.
    """
    data, node, trackers = await load_location(location, local)
    try:
        descriptor = Descriptor.decode(data)
    except TransportError as error:
        raise JoinError(str(error)) from None
    return TransportSource(descriptor, node, trackers)


async def load_location(location: str, local: LocalFiles = OPERATOR_FILES,
                        ) -> tuple[bytes, Address | None, tuple[str, ...]]:  # fmt: skip
    """The bytes at a transport file's location (at most MAX_METADATA_SIZE), not yet decoded, with the node that
    served them and its internal tracker (http(s) only); a channel file (swarmcast/channel.py) is loaded alike."""
    if len(location) > MAX_LOCATION_LENGTH:
        raise JoinError(f"transport file location is {len(location)} characters, more than {MAX_LOCATION_LENGTH}")
    try:
        parts = urlsplit(location)
        port = parts.port  # raises ValueError when out of range
    except ValueError as error:
        raise JoinError(f"bad transport file URL {location!r}: {error}") from None
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise JoinError(f"transport file URL {location!r} has no host")
        data = await _fetch(location)
        node: Address | None = None
        trackers: tuple[str, ...] = ()
        if port:
            node = (parts.hostname, port)
            trackers = (internal_tracker_url(location),)
    elif parts.scheme == "file" or (not parts.scheme and not parts.netloc):
        if not local.allowed:
            raise JoinError("url= must be an http:// or https:// URL (this engine reads no local transport files: "
                            "see --allow-local-transport-files and --transport-files-dir)")  # fmt: skip
        if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
            raise JoinError(f"file URL {location!r} names another host")
        data = await asyncio.to_thread(_read_local, unquote(parts.path) if parts.scheme else location, local)
        node, trackers = None, ()
    else:
        raise JoinError(f"transport file URL {location!r}: scheme must be http or https")
    return data, node, trackers


async def _fetch(url: str) -> bytes:
    try:
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, max_redirects=MAX_REDIRECTS) as response,
        ):
            if response.status != 200:
                raise JoinError(f"transport file {url} answered HTTP {response.status}")
            if (response.content_length or 0) > MAX_METADATA_SIZE:
                raise JoinError(f"transport file {url} is {response.content_length} bytes, "
                                f"more than {MAX_METADATA_SIZE}")  # fmt: skip
            data = bytearray()
            # read(n) returns what has arrived, up to n: loop to the end, never past the cap.
            while chunk := await response.content.read(MAX_METADATA_SIZE + 1 - len(data)):
                data += chunk
                if len(data) > MAX_METADATA_SIZE:
                    raise JoinError(f"transport file {url} is more than {MAX_METADATA_SIZE} bytes")
            return bytes(data)
    except aiohttp.TooManyRedirects:
        raise JoinError(f"transport file {url} redirects more than {MAX_REDIRECTS} times") from None
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as error:
        # ValueError: yarl and aiohttp reject some URLs (and redirect targets) only when they are used.
        raise JoinError(f"cannot fetch transport file {url}: {type(error).__name__} {error}".rstrip()) from None


def _read_local(name: str, local: LocalFiles) -> bytes:
    """A regular file's bytes, at most MAX_METADATA_SIZE (runs in a thread: disks and NFS can block)."""
    path = Path(name)
    if local.directory is not None and not local.allow_any:
        root = local.directory.resolve()
        try:
            path = (root / path).resolve()  # an absolute name replaces root; symlinks and .. are resolved
        except (OSError, RuntimeError, ValueError):
            path = Path("/")
        if not path.is_relative_to(root):
            raise JoinError(f"url= names no file under the transport files directory {local.directory}")
    try:
        data = read_regular_file(path, MAX_METADATA_SIZE)
    except UnreadableFileError as error:
        if error.not_regular:
            raise JoinError(f"transport file {name} is not a regular file") from None
        raise JoinError(f"cannot read transport file {name!r}: {error}") from None
    if len(data) > MAX_METADATA_SIZE:
        raise JoinError(f"transport file {name} is more than {MAX_METADATA_SIZE} bytes")
    return data


def internal_tracker_url(location: str) -> str:
    """The internal tracker of the node that serves the transport file at ``location`` (an http(s) URL).

    A token-protected node serves its tracker under the token too: ``/app/TOKEN/get_transport_file`` ->
    ``/app/TOKEN/announce``; otherwise ``/announce`` on the same host and port."""
    parts = urlsplit(location)
    head, _, tail = parts.path.rpartition("/")
    announce = f"{head}/announce" if tail == "get_transport_file" and head.startswith("/app/") else "/announce"
    return urlunsplit((parts.scheme, parts.netloc, announce, "", ""))


def parse_content_id(text: str) -> bytes:
    """A 40-hex content id (also accepts the 32-character base32 form magnets use); JoinError otherwise.

    The forms are matched exactly first: ``bytes.fromhex`` skips spaces and ``b32decode`` takes ``=`` padding,
    so either would turn some 40- or 32-character texts into fewer than 20 bytes.
    """
    text = text.strip()
    if _HEX_ID.fullmatch(text):
        return bytes.fromhex(text)
    if _BASE32_ID.fullmatch(text):
        return base64.b32decode(text.upper())
    raise JoinError(f"content id {text[:80]!r} is not 40 hex digits")


def parse_magnet(magnet: str) -> tuple[bytes, tuple[str, ...]]:
    """Content id and trackers (at most ``MAX_MAGNET_TRACKERS``) of a magnet link; JoinError for anything else."""
    if len(magnet) > MAX_MAGNET_CHARS:
        raise JoinError(f"magnet link of {len(magnet)} characters, more than {MAX_MAGNET_CHARS}")
    try:
        parts = urlsplit(magnet)
        query = parse_qs(parts.query, max_num_fields=MAX_MAGNET_FIELDS)
    except ValueError as error:  # urlsplit: "Invalid IPv6 URL" on "//["; parse_qs: too many fields
        raise JoinError(f"not a magnet link: {magnet[:80]!r} ({error})") from None
    if parts.scheme != "magnet":
        raise JoinError(f"not a magnet link: {magnet[:80]!r}")
    for topic in query.get("xt", []):
        if topic.lower().startswith("urn:btih:"):
            return parse_content_id(topic[9:]), tuple(query.get("tr", [])[:MAX_MAGNET_TRACKERS])
    raise JoinError("magnet link has no xt=urn:btih:<content id>")


class Membership:
    """One swarm on a host, with its announcer and metatracker client: what a node or the engine holds per broadcast.

    The descriptor's start nodes are dialled first while the swarm starts (swarm/dialer.py); its metatrackers are
    asked at join and every interval, and what they answer (trackers, start nodes) is added while the swarm runs.
    A swarm joined by content id alone learns both when the descriptor arrives from a peer.
    """

    def __init__(self, host: PeerHost, swarm: Swarm, trackers: tuple[str, ...]) -> None:
        self.host = host
        self.swarm = swarm
        self.announcer = Announcer(
            list(dict.fromkeys(trackers)),
            info_hash=swarm.content_id,
            peer_id=host.peer_id,
            port=host.port,
            stats=lambda: (swarm.stats.uploaded, swarm.stats.downloaded, 0),
            on_peers=self._on_peers,
            max_backoff=30.0,
            local_address=host.local_address,
        )
        self.metatrackers: MetatrackerClient | None = None
        self.startup_nodes: dict[Address, None] = {}  # those we were given, oldest first (bounded)
        self._started = False
        self._closed = False
        swarm.descriptor_listeners.append(self._on_descriptor)

    def metatracker_status(self) -> list[MetatrackerStatus]:
        """What each metatracker of the broadcast last answered (none until the descriptor names some)."""
        return self.metatrackers.status() if self.metatrackers is not None else []

    def _own(self) -> set[Address]:
        port = self.host.port
        return {("127.0.0.1", port), ("0.0.0.0", port), ("::1", port), (self.host.bind, port)}

    def _on_peers(self, peers: list[Address]) -> None:
        own = self._own()
        self.swarm.add_candidates(p for p in peers if p not in own)
        self.host.dial_now(self.swarm)  # a joining player waits for these: do not wait for the next tick

    def start(self) -> None:
        self.host.add_swarm(self.swarm)
        self.host.dial_now(self.swarm)
        self.announcer.start()
        self._started = True
        if self.swarm.descriptor is not None:
            self._use_descriptor(self.swarm.descriptor)

    def _on_descriptor(self, descriptor: Descriptor) -> None:
        if self._started and not self._closed:
            self._use_descriptor(descriptor)

    def _use_descriptor(self, descriptor: Descriptor) -> None:
        self.add_startup_nodes(descriptor.startup_nodes)
        if descriptor.metatrackers and self.metatrackers is None:
            self.metatrackers = MetatrackerClient(descriptor.metatrackers, info_hash=self.swarm.content_id,
                                                  on_answer=self._on_metatracker_answer)  # fmt: skip
            self.metatrackers.start()

    def _on_metatracker_answer(self, url: str, answer: MetatrackerAnswer) -> None:
        if self._closed:
            return
        new = [t for t in answer.trackers if t not in self.announcer.trackers]
        if new:
            try:
                self.add_trackers(tuple(new))
            except ValueError as error:  # the announcer's cap: those before it were added
                log.info("metatracker %s: not every tracker added: %s", url, error)
            log.info("metatracker %s added tracker(s) %s", url, ", ".join(new))
        self.add_startup_nodes(answer.startup_nodes)

    def add_startup_nodes(self, addresses: Iterable[Address]) -> None:
        """Start nodes to dial (first while the swarm starts); our own address is left out."""
        own = self._own()
        nodes = [a for a in addresses if a not in own]
        if not nodes:
            return
        fresh = [a for a in nodes if a not in self.startup_nodes]
        for address in nodes:
            self.startup_nodes.pop(address, None)
            self.startup_nodes[address] = None
        while len(self.startup_nodes) > MAX_REMEMBERED_STARTUP_NODES:
            del self.startup_nodes[next(iter(self.startup_nodes))]
        if fresh:
            log.info("start nodes for %s: %s", self.swarm.content_id.hex(),
                     ", ".join(format_node_address(a) for a in fresh))  # fmt: skip
        self.swarm.add_startup_nodes(nodes, time.monotonic())
        self.host.dial_now(self.swarm)

    async def close(self) -> None:
        self._closed = True
        if self._on_descriptor in self.swarm.descriptor_listeners:
            self.swarm.descriptor_listeners.remove(self._on_descriptor)
        self.host.remove_swarm(self.swarm)
        if self.metatrackers is not None:
            await self.metatrackers.close()
        await self.announcer.close()
        self.swarm.store.close()

    def add_trackers(self, trackers: tuple[str, ...]) -> None:
        self.announcer.add_trackers(list(trackers))
