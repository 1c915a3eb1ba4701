"""Joining an existing broadcast: find its transport file, its peers and its trackers.

Shared by the support node and the viewer engine. A transport file fetched over HTTP from a node also tells us
that node's address (a peer to dial at once) and its internal tracker (``/announce`` on the same port).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import aiohttp

from swarmcast.discovery.announcer import Announcer
from swarmcast.node.host import PeerHost
from swarmcast.swarm.core import Swarm
from swarmcast.swarm.peer import Address
from swarmcast.transport import Descriptor, TransportError
from swarmcast.wire.messages import MAX_METADATA_SIZE

FETCH_TIMEOUT = 10.0
# A magnet link is a content id and a few trackers; anything much longer is not one.
MAX_MAGNET_CHARS = 8192
MAX_MAGNET_FIELDS = 64
MAX_MAGNET_TRACKERS = 16  # extra ``tr=`` are dropped: each one is a host we would announce to

_HEX_ID = re.compile(r"[0-9a-fA-F]{40}")
_BASE32_ID = re.compile(r"[A-Za-z2-7]{32}")


class JoinError(ValueError):
    """The broadcast cannot be joined as asked; the message says why."""


@dataclass(frozen=True)
class TransportSource:
    descriptor: Descriptor
    node: Address | None  # the node that served the file, when it came over HTTP
    trackers: tuple[str, ...]  # that node's internal tracker


async def load_transport(location: str) -> TransportSource:
    """A transport file from a local path or an http(s) URL, checked and decoded."""
    parts = urlsplit(location)
    if parts.scheme in ("http", "https"):
        try:
            timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(location) as response:
                if response.status != 200:
                    raise JoinError(f"transport file {location} answered HTTP {response.status}")
                data = await response.content.read(MAX_METADATA_SIZE + 1)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise JoinError(f"cannot fetch transport file {location}: {error}") from None
        node: Address | None = None
        trackers: tuple[str, ...] = ()
        if parts.hostname and parts.port:
            node = (parts.hostname, parts.port)
            trackers = (urlunsplit((parts.scheme, parts.netloc, "/announce", "", "")),)
    else:
        path = Path(parts.path if parts.scheme == "file" else location)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise JoinError(f"cannot read transport file {path}: {error.strerror}") from None
        node, trackers = None, ()
    try:
        descriptor = Descriptor.decode(data)
    except TransportError as error:
        raise JoinError(str(error)) from None
    return TransportSource(descriptor, node, trackers)


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
    """One swarm on a host, with its announcer: what a node or the engine holds per broadcast."""

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
        )

    def _on_peers(self, peers: list[Address]) -> None:
        own = {("127.0.0.1", self.host.port), ("0.0.0.0", self.host.port)}
        self.swarm.add_candidates(p for p in peers if p not in own)
        self.host.dial_now(self.swarm)  # a joining player waits for these: do not wait for the next tick

    def start(self) -> None:
        self.host.add_swarm(self.swarm)
        self.host.dial_now(self.swarm)
        self.announcer.start()

    async def close(self) -> None:
        self.host.remove_swarm(self.swarm)
        await self.announcer.close()
        self.swarm.store.close()

    def add_trackers(self, trackers: tuple[str, ...]) -> None:
        self.announcer.add_trackers(list(trackers))
