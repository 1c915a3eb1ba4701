"""Streaming-utils' recommended layout on four "servers", and a broadcast restored after its server is lost.

127.0.0.2 runs a private source, 127.0.0.3 and 127.0.0.4 one support node each, all started by ``swarmcast fleet``
from one controller (``swarmcast fleet receiver``, which answers each server with its own support list, by the
requesting address). An engine plays through a support node. The monitoring and metadata pushes reach the
receiver. Then the source's server is lost (its node SIGKILLed, its directories deleted), the controller moves the
stream to 127.0.0.5, which restores it from the receiver's metadata (``start-sources --get-remote-metadata``), and
the support servers' next run follows it: same content id, piece numbers that continue, and the player keeps
decoding through it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import stat
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from swarmcast.fleet.config import load_app_config
from swarmcast.fleet.controller import node_monitor
from tests.integration.chain import HOST, decode_video, engine
from tests.integration.test_fleet_nodes import (
    fleet,
    monitor_with_a_piece,
    ok,
    signal_url,
    source_entry,
    stopped_at_end,
    write_root,
)
from tests.procs import free_port, swarmcast_process

SERVER_A, SERVER_B, SERVER_C, SERVER_D = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"
TOKEN = "ctl-token-1234"
NODE_TOKEN = "node-token-5678"  # node_access_token: every node's web interface is /app/NODE_TOKEN/...
MAX_PLAY = 90.0  # seconds: the player's read is bounded even if the test hangs


@contextlib.contextmanager
def receiver(tmp: Path, port: int) -> Iterator[Path]:
    store = tmp / "receiver"
    args = ["fleet", "receiver", "--port", str(port), "--bind", HOST, "--dir", str(store), "--token", TOKEN,
            "--source-config", str(tmp / "ctl" / "source.json"),
            "--support-config", str(tmp / "ctl" / "support.json")]  # fmt: skip
    with swarmcast_process(args, stderr_path=tmp / "receiver.log", wait_port=(HOST, port)):
        yield store


class Player:
    """Reads the engine's stream in the background, keeping when each chunk came."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.chunks: list[tuple[float, bytes]] = []
        self.done = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        timeout = aiohttp.ClientTimeout(total=MAX_PLAY + 30, sock_read=40)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(self.url) as response:
            assert response.status == 200, await response.text()
            deadline = time.monotonic() + MAX_PLAY
            async for chunk in response.content.iter_chunked(64 * 1024):
                self.chunks.append((time.monotonic(), chunk))
                if self.done.is_set() or time.monotonic() > deadline:
                    return

    def since(self, t: float) -> bytes:
        data = b"".join(c for at, c in self.chunks if at >= t)
        for i in range(min(len(data), 188 * 20)):  # realign on TS packets
            if data[i] == 0x47 and data[i + 188 : i + 189] == b"\x47" and data[i + 376 : i + 377] == b"\x47":
                return data[i:]
        return b""

    async def wait_bytes_after(self, t: float, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while sum(len(c) for at, c in self.chunks if at >= t) < count:
            if self.task.done():
                self.task.result()
                raise AssertionError("the player's stream ended")
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {count} bytes reached the player within {timeout} s after t")
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        self.done.set()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def run(config: Path, *args: str) -> str:
    return ok(await asyncio.to_thread(fleet, config, *args))


async def test_four_servers_restore_after_losing_the_source_server(tmp_path: Path) -> None:
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    rport, p_source, p_b, p_c = free_port(), free_port(), free_port(), free_port()
    base = f"http://{HOST}:{rport}"
    tracker = f"{HOST}:{free_port()}"  # every server's config names the same trackers (they are in the content id)

    def root(name: str, ip: str) -> Path:
        return write_root(tmp_path / name, source_node=f"{base}/source_node?token={TOKEN}",
                          support_node=f"{base}/support_node?token={TOKEN}", monitor=f"{base}/monitor?token={TOKEN}",
                          metadata=f"{base}/metadata?token={TOKEN}", bind=ip,
                          tracker=tracker, token=NODE_TOKEN)  # fmt: skip

    a, b, c, d = root("a", SERVER_A), root("b", SERVER_B), root("c", SERVER_C), root("d", SERVER_D)

    def supports(source_ip: str) -> None:
        (ctl / "support.json").write_text(json.dumps({
            SERVER_B: [{"port": p_b, "source_ip": source_ip, "source_port": p_source, "extended_logging": 0}],
            SERVER_C: [{"port": p_c, "source_ip": source_ip, "source_port": p_source, "extended_logging": 0}],
        }))  # fmt: skip

    with signal_url(tmp_path) as url, receiver(tmp_path, rport) as store, stopped_at_end(a, b, c, d):
        (ctl / "source.json").write_text(json.dumps([source_entry(
            "ch1", p_source, url, private_node=1, extended_logging=0,
            upload_to=[f"{SERVER_B}:{p_b}", f"{SERVER_C}:{p_c}"])]))  # fmt: skip
        supports(SERVER_A)
        assert f"up: source {p_source} (ch1)" in await run(a, "start-sources")
        out_b, out_c = await asyncio.gather(run(b, "start-support"), run(c, "start-support"))
        assert f"up: support {p_b} ({SERVER_A}:{p_source})" in out_b
        assert f"up: support {p_c} ({SERVER_A}:{p_source})" in out_c
        # Each server got its own support list (the receiver answers by the requesting address).
        assert f"{p_c}" not in out_b and f"{p_b}" not in out_c

        async with contextlib.AsyncExitStack() as stack:
            api = stack.enter_context(engine(tmp_path))
            transport = f"http://{SERVER_B}:{p_b}/app/{NODE_TOKEN}/get_transport_file?format=raw"
            player = Player(f"{api}/ace/getstream?url={urllib.parse.quote(transport, safe='')}")
            stack.push_async_callback(player.stop)
            await player.wait_bytes_after(0.0, 20_000, 60)

            # Monitoring and metadata reach the receiver.
            assert "monitor: 1 source node(s) sent" in await run(a, "monitor", "--node-type", "source")
            assert "monitor: 1 support node(s) sent" in await run(b, "monitor", "--node-type", "support")
            pushed = await run(a, "update-metadata")
            assert "update-metadata: sent 1 stream(s)" in pushed and "token=***" in pushed, pushed
            assert "PRIVATE KEY" not in pushed
            kept = json.loads((store / "metadata" / "ch1.json").read_text())
            key = (tmp_path / "a" / "tmp" / "metadata" / "ch1.sauth").read_text()
            assert kept["private_key"] == key
            assert stat.S_IMODE((store / "metadata" / "ch1.json").stat().st_mode) == 0o600
            monitored = json.loads((store / "monitor" / f"{SERVER_A}_{p_source}.json").read_text())
            assert monitored["type"] == "source" and monitored["port"] == p_source
            assert (store / "monitor" / f"{SERVER_B}_{p_b}.json").is_file()
            before = await monitor_with_a_piece(a, p_source)
            content_id, last_piece = before["infohash"], before["last_piece"]
            assert isinstance(last_piece, int)

            # Server A is lost: its node killed, its directories gone.
            pid = int(next((tmp_path / "a" / "tmp" / "run").glob("*.pid")).read_text())
            os.kill(pid, signal.SIGKILL)
            shutil.rmtree(tmp_path / "a")
            lost_at = time.monotonic()

            # The controller moves the stream to D, which restores it from the receiver's metadata.
            out = await run(d, "start-sources", "--get-remote-metadata")
            assert f"restore: ch1: key written to {tmp_path}/d/tmp/metadata/ch1.sauth" in out, out
            assert f"up: source {p_source} (ch1)" in out, out
            assert "PRIVATE KEY" not in out
            assert (tmp_path / "d" / "tmp" / "metadata" / "ch1.sauth").read_text() == key
            supports(SERVER_D)
            out_b, out_c = await asyncio.gather(run(b, "start-support"), run(c, "start-support"))
            for out, port in ((out_b, p_b), (out_c, p_c)):
                assert f"restart: support {port} ({SERVER_D}:{p_source}, support_node[0]): command line changed " \
                       "(--download-from, --url)" in out, out  # fmt: skip
            restored_at = time.monotonic()

            after = node_monitor(load_app_config(d), p_source)
            assert after["infohash"] == content_id, "same content id on the new server"
            # The player keeps decoding: video arrives after the support nodes follow the new source.
            await player.wait_bytes_after(restored_at, 75_000, 60)  # 3 s of the 25 kB/s stream
            frames = decode_video(player.since(restored_at))
            assert len(frames) >= 10, f"{len(frames)} frames after the restore"
            after = node_monitor(load_app_config(d), p_source)
            assert isinstance(after["last_piece"], int) and after["last_piece"] > last_piece, (last_piece, after)
            assert lost_at < restored_at
