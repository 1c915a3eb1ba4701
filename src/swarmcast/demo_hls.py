"""``swarmcast demo --hls``: RTMP -> transcoding ladder -> swarm -> HLS, on loopback, in one command.

Started as real ``swarmcast`` processes in a temporary directory (the same Processes helper as ``swarmcast demo``):
a broadcaster with a small ladder and ``--p2p`` (one source node per rendition and the channel file), the test
signal publishing to it over RTMP, and a viewer engine. The demo waits until the engine answers the channel's
master playlist, prints the URLs to open (the engine's master playlist and player page, the origin's playlists),
then a status line until Ctrl-C; whatever happens every process is stopped and the directory removed.
"""

from __future__ import annotations

import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from swarmcast.channel import Channel, ChannelError
from swarmcast.demo import HOST, DemoError, Processes, _free_port, _get_json, run_demo

STREAM_ID = "hello_world"
LADDER = "P144p30fps16x9"  # one transcoded profile beside the source: cheap enough for a laptop core
CHANNEL_TIMEOUT = 90.0  # RTMP connect, first keyframes, each node's 2 s bitrate measurement, the engine's join
MAX_NODES = 4


def _get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own loopback URL
            return int(response.status), bytes(response.read(1024 * 1024))
    except urllib.error.HTTPError as error:
        return error.code, b""
    except (urllib.error.URLError, TimeoutError, OSError):
        return 0, b""


def _wait_for(what: str, processes: Processes, check: object, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processes.check()
        result = check() if callable(check) else None
        if result:
            return result
        time.sleep(0.5)
    raise DemoError(f"{what} did not happen within {timeout:.0f} s; see the logs in {processes.workdir}")


def _status_line(channel: Channel, stats: list[object]) -> str:
    by_id = {s.get("content_id"): s for s in stats if isinstance(s, dict)}
    parts = []
    for rendition in channel.renditions:
        stat = by_id.get(rendition.content_id.hex())
        if stat is None:
            parts.append(f"{rendition.name}: not joined")
        else:
            down = int(stat.get("downloaded") or 0) // 1024
            parts.append(f"{rendition.name}: {stat.get('state')}, {stat.get('peers')} peers, {down} KiB, "
                         f"{stat.get('players')} players")  # fmt: skip
    return "engine: " + "; ".join(parts)


def run() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="swarmcast-demo-hls-"))
    processes = Processes(workdir)
    ports = {name: _free_port() for name in ("rtmp", "http", "p2p", "engine", "engine_p2p")}
    origin = f"http://{HOST}:{ports['http']}"
    channel_url = f"{origin}/stream/{STREAM_ID}.acechannel"
    print(f"swarmcast demo --hls in {workdir}")

    def start() -> Callable[[], str | None]:
        processes.start(
            "broadcaster", "broadcaster", "--rtmp-addr", f"{HOST}:{ports['rtmp']}",
            "--http-addr", f"{HOST}:{ports['http']}", "--transcoding-options", LADDER, "--segment-duration", "1",
            "--p2p", "--p2p-port-base", str(ports["p2p"]), "--p2p-max-nodes", str(MAX_NODES),
            "--publish-dir", str(workdir / "publish"), "--metadata-dir", str(workdir / "metadata"),
            wait_port=ports["http"],
        )  # fmt: skip
        processes.start("testsrc", "testsrc", "--rtmp", f"rtmp://{HOST}:{ports['rtmp']}/{STREAM_ID}",
                        wait_port=None)  # fmt: skip
        processes.start(
            "engine", "engine", "--http-port", str(ports["engine"]), "--port", str(ports["engine_p2p"]),
            "--bind", HOST, "--pid-file-dir", str(workdir), wait_port=ports["engine"],
        )  # fmt: skip

        def channel_ready() -> Channel | None:
            status, body = _get(channel_url)
            if status != 200:
                return None
            try:
                channel = Channel.decode(body)
            except ChannelError:
                return None
            return channel if len(channel.renditions) == 2 else None

        print("  waiting for every rendition's source node (RTMP -> ladder -> signed pieces) ...")
        channel = _wait_for("the channel file listing every rendition", processes, channel_ready,
                            CHANNEL_TIMEOUT)  # fmt: skip
        assert isinstance(channel, Channel)
        api = f"http://{HOST}:{ports['engine']}"
        query = urllib.parse.urlencode({"url": channel_url})
        master_url = f"{api}/ace/manifest.m3u8?{query}"
        print("  waiting for the engine's master playlist and each rendition's playlist through the swarm ...")
        _wait_for("the engine's master playlist", processes, lambda: _get(master_url, 60.0)[0] == 200, 60.0)
        for rendition in channel.renditions:
            # The variant URI the master lists; answered once the engine has cut a segment from verified pieces.
            variant = f"{api}/ace/manifest.m3u8?infohash={rendition.content_id.hex()}"
            _wait_for(f"the engine's playlist of {rendition.name}", processes,
                      lambda url=variant: _get(url, 60.0)[0] == 200, 60.0)  # fmt: skip
        print()
        print("Open in a player (VLC, mpv, ffplay) or a browser:")
        print(f"  engine, master playlist of every rendition (through the swarm): {master_url}")
        print(f"  engine, player page (hls.js):                                   {api}/player?{query}")
        print(f"  engine, MPEG-TS of the source rendition:                        {api}/ace/getstream?{query}")
        print(f"  origin, master playlist (HLS from the broadcaster):             {origin}/stream/{STREAM_ID}.m3u8")
        for rendition in channel.renditions:
            size = "x".join(map(str, rendition.resolution)) if rendition.resolution else "audio"
            label = f"origin, {rendition.name} ({size}):"
            print(f"  {label:<63} {origin}/stream/{STREAM_ID}/{rendition.name}.m3u8")
        print("Rendition broadcasts (content id, node web interface):")
        for rendition in channel.renditions:
            monitor = rendition.url.replace("/app/get_transport_file", "/app/monitor") if rendition.url else "-"
            print(f"  {rendition.name:<16} {rendition.content_id.hex()}  {monitor}")
        print(f"Channel file: {channel_url} (also {workdir / 'publish' / (STREAM_ID + '.acechannel')})")

        def status() -> str | None:
            stats = _get_json(f"{api}/app/stat").get("result")
            return _status_line(channel, stats) if isinstance(stats, list) else None

        return status

    return run_demo(workdir, processes, start)
