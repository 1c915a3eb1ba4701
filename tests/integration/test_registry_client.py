"""The registry client (registry/client.py, registry/bootstrap.py) against a small in-process registry on loopback
that implements the CONTRACT shapes (tests/fake_registry.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from types import SimpleNamespace
from typing import cast

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarmcast.channel import Channel, Rendition
from swarmcast.node.config import NodeCommon
from swarmcast.node.engine import Engine, EngineConfig
from swarmcast.node.monitor import NodeState
from swarmcast.node.shared import new_peer_id, node_host_and_swarm
from swarmcast.registry import validate
from swarmcast.registry.bootstrap import StreamDirectory, attach, refresh_peers
from swarmcast.registry.client import NodeReport, RegistryClient, RegistryEndpoint, StreamReport
from swarmcast.registry.reports import EngineReporter, NodeReporter, channel_report, stream_report
from swarmcast.swarm.core import Role
from swarmcast.transport import Descriptor, public_key_bytes
from swarmcast.wire.messages import HandshakeFlags
from tests.fake_registry import FakeRegistry, running
from tests.procs import free_port


def descriptor(title: str = "News") -> Descriptor:
    key = public_key_bytes(Ed25519PrivateKey.generate())
    return Descriptor(name="news", title=title, piece_size=64 * 188, bitrate=250_000, public_key=key)


def source_report(desc: Descriptor, address: str = "127.0.0.1:7764") -> NodeReport:
    return NodeReport(role="source", address=address, http=f"http://{address}", version="test",
                      content_ids=(desc.infohash,), name="news", streams=(stream_report(desc, "news"),))  # fmt: skip


async def until(predicate: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_register_heartbeat_stream_and_deregister() -> None:
    desc = descriptor()
    async with running(FakeRegistry()) as registry:
        endpoint = RegistryEndpoint(registry.url, registry.token)
        client = RegistryClient(endpoint, lambda: source_report(desc), lambda: {"peers": 3, "upload_bps": 8000})
        stop = asyncio.Event()
        client.start(stop)
        await until(lambda: len(registry.heartbeats) >= 2)
        (node,) = registry.live("source")
        assert node["address"] == "127.0.0.1:7764"
        assert node["content_ids"] == [desc.infohash]
        assert node["figures"] == {"peers": 3, "upload_bps": 8000}
        stream = registry.streams[desc.infohash]
        assert stream["name"] == "news"
        assert stream["bitrate"] == 2_000_000  # bits/s
        assert Descriptor.decode(__import__("base64").b64decode(stream["transport"])) == desc
        posts = [r for r in registry.requests if r == ("POST", "/api/streams")]
        assert len(posts) == 1, "an unchanged stream is posted once"
        stop.set()  # SIGTERM: deregistered at once, before the node has finished closing
        await until(lambda: node["state"] == "left", timeout=5)
        await client.close()
        assert client.node_id is None


async def test_forgotten_node_registers_again_and_reposts_its_stream() -> None:
    desc = descriptor()
    async with running(FakeRegistry()) as registry:
        client = RegistryClient(RegistryEndpoint(registry.url, registry.token), lambda: source_report(desc), dict)
        client.start()
        try:
            await until(lambda: len(registry.heartbeats) >= 1)
            first = client.node_id
            registry.nodes.clear()  # the registry restarted on an empty database
            registry.streams.clear()
            await until(lambda: client.registrations == 2)
            assert client.node_id != first
            await until(lambda: desc.infohash in registry.streams)
            assert registry.streams[desc.infohash]["node_id"] == client.node_id
        finally:
            await client.close()


async def test_registry_down_then_up_backs_off_and_registers() -> None:
    port = free_port()
    registry = FakeRegistry()
    client = RegistryClient(RegistryEndpoint(f"http://127.0.0.1:{port}", registry.token),
                            lambda: source_report(descriptor()), dict)  # fmt: skip
    client.start()
    try:
        await until(lambda: client.schedule.failures >= 2)  # refused connections: 1 s, then 2 s of backoff
        assert client.node_id is None
        assert client.schedule.next_at - time.monotonic() <= 60.0
        async with running(registry, port=port):
            await until(lambda: client.registrations == 1)
            assert client.schedule.failures == 0
    finally:
        await client.close()


async def test_without_the_token_registration_is_refused_and_retried_slowly() -> None:
    async with running(FakeRegistry()) as registry:
        client = RegistryClient(RegistryEndpoint(registry.url, "wrong"), lambda: source_report(descriptor()), dict)
        client.start()
        try:
            await until(lambda: client.schedule.failures == 1)
            assert client.node_id is None
            assert client.schedule.next_at - time.monotonic() > 30  # REFUSED_BACKOFF, not a tight loop
            assert not registry.nodes
        finally:
            await client.close()


async def test_a_node_not_ready_registers_once_it_can_describe_itself() -> None:
    desc = descriptor()
    ready: list[NodeReport] = []
    async with running(FakeRegistry()) as registry:
        client = RegistryClient(RegistryEndpoint(registry.url, registry.token),
                                lambda: ready[0] if ready else None, dict)  # fmt: skip
        client.start()
        try:
            await asyncio.sleep(1.0)
            assert not registry.nodes  # a source still measuring its input's bitrate
            ready.append(source_report(desc))
            await until(lambda: desc.infohash in registry.streams)
        finally:
            await client.close()


async def test_a_name_taken_by_another_stream_is_logged_once_not_retried() -> None:
    first, second = descriptor("one"), descriptor("two")
    async with running(FakeRegistry()) as registry:
        endpoint = RegistryEndpoint(registry.url, registry.token)
        one = RegistryClient(endpoint, lambda: source_report(first), dict)
        two = RegistryClient(endpoint, lambda: source_report(second, "127.0.0.1:7765"), dict)
        one.start()
        try:
            await until(lambda: first.infohash in registry.streams)
            two.start()
            await until(lambda: len([h for h in registry.heartbeats if h[0] == two.node_id]) >= 2)
            posts = [r for r in registry.requests if r == ("POST", "/api/streams")]
            assert len(posts) == 2  # one each: the refused one is not posted again with every heartbeat
            assert second.infohash not in registry.streams
        finally:
            await one.close()
            await two.close()


async def test_directory_resolves_a_name_to_descriptor_and_peers() -> None:
    desc = descriptor()
    async with running(FakeRegistry()) as registry:
        endpoint = RegistryEndpoint(registry.url, registry.token)
        source = RegistryClient(endpoint, lambda: source_report(desc), dict)
        support = RegistryClient(endpoint, lambda: NodeReport(role="support", address="127.0.0.2:8621",
                                 http=None, version="t", content_ids=(desc.infohash,)), dict)  # fmt: skip
        start = RegistryClient(endpoint, lambda: NodeReport(role="start", address="127.0.0.3:8621",
                               http=None, version="t", content_ids=(desc.infohash,)), dict)  # fmt: skip
        for client in (source, support, start):
            client.start()
        try:
            await until(lambda: len(registry.live()) == 3 and desc.infohash in registry.streams)
            directory = StreamDirectory(RegistryEndpoint(registry.url))  # reads need no token
            hint = await directory.hint("news")
            assert hint is not None
            assert hint.descriptor == desc
            assert set(hint.peers) == {("127.0.0.1", 7764), ("127.0.0.2", 8621)}
            assert hint.startup_nodes == (("127.0.0.3", 8621),)
            by_id = await directory.hint(desc.infohash.upper())
            assert by_id == hint
            assert directory.lookups == 1, "the name's answer is cached for its content id too"
            assert await directory.hint("nobody") is None
        finally:
            for client in (source, support, start):
                await client.close()


async def test_directory_refuses_a_transport_file_that_is_not_the_streams() -> None:
    real, other = descriptor("real"), descriptor("other")
    async with running(FakeRegistry()) as registry:
        registry.nodes["n"] = {"node_id": "n", "role": "source", "state": "live", "last_seen": time.time()}
        body = StreamReport(content_id=real.infohash, name="news", title="x", transport=other.encode()).body("n")
        registry.streams[real.infohash] = body  # a registry that lies about the transport file
        directory = StreamDirectory(RegistryEndpoint(registry.url))
        assert await directory.hint("news") is None
        assert await directory.hint(real.infohash) is None
        assert directory.failures == 2


async def test_figures_the_registry_refuses_do_not_silence_the_node() -> None:
    async with running(FakeRegistry(misbehave="refuse-figures")) as registry:
        client = RegistryClient(RegistryEndpoint(registry.url, registry.token), lambda: source_report(descriptor()),
                                lambda: {"delay_s": -1.0})  # fmt: skip
        client.start()
        try:
            await until(lambda: len(registry.heartbeats) >= 2)  # on time, without the figures
            assert all(body["figures"] == {} for _, body in registry.heartbeats)
            assert client.schedule.failures == 0
        finally:
            await client.close()


class _Recorder:
    def __init__(self) -> None:
        self.candidates: list[tuple[str, int]] = []
        self.startup: list[tuple[str, int]] = []
        self.dials = 0

    # the swarm's, the membership's and the host's methods refresh_peers calls
    def add_candidates(self, addresses: Iterable[tuple[str, int]]) -> None:
        self.candidates += list(addresses)

    def add_startup_nodes(self, addresses: Iterable[tuple[str, int]]) -> None:
        self.startup += list(addresses)

    def dial_now(self, swarm: object) -> None:
        del swarm
        self.dials += 1


class _Engine:
    """What refresh_peers reads of the engine (a class of our own: the directory is kept in a weak map)."""

    def __init__(self, broadcasts: dict[bytes, object], host: _Recorder) -> None:
        self.broadcasts = broadcasts
        self.host = host


async def test_playing_broadcasts_get_the_registrys_new_peers() -> None:
    desc = descriptor()
    recorder = _Recorder()
    broadcast = SimpleNamespace(swarm=recorder, membership=recorder)
    engine = _Engine(broadcasts={desc.content_id: broadcast}, host=recorder)
    async with running(FakeRegistry()) as registry:
        endpoint = RegistryEndpoint(registry.url, registry.token)
        attach(cast("Engine", engine), StreamDirectory(RegistryEndpoint(registry.url)))
        source = RegistryClient(endpoint, lambda: source_report(desc), dict)
        source.start()
        refresher = asyncio.create_task(refresh_peers(cast("Engine", engine), interval=0.2))
        try:
            await until(lambda: ("127.0.0.1", 7764) in recorder.candidates)
            # A support node that registers later is found by the next refresh (after the 10 s cache).
            late = RegistryClient(endpoint, lambda: NodeReport(role="start", address="127.0.0.9:8621", http=None,
                                  version="t", content_ids=(desc.infohash,)), dict)  # fmt: skip
            late.start()
            await until(lambda: ("127.0.0.9", 8621) in recorder.startup, timeout=30)
            await late.close()
        finally:
            refresher.cancel()
            await asyncio.gather(refresher, return_exceptions=True)
            await source.close()


class _Holder:
    def __init__(self, state: NodeState) -> None:
        self.node_state: NodeState | None = state


async def test_what_nodes_and_engines_send_is_what_the_registry_api_accepts() -> None:
    """The reports of real node state and a real engine pass the registry's own request validation."""
    desc = descriptor()
    for kind, role in (("source", "source"), ("support", "support"), ("startup", "start")):
        common = NodeCommon(port=7764, bind="127.0.0.1", upload_limit=125_000)  # not started: no bind
        host, swarm = node_host_and_swarm(common, role=Role.SOURCE if kind == "source" else Role.SUPPORT,
                                          flags=HandshakeFlags.SEEDER, peer_id=new_peer_id(), app=web.Application(),
                                          descriptor=desc)  # fmt: skip
        reporter = NodeReporter(_Holder(NodeState(kind, swarm, host, common, time.monotonic())), host="127.0.0.1",
                                stream_name="news" if kind == "source" else None)  # fmt: skip
        report = reporter.describe()
        assert report is not None
        info = validate.node_info(report.body(), "127.0.0.1")
        assert (info.role, info.capacity_bps, info.content_ids) == (role, 1_000_000, (desc.infohash,))
        beat = validate.heartbeat({"content_ids": list(report.content_ids), "figures": reporter.figures()})
        assert {"cpu_percent", "rss_bytes", "peers", "upload_bps", "download_bps"} <= set(beat.figures)
        assert beat.stream_figures is not None
        assert set(beat.stream_figures) == {desc.infohash}
        if kind == "source":
            (stream,) = report.streams
            posted = validate.stream_info(stream.body(str(uuid.uuid4())))
            assert (posted.name, posted.bitrate, posted.content_id) == ("news", 2_000_000, desc.infohash)
        else:
            assert report.streams == ()
        swarm.store.close()
    engine = Engine(EngineConfig(port=0, bind="127.0.0.1"))
    await engine.start()
    try:
        broadcast = await engine.join(desc.content_id, descriptor=desc)
        broadcast.startup_seconds.observe(0.6)
        broadcast.startup_seconds.observe(1.0)
        reporter_e = EngineReporter(host="127.0.0.1", http="http://127.0.0.1:6878", engine=engine)
        report = reporter_e.describe()
        assert report is not None
        assert validate.node_info(report.body(), None).content_ids == (desc.infohash,)
        beat = validate.heartbeat({"content_ids": list(report.content_ids), "figures": reporter_e.figures()})
        assert beat.stream_figures is not None
        assert beat.stream_figures[desc.infohash]["startup_s"] == 0.8  # the mean of the players' waits
        assert beat.stream_figures[desc.infohash]["viewers"] == 0
    finally:
        await engine.close()


def test_a_broadcasters_channel_is_a_stream_the_registry_api_accepts() -> None:
    first, second = descriptor("source"), descriptor("low")
    channel = Channel(name="hello_world", title="hello_world", renditions=(
        Rendition(name="source", bandwidth=2_000_000, transport=first.encode(), width=320, height=180),
        Rendition(name="P144p30fps16x9", bandwidth=400_000, transport=second.encode()),
    ))  # fmt: skip
    report = channel_report(channel, origin="http://203.0.113.7:8935")
    posted = validate.stream_info(report.body(str(uuid.uuid4())))
    assert (posted.content_id, posted.name, posted.bitrate) == (channel.channel_id.hex(), "hello_world", 2_000_000)
    assert posted.renditions is not None
    assert [r["content_id"] for r in posted.renditions] == [first.infohash, second.infohash]
    # Each rendition's playlist on the broadcaster's origin: the watch page's HLS when there is no engine.
    assert [r["hls"] for r in posted.renditions] == ["http://203.0.113.7:8935/stream/hello_world/source.m3u8",
                                                     "http://203.0.113.7:8935/stream/hello_world/P144p30fps16x9.m3u8"]
