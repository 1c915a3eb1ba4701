"""The P2P pieces that need no process: the broadcaster's --p2p flags, the rendition node's command line and
the channel it writes, and the engine's channel directory and master playlist (no sockets)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from swarmcast.broadcaster.p2p import P2PBroadcaster, P2PConfig, RenditionNode, StreamNodes
from swarmcast.channel import Channel, Rendition
from swarmcast.cli import build_parser, main
from swarmcast.commands.p2p_options import p2p_config_from_args, ts_base_url
from swarmcast.commands.preflight import UsageError
from swarmcast.http import channel_out
from swarmcast.http.channel_out import MAX_CHANNELS, MAX_KNOWN_RENDITIONS, ChannelDirectory, decode_location
from swarmcast.node.joiner import JoinError
from swarmcast.transport import Descriptor


@dataclass(frozen=True)
class Info:
    name: str
    width: int | None = 256
    height: int | None = 144
    bandwidth: int = 400_000
    codecs: str | None = "avc1.42c01e,mp4a.40.2"
    frame_rate: float | None = 30.0


def _descriptor(name: str) -> Descriptor:
    return Descriptor(name=name, title=name, piece_size=18800, bitrate=50_000,
                      public_key=hashlib.sha256(name.encode()).digest())  # fmt: skip


def _channel(name: str = "hello", count: int = 2) -> Channel:
    return Channel(name=name, title=name, renditions=tuple(
        Rendition(name=f"r{i}", bandwidth=100_000 * (count - i), transport=_descriptor(f"{name}-r{i}").encode(),
                  width=320 - 64 * i, height=180 - 36 * i, codecs="avc1.42c01e,mp4a.40.2", frame_rate=29.97,
                  url=f"http://127.0.0.1:{7800 + i}/app/get_transport_file")
        for i in range(count)))  # fmt: skip


# -- flags -----------------------------------------------------------------------------------------------------


def _parse(*extra: str) -> argparse.Namespace:
    return build_parser().parse_args(["broadcaster", *extra])


def test_p2p_flags_defaults_and_config(tmp_path: Path) -> None:
    args = _parse("--p2p", "--publish-dir", str(tmp_path / "pub"), "--tracker", "udp://t.example:6969",
                  "--tracker", "udp://t.example:6969", "--p2p-service-access-token", "tok")  # fmt: skip
    config = p2p_config_from_args(args, ts_base_url("0.0.0.0", 8935))
    assert config.ts_base_url == "http://127.0.0.1:8935"
    assert (config.port_base, config.max_nodes, config.bind) == (7800, 32, "127.0.0.1")
    assert config.metadata_dir == config.publish_dir == tmp_path / "pub"
    assert config.trackers == ("udp://t.example:6969",)
    assert config.extra_args == ("--service-access-token", "tok")
    assert config.url_host == "127.0.0.1"
    assert ts_base_url("::", 1) == "http://[::1]:1"


def test_port_range_past_65535_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse("--p2p", "--p2p-port-base", "65530", "--p2p-max-nodes", "10", "--publish-dir", str(tmp_path))
    with pytest.raises(UsageError, match="--p2p-port-base: 65530: with --p2p-max-nodes 10 the ports run to 65539"):
        p2p_config_from_args(args, "http://127.0.0.1:8935")
    code = main(["broadcaster", "--rtmp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--p2p",
                 "--p2p-port-base", "65530", "--p2p-max-nodes", "10", "--publish-dir", str(tmp_path)])  # fmt: skip
    assert code == 2
    assert "ports run to 65539, past 65535" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--p2p-max-nodes", "0", "--p2p-max-nodes"), ("--p2p-max-nodes", "1001", "--p2p-max-nodes"),
    ("--p2p-port-base", "70000", "--p2p-port-base"), ("--p2p-bind", "example.org", "not an IP address"),
    ("--tracker", "ftp://x", "--tracker"),
])  # fmt: skip
def test_bad_p2p_flags(flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _parse("--p2p", flag, value)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_publish_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    args = _parse("--p2p", "--publish-dir", str(tmp_path / "file"))
    with pytest.raises(UsageError, match="--publish-dir"):
        p2p_config_from_args(args, "http://127.0.0.1:8935")


# -- the rendition node and the channel it is listed in ----------------------------------------------------------


async def test_node_command_line_and_channel_file(tmp_path: Path) -> None:
    config = P2PConfig(ts_base_url="http://127.0.0.1:8935/", publish_dir=tmp_path / "pub", metadata_dir=tmp_path,
                       trackers=("udp://t:1",), extra_args=("--service-access-token", "x"))  # fmt: skip
    p2p = P2PBroadcaster(config)
    nodes = StreamNodes(p2p, "hello", [Info("source", 640, 360), Info("P144p30fps16x9", frame_rate=None)])
    node = nodes.nodes[0]
    args = node.args(7801)
    assert args[:2] == ["node", "source"]
    assert args[args.index("--source") + 1] == "http://127.0.0.1:8935/stream/hello/source.ts"
    assert args[args.index("--name") + 1] == "hello-source"
    assert args[args.index("--metadata-dir") + 1] == str(tmp_path / "hello" / "source")
    assert args[args.index("--tracker") + 1] == "udp://t:1" and args[-2:] == ["--service-access-token", "x"]
    # No node up: no channel. The second up alone, then both, in ladder order.
    nodes.renditions_changed()
    assert nodes.channel is None and not nodes.channel_path.exists()
    second = nodes.nodes[1]
    second.port, second.transport = 7802, _descriptor("hello-P144p30fps16x9").encode()
    nodes.renditions_changed()
    assert nodes.channel is not None and [r.name for r in nodes.channel.renditions] == ["P144p30fps16x9"]
    node.port, node.transport = 7801, _descriptor("hello-source").encode()
    nodes.renditions_changed()
    written = Channel.decode(nodes.channel_path.read_bytes())
    assert [r.name for r in written.renditions] == ["source", "P144p30fps16x9"]
    assert written.renditions[0].url == "http://127.0.0.1:7801/app/get_transport_file"
    assert written.renditions[0].resolution == (640, 360) and written.renditions[1].frame_rate is None
    await p2p.close()


def test_wildcard_bind_writes_no_url_unless_a_public_host_is_given(tmp_path: Path) -> None:
    config = P2PConfig(ts_base_url="http://h:1", publish_dir=tmp_path, metadata_dir=tmp_path, bind="0.0.0.0")
    nodes = StreamNodes(P2PBroadcaster(config), "s", [Info("source")])
    node: RenditionNode = nodes.nodes[0]
    node.port = 7800
    assert node.url is None
    config = P2PConfig(ts_base_url="http://h:1", publish_dir=tmp_path, metadata_dir=tmp_path, bind="::",
                       public_host="2001:db8::1")  # fmt: skip
    node = StreamNodes(P2PBroadcaster(config), "s", [Info("source")]).nodes[0]
    node.port = 7800
    assert node.url == "http://[2001:db8::1]:7800/app/get_transport_file"


async def test_node_count_is_bounded(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    config = P2PConfig(ts_base_url="http://127.0.0.1:9", publish_dir=tmp_path, metadata_dir=tmp_path, max_nodes=3)
    p2p = P2PBroadcaster(config)
    # Stand-in supervisors: the bound is decided before any process would start.
    started: list[str] = []
    monkeypatch.setattr(StreamNodes, "start", lambda self, after: started.append(self.stream_id))
    p2p.on_stream_started("a", [Info("source"), Info("P1")])
    p2p.on_stream_started("b", [Info("source"), Info("P1")])
    p2p.on_stream_started("c", [Info("source")])
    assert started == ["a", "b"]
    assert [len(s.nodes) for s in p2p.streams.values()] == [2, 1]
    assert "c" not in p2p.streams
    assert "not broadcasting P1 over P2P" in caplog.text
    await asyncio.sleep(0)


# -- the engine's side ------------------------------------------------------------------------------------------


def test_decode_location_tells_a_channel_from_a_transport_file() -> None:
    channel = _channel()
    assert decode_location(channel.encode()) == channel
    descriptor = _descriptor("x")
    assert decode_location(descriptor.encode()) == descriptor
    with pytest.raises(JoinError, match="channel file rendition 'r0' key 'bandwidth'"):
        decode_location(channel.encode().replace(b"9:bandwidthi200000e", b"9:bandwidthi0e"))
    with pytest.raises(JoinError, match="transport file"):
        decode_location(b"d1:ai1ee")


def test_directory_remembers_renditions_with_their_hints_and_is_bounded() -> None:
    directory = ChannelDirectory()
    channel = _channel()
    first = directory.add(channel)
    assert first.descriptor == channel.renditions[0].descriptor
    assert first.node == ("127.0.0.1", 7800) and first.trackers == ("http://127.0.0.1:7800/announce",)
    second = directory.rendition(channel.renditions[1].content_id)
    assert second is not None and second.node == ("127.0.0.1", 7801)
    assert directory.channel(channel.channel_id) == channel
    for i in range(MAX_CHANNELS + 5):
        directory.add(_channel(f"c{i}", 4))
    assert directory.channel(channel.channel_id) is None  # least recently used: gone
    assert len(directory._channels) == MAX_CHANNELS
    assert len(directory._renditions) == MAX_KNOWN_RENDITIONS


def test_master_playlist_of_a_channel() -> None:
    channel = _channel()
    response = channel_out.master_response(channel)
    assert response.content_type == "application/vnd.apple.mpegurl"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.text == (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=200000,RESOLUTION=320x180,CODECS="avc1.42c01e,mp4a.40.2",FRAME-RATE=29.970\n'
        f"manifest.m3u8?infohash={channel.renditions[0].content_id.hex()}\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=100000,RESOLUTION=256x144,CODECS="avc1.42c01e,mp4a.40.2",FRAME-RATE=29.970\n'
        f"manifest.m3u8?infohash={channel.renditions[1].content_id.hex()}\n"
    )
