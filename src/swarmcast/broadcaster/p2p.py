"""``swarmcast broadcaster --p2p``: one signed P2P broadcast per rendition of every published stream.

How this works. The project's rule is one node process per broadcast (docs/design.md), so each rendition gets a
``swarmcast node source`` child process: the same source node an operator would run by hand, with its own key
(``.sauth``) and piece numbering (``.restart``) under ``--metadata-dir/<id>/<rendition>/``, its web interface
(``/app/monitor``) and internal tracker on its own port from the ``--p2p-port-base`` range, the broadcaster's
trackers, and as input the broadcaster's continuous MPEG-TS of that rendition (``/stream/<id>/<rendition>.ts``).
A crash of one rendition's node cannot take the broadcaster or another rendition with it, and the keys and
numbering behave exactly as documented for a source node (docs/protocol.md §12): a re-published stream reuses
its metadata, so each rendition keeps its content id.

The registry's observer hooks drive it: ``on_stream_started`` starts a :class:`StreamNodes` (one supervisor task
per rendition: start the child, restart it with a growing delay when it dies, stop it on stream end or shutdown),
``on_stream_ended`` stops it. A stream started again before the old nodes are gone waits for them (two processes
must never share a ``.restart`` file). Once a rendition's node serves its transport file, the channel file
(swarmcast/channel.py) is rewritten atomically as ``--publish-dir/<id>.acechannel``, listing in ladder order every
rendition whose node has served its transport file (a node being restarted stays listed: same key, same content
id); each node itself writes ``<id>-<rendition>.acelive`` there.

Bounded: at most ``max_nodes`` children in all (one port each); renditions past it are not broadcast over P2P
(logged; HLS from the origin is unaffected).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp
from aiohttp import web

from swarmcast.channel import CHANNEL_CONTENT_TYPE, Channel, ChannelError, Rendition
from swarmcast.files import write_file_atomically
from swarmcast.transport import Descriptor, TransportError
from swarmcast.wire.messages import MAX_METADATA_SIZE

log = logging.getLogger("swarmcast.broadcaster.p2p")

DEFAULT_PORT_BASE = 7800
DEFAULT_MAX_NODES = 32  # rendition nodes in all: ports port_base .. port_base + max_nodes - 1
RESTART_DELAY = 1.0  # first wait before restarting a node that died; doubled each time up to RESTART_DELAY_MAX
RESTART_DELAY_MAX = 30.0
STABLE_AFTER = 60.0  # a node that ran this long before dying is restarted after RESTART_DELAY again
STOP_TIMEOUT = 5.0  # SIGTERM, then SIGKILL after this
POLL_INTERVAL = 0.5  # how often a starting node's transport file is asked for
FETCH_TIMEOUT = 5.0
CHANNEL_SUFFIX = ".acechannel"


class RenditionLike(Protocol):
    """What p2p needs of a rendition (the pipeline's RenditionInfo has these)."""

    @property
    def name(self) -> str: ...
    @property
    def width(self) -> int | None: ...
    @property
    def height(self) -> int | None: ...
    @property
    def bandwidth(self) -> int: ...
    @property
    def codecs(self) -> str | None: ...
    @property
    def frame_rate(self) -> float | None: ...


@dataclass(frozen=True)
class P2PConfig:
    ts_base_url: str  # the origin's HTTP base: inputs are <base>/stream/<id>/<rendition>.ts
    publish_dir: Path
    metadata_dir: Path
    trackers: tuple[str, ...] = ()
    bind: str = "127.0.0.1"
    # The host written into the channel file's rendition URLs (where engines find the node); None: --p2p-bind,
    # unless that is a wildcard address, then no URL (engines find the nodes through the trackers).
    public_host: str | None = None
    port_base: int = DEFAULT_PORT_BASE
    max_nodes: int = DEFAULT_MAX_NODES
    extra_args: tuple[str, ...] = ()  # passed to every node (e.g. --service-access-token, --registry)
    extra_env: tuple[tuple[str, str], ...] = ()  # set for every node (a secret kept off command lines)
    pid_file_dir: Path | None = None
    restart_delay: float = RESTART_DELAY

    @property
    def url_host(self) -> str | None:
        if self.public_host:
            return self.public_host
        return None if self.bind in ("0.0.0.0", "::", "") else self.bind


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass
class _Ports:
    """The port range; a port is taken while a node holds it."""

    base: int
    count: int
    taken: set[int] = field(default_factory=set)

    def take(self, bind: str) -> int | None:
        for port in range(self.base, self.base + self.count):
            if port not in self.taken and _bindable(bind, port):
                self.taken.add(port)
                return port
        return None

    def give_back(self, port: int) -> None:
        self.taken.discard(port)


def _bindable(bind: str, port: int) -> bool:
    """Whether nothing else listens on the port (the node's own preflight would refuse it with exit 2)."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind, port))
        except OSError:
            return False
    return True


class RenditionNode:
    """One rendition's source node process, kept running until stopped."""

    def __init__(self, owner: StreamNodes, info: RenditionLike) -> None:
        self.owner = owner
        self.info = info
        self.name = f"{owner.stream_id}-{info.name}"
        self.port: int | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.transport: bytes | None = None  # the transport file the node served last
        self.up = False  # the running node serves it
        self.starts = 0
        self.directory = owner.config.metadata_dir / owner.stream_id / info.name

    @property
    def url(self) -> str | None:
        host = self.owner.config.url_host
        if host is None or self.port is None:
            return None
        return f"http://{_bracketed(host)}:{self.port}/app/get_transport_file"

    def args(self, port: int) -> list[str]:
        config = self.owner.config
        stream_id, rendition = self.owner.stream_id, self.info.name
        args = [
            "node", "source", "--bind", config.bind, "--port", str(port),
            "--source", f"{config.ts_base_url.rstrip('/')}/stream/{stream_id}/{rendition}.ts",
            "--title", f"{stream_id} {rendition}", "--name", self.name,
            "--publish-dir", str(config.publish_dir), "--metadata-dir", str(self.directory),
        ]  # fmt: skip
        for tracker in config.trackers:
            args += ["--tracker", tracker]
        if config.pid_file_dir is not None:
            args += ["--pid-file-dir", str(config.pid_file_dir)]
        return [*args, *config.extra_args]

    async def run(self, stop: asyncio.Event) -> None:
        """Start the node, restart it when it dies, until ``stop``; the port is held throughout."""
        config = self.owner.config
        delay = config.restart_delay
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            while not stop.is_set():
                if self.port is None or not _bindable(config.bind, self.port):
                    if self.port is not None:
                        self.owner.ports.give_back(self.port)
                    self.port = self.owner.ports.take(config.bind)
                    if self.port is None:
                        log.error("stream %s rendition %s: no free port in %d..%d; retrying in %.0f s",
                                  self.owner.stream_id, self.info.name, config.port_base,
                                  config.port_base + config.max_nodes - 1, RESTART_DELAY_MAX)  # fmt: skip
                        await _wait(stop, RESTART_DELAY_MAX)
                        continue
                started = time.monotonic()
                code = await self._run_once(self.port, stop)
                if stop.is_set():
                    break
                ran = time.monotonic() - started
                delay = config.restart_delay if ran >= STABLE_AFTER else delay
                log.warning("stream %s rendition %s: node on port %d exited with code %s after %.0f s; "
                            "restarting in %.0f s (log %s)", self.owner.stream_id, self.info.name, self.port, code,
                            ran, delay, self.directory / "node.log")  # fmt: skip
                await _wait(stop, delay)
                delay = min(delay * 2, RESTART_DELAY_MAX)
        finally:
            if self.port is not None:
                self.owner.ports.give_back(self.port)

    async def _run_once(self, port: int, stop: asyncio.Event) -> int | None:
        self.starts += 1
        extra_env = self.owner.config.extra_env
        env = {**os.environ, **dict(extra_env)} if extra_env else None
        with (self.directory / "node.log").open("ab") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "swarmcast.cli", *self.args(port),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=stderr, env=env,
            )  # fmt: skip
        process = self.process
        log.info("stream %s rendition %s: node pid %d on port %d (start %d)", self.owner.stream_id, self.info.name,
                 process.pid, port, self.starts)  # fmt: skip
        exited = asyncio.create_task(process.wait(), name=f"node-{self.name}-wait")
        stopping = asyncio.create_task(stop.wait(), name=f"node-{self.name}-stop")
        watch = asyncio.create_task(self._fetch_transport(port, exited), name=f"node-{self.name}-transport")
        try:
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            watch.cancel()
            await asyncio.gather(stopping, watch, return_exceptions=True)
            if process.returncode is None:
                await _terminate(process)
            await asyncio.gather(exited, return_exceptions=True)
            # The transport file stays listed in the channel while the node is restarted: the key and the saved
            # descriptor are the same, so is the content id; players keep the variant they have.
            self.up = False
        return process.returncode

    async def _fetch_transport(self, port: int, exited: asyncio.Task[int]) -> None:
        """Ask the node for its transport file until it serves one (the node publishes it once its input
        flows and the bitrate is settled), then tell the owner."""
        host = self.owner.config.bind if self.owner.config.bind not in ("0.0.0.0", "::", "") else "127.0.0.1"
        url = f"http://{_bracketed(host)}:{port}/app/get_transport_file?format=raw"
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not exited.done():
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with session.get(url) as response:
                        data = await response.content.read(MAX_METADATA_SIZE + 1)
                        if response.status == 200 and _is_transport(data):
                            self.transport, self.up = data, True
                            log.info("stream %s rendition %s: content id %s", self.owner.stream_id,
                                     self.info.name, Descriptor.decode(data).infohash)  # fmt: skip
                            self.owner.renditions_changed()
                            return
                await asyncio.sleep(POLL_INTERVAL)


def _is_transport(data: bytes) -> bool:
    try:
        Descriptor.decode(data)
    except TransportError:
        return False
    return True


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def _terminate(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        async with asyncio.timeout(STOP_TIMEOUT):
            await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


class StreamNodes:
    """The rendition nodes of one published stream and its channel file."""

    def __init__(self, broadcaster: P2PBroadcaster, stream_id: str, infos: Sequence[RenditionLike]) -> None:
        self.broadcaster = broadcaster
        self.config = broadcaster.config
        self.ports = broadcaster.ports
        self.stream_id = stream_id
        self.nodes = [RenditionNode(self, info) for info in infos]
        self.stop = asyncio.Event()
        self.channel: Channel | None = None
        self.channel_path = self.config.publish_dir / f"{stream_id}{CHANNEL_SUFFIX}"
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, after: StreamNodes | None) -> None:
        self._tasks = [asyncio.create_task(self._run(node, after), name=f"p2p-{node.name}") for node in self.nodes]

    async def _run(self, node: RenditionNode, after: StreamNodes | None) -> None:
        if after is not None:  # the previous nodes of this stream id hold the same metadata files
            await after.wait_closed()
        try:
            await node.run(self.stop)
        except Exception:
            log.exception("stream %s rendition %s: supervisor failed", self.stream_id, node.info.name)

    def renditions_changed(self) -> None:
        if self.stop.is_set():
            return
        renditions = []
        for node in self.nodes:
            if node.transport is None:
                continue
            info = node.info
            resolution = (info.width, info.height) if info.width and info.height else None
            renditions.append(Rendition(
                name=info.name, bandwidth=max(int(info.bandwidth), 1), transport=node.transport,
                width=resolution[0] if resolution else None, height=resolution[1] if resolution else None,
                codecs=info.codecs or None, frame_rate=info.frame_rate or None, url=node.url,
            ))  # fmt: skip
        if not renditions:
            self.channel = None
            return
        try:
            channel = Channel(name=self.stream_id, title=self.stream_id, renditions=tuple(renditions))
            Channel.decode(channel.encode())  # what we publish must be what an engine accepts
        except (ChannelError, ValueError) as error:
            log.error("stream %s: cannot write the channel file: %s", self.stream_id, error)
            return
        self.channel = channel
        self.config.publish_dir.mkdir(parents=True, exist_ok=True)
        write_file_atomically(self.channel_path, channel.encode())
        log.info("stream %s: channel file %s lists %s", self.stream_id, self.channel_path,
                 ", ".join(r.name for r in renditions))  # fmt: skip

    async def close(self) -> None:
        self.stop.set()
        await self.wait_closed()
        if self.stream_id not in self.broadcaster.streams:  # no newer nodes of this id will rewrite it
            with contextlib.suppress(FileNotFoundError):
                self.channel_path.unlink()

    async def wait_closed(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)


class P2PBroadcaster:
    """Plugs into the stream registry's observer hooks; owns every rendition node."""

    def __init__(self, config: P2PConfig) -> None:
        self.config = config
        self.ports = _Ports(config.port_base, config.max_nodes)
        self.streams: dict[str, StreamNodes] = {}
        self._closing: set[asyncio.Task[None]] = set()
        # Nodes of an ended stream still stopping (up to STOP_TIMEOUT): a stream published again under the same id
        # waits for them, so two processes never share a rendition's .sauth/.restart, and they still take room.
        self._stopping: dict[str, StreamNodes] = {}
        self._closed = False

    def on_stream_started(self, stream_id: str, infos: Sequence[RenditionLike]) -> None:
        if self._closed:
            return
        current = self.streams.get(stream_id)
        if current is not None and [n.info.name for n in current.nodes] == [i.name for i in infos]:
            return  # the same ladder again (a reconnect within the grace): the nodes carry on
        previous = self._stop(stream_id) or self._stopping.get(stream_id)
        running = sum(len(s.nodes) for s in (*self.streams.values(), *self._stopping.values()))
        room = max(self.config.max_nodes - running, 0)
        if len(infos) > room:
            skipped = ", ".join(i.name for i in infos[room:])
            log.error("stream %s: only %d more rendition node(s) fit in --p2p-max-nodes %d; not broadcasting "
                      "%s over P2P", stream_id, room, self.config.max_nodes, skipped)  # fmt: skip
        if room == 0:
            return
        nodes = StreamNodes(self, stream_id, infos[:room])
        self.streams[stream_id] = nodes
        nodes.start(previous)
        log.info("stream %s: P2P broadcast of %s", stream_id, ", ".join(i.name for i in infos[:room]))

    def on_stream_ended(self, stream_id: str) -> None:
        self._stop(stream_id)

    def _stop(self, stream_id: str) -> StreamNodes | None:
        nodes = self.streams.get(stream_id)
        if nodes is None:
            return None
        task = asyncio.create_task(nodes.close(), name=f"p2p-close-{stream_id}")
        self._closing.add(task)
        self._stopping[stream_id] = nodes

        def stopped(done: asyncio.Task[None]) -> None:
            self._closing.discard(done)
            if self._stopping.get(stream_id) is nodes:
                del self._stopping[stream_id]

        task.add_done_callback(stopped)
        del self.streams[stream_id]
        return nodes

    def content_ids(self) -> list[str]:
        """The content ids of every rendition node that has served its transport file (for the registry)."""
        return [Descriptor.decode(node.transport).infohash for nodes in self.streams.values()
                for node in nodes.nodes if node.transport is not None]  # fmt: skip

    def channels(self) -> list[Channel]:
        """Every stream's channel of the moment (for the registry)."""
        return [nodes.channel for nodes in self.streams.values() if nodes.channel is not None]

    def channel_bytes(self, stream_id: str) -> bytes | None:
        nodes = self.streams.get(stream_id)
        return nodes.channel.encode() if nodes is not None and nodes.channel is not None else None

    async def close(self) -> None:
        self._closed = True
        for stream_id in list(self.streams):
            self._stop(stream_id)
        await asyncio.gather(*self._closing, return_exceptions=True)


CHANNEL_HEADERS = {"Content-Type": CHANNEL_CONTENT_TYPE, "Cache-Control": "no-cache",
                   "Access-Control-Allow-Origin": "*"}  # fmt: skip
CHANNEL_PATH = "/stream/{stream_id}.acechannel"  # on the origin's HTTP server, beside /stream/<id>.m3u8


def channel_handler(p2p: P2PBroadcaster) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``GET /stream/<id>.acechannel``: the stream's channel file (what engines take as ``url=``), 404 until a
    rendition node is up."""

    async def handler(request: web.Request) -> web.Response:
        data = p2p.channel_bytes(request.match_info["stream_id"])
        if data is None:
            return web.Response(status=404, text="no P2P channel for this stream (yet)\n")
        return web.Response(body=data, headers=CHANNEL_HEADERS)

    return handler
