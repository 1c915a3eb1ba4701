"""What a node or an engine tells the registry: its registration (:class:`NodeReport`) and its heartbeat figures.

The figures reuse what the node's monitor shows (node/monitor.py) and the engine's stat counters, in the units of
the registry's API: rates in bits per second (``*_bps``), bytes, seconds (``*_s``). Totals are at the top level;
``streams`` holds the same figures per content id (one for a node, one per joined broadcast for an engine).
``cpu_percent`` (of one core, since the last heartbeat) and ``rss_bytes`` come from the stdlib (``resource`` and
``/proc/self/statm``): psutil is not a dependency.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import resource
import socket
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote, urlsplit

from swarmcast import __version__
from swarmcast.registry.client import NodeReport, StreamReport

if TYPE_CHECKING:
    from swarmcast.channel import Channel
    from swarmcast.node.engine import Engine
    from swarmcast.node.monitor import NodeState
    from swarmcast.transport import Descriptor

log = logging.getLogger("swarmcast.registry.client")

ROLE_OF_KIND = {"source": "source", "support": "support", "startup": "start"}
DELAY_FRESH_SECONDS = 30.0  # an engine's delay figure is its last stamp's; older than this it says nothing
WILDCARDS = ("", "0.0.0.0", "::")


def registry_name(text: str) -> str:
    """A registry name ([a-z0-9._-]{1,64}) made of ``text`` (a source's --name): lower case, others as ``-``."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")[:64].strip("-.")
    return cleaned or "broadcast"


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reachable_host(bind: str, registry_url: str) -> str:
    """The host others reach this machine at, as far as we can tell: the bind address when it is one, else the
    local address of the route to the registry (a UDP socket's connect sends nothing); 127.0.0.1 failing that."""
    if bind not in WILDCARDS:
        return bind
    host = urlsplit(registry_url).hostname or "127.0.0.1"
    try:
        family = socket.AF_INET6 if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address) else socket.AF_INET
    except ValueError:
        family = socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))
            local: str = probe.getsockname()[0]
            return local
    except OSError as error:
        log.warning("cannot tell this machine's address towards the registry (%s): registering 127.0.0.1", error)
        return "127.0.0.1"


class ProcessFigures:
    """CPU use since the previous sample (percent of one core) and the resident memory, from the stdlib."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._last = (clock(), _cpu_seconds())

    def sample(self) -> dict[str, object]:
        now, cpu = self.clock(), _cpu_seconds()
        wall = now - self._last[0]
        percent = 100.0 * (cpu - self._last[1]) / wall if wall > 0 else 0.0
        self._last = (now, cpu)
        return {"cpu_percent": round(max(percent, 0.0), 2), "rss_bytes": rss_bytes()}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes() -> int:
    """Resident set size now (``/proc/self/statm``), else the peak (``ru_maxrss``, KiB on Linux)."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _bps(bytes_per_second: float) -> int:
    return round(bytes_per_second * 8)


def stream_report(descriptor: Descriptor, name: str) -> StreamReport:
    return StreamReport(
        content_id=descriptor.infohash, name=name, title=descriptor.title, transport=descriptor.encode(),
        categories=tuple(descriptor.categories), quality=descriptor.quality or None,
        bitrate=descriptor.bitrate * 8 if descriptor.bitrate else None,  # the transport file's is bytes/s
    )  # fmt: skip


class HasNodeState(Protocol):
    node_state: NodeState | None


class NodeReporter:
    """Registration and figures of a node role (source, support, start node), read off its NodeState."""

    def __init__(self, node: HasNodeState, *, host: str, stream_name: str | None = None) -> None:
        self.node = node
        self.host = host
        self.stream_name = stream_name  # a source's registry name (None: not a source)
        self.process = ProcessFigures()

    def describe(self) -> NodeReport | None:
        state = self.node.node_state
        if state is None:  # not listening yet (a source waits for its input's bitrate)
            return None
        swarm, common = state.swarm, state.common
        role = ROLE_OF_KIND.get(state.kind, "support")
        streams: tuple[StreamReport, ...] = ()
        if role == "source" and self.stream_name is not None and swarm.descriptor is not None:
            streams = (stream_report(swarm.descriptor, self.stream_name),)
        port = state.host.port
        return NodeReport(
            role=role, address=format_address(self.host, port), http=f"http://{format_address(self.host, port)}",
            version=__version__, capacity_bps=_bps(common.upload_limit) if common.upload_limit else None,
            content_ids=(swarm.content_id.hex(),), name=self.stream_name, streams=streams,
        )  # fmt: skip

    def figures(self) -> dict[str, object]:
        state = self.node.node_state
        figures = self.process.sample()
        if state is None:
            return figures
        now = time.monotonic()
        swarm, stats = state.swarm, state.swarm.stats
        content: dict[str, object] = {
            "peers": len(swarm.sessions),
            "upload_bps": _bps(stats.up.rate(now)),
            "download_bps": _bps(stats.down.rate(now)),
            "uploaded_bytes": stats.uploaded,
            "downloaded_bytes": stats.downloaded,
            "upload_slots_used": swarm.choker.in_use(),
            "cache_bytes": swarm.store.size_bytes,
            "last_piece": swarm.store.newest,
        }
        if state.input_status is not None:
            status = state.input_status.as_json()
            content["input_connected"] = bool(status.get("connected")) if isinstance(status, dict) else None
        figures.update(content)
        figures["uptime_s"] = round(now - state.started_at)
        figures["streams"] = {swarm.content_id.hex(): content}
        return figures


class EngineReporter:
    """Registration and figures of the viewer engine: its broadcasts, players, rates, delay, startup, skips."""

    def __init__(self, *, host: str, http: str, engine: Engine | None = None) -> None:
        self.engine = engine  # set once it exists (it is made on the running loop)
        self.host = host
        self.http = http
        self.process = ProcessFigures()

    def describe(self) -> NodeReport | None:
        engine = self.engine
        if engine is None:
            return None
        limit = engine.config.upload_limit
        return NodeReport(
            role="engine", address=format_address(self.host, engine.host.port), http=self.http, version=__version__,
            capacity_bps=_bps(limit) if limit else None,
            content_ids=tuple(cid.hex() for cid in engine.broadcasts),
        )  # fmt: skip

    def figures(self) -> dict[str, object]:
        engine = self.engine
        figures = self.process.sample()
        if engine is None:
            return figures
        now, wall = time.monotonic(), time.time()
        per: dict[str, object] = {}
        delays: list[float] = []
        startups: list[float] = []
        for cid, broadcast in list(engine.broadcasts.items()):
            swarm, stats = broadcast.swarm, broadcast.swarm.stats
            clock = broadcast.source_clock
            fresh = clock is not None and wall - clock.played < DELAY_FRESH_SECONDS
            delay = round(max(clock.delay, 0.0), 3) if clock is not None and fresh else None
            waits = broadcast.startup_seconds  # each player's wait for its first piece (metrics/histogram.py)
            startup = waits.sum / waits.count if waits.count else None
            per[cid.hex()] = {
                "peers": swarm.peer_count,
                "upload_bps": _bps(stats.up.rate(now)),
                "download_bps": _bps(stats.down.rate(now)),
                "uploaded_bytes": stats.uploaded,
                "downloaded_bytes": stats.downloaded,
                "viewers": broadcast.players,
                "delay_s": delay,
                "startup_s": round(startup, 3) if isinstance(startup, float) else None,
                "stalls": stats.skipped_pieces,
                "state": broadcast.state.value,
            }
            if delay is not None:
                delays.append(delay)
            if isinstance(startup, float):
                startups.append(startup)
        rows = [row for row in per.values() if isinstance(row, dict)]
        figures.update({
            "sessions": len(engine.sessions),
            "broadcasts": len(rows),
            "viewers": _sum(rows, "viewers"),
            "peers": _sum(rows, "peers"),
            "upload_bps": _sum(rows, "upload_bps"),
            "download_bps": _sum(rows, "download_bps"),
            "delay_s": round(max(delays), 3) if delays else None,  # the worst: what an operator must see
            "startup_s": round(sum(startups) / len(startups), 3) if startups else None,
            "stalls": _sum(rows, "stalls"),
            "streams": per,
        })  # fmt: skip
        return figures


def _sum(rows: Iterable[dict[str, object]], key: str) -> int:
    return sum(value for row in rows if isinstance(value := row.get(key), int))


class BroadcasterReporter:
    """Registration and figures of ``swarmcast broadcaster``: its origin, its live streams, the channel of each
    (posted as a stream: engines play it by the stream id, the master playlist lists its renditions) and the
    renditions' content ids (each rendition node registers itself and its broadcast as a source)."""

    def __init__(self, *, http: str, content_ids: Callable[[], list[str]], streams: Callable[[], int],
                 channels: Callable[[], list[Channel]] = list) -> None:  # fmt: skip
        self.http = http
        self.content_ids = content_ids
        self.streams = streams
        self.channels = channels
        self.process = ProcessFigures()

    def describe(self) -> NodeReport:
        channels = [channel_report(channel, origin=self.http) for channel in self.channels()]
        return NodeReport(role="broadcaster", address=None, http=self.http, version=__version__,
                          content_ids=tuple(dict.fromkeys([*self.content_ids(), *(c.content_id for c in channels)])),
                          streams=tuple(channels))  # fmt: skip

    def figures(self) -> dict[str, object]:
        return {**self.process.sample(), "live_streams": self.streams()}


def channel_report(channel: Channel, *, origin: str | None = None) -> StreamReport:
    """A broadcaster's channel as a registry stream: its id, the stream id as name, the renditions. With the
    broadcaster's ``origin`` (its HTTP base), each rendition also names its HLS playlist there (``hls``): the
    registry's watch page plays it in a browser that has no engine."""
    hls = {} if origin is None else {"hls": f"{origin}/stream/{quote(channel.name, safe='')}"}
    renditions = tuple(
        {"name": r.name, "bandwidth": r.bandwidth, "width": r.width, "height": r.height, "codecs": r.codecs,
         "frame_rate": r.frame_rate, "content_id": r.content_id.hex(),
         **({"hls": f"{hls['hls']}/{quote(r.name, safe='')}.m3u8"} if hls else {})}
        for r in channel.renditions
    )  # fmt: skip
    return StreamReport(content_id=channel.channel_id.hex(), name=registry_name(channel.name), title=channel.title,
                        transport=channel.encode(), bitrate=channel.renditions[0].bandwidth,
                        renditions=renditions)  # fmt: skip
