"""Failover benchmark: how long a player stalls when the source's input goes away, or when the source dies.

Both scenarios run real processes on loopback and one player (an HTTP reader in this process) on an engine that
follows a support node: ``testsrc -> source [+ standby] -> support -> engine -> player``.

- ``--scenario outage --off 15``: testsrc is killed, and restarted on the same port ``--off`` seconds later.
  Printed: the player's stall (the longest gap between two chunks it received), and the stall after the input
  returned (from the moment the restarted testsrc accepts connections to the first byte of it at the player),
  against the bound ``--source-reconnect-interval`` + one GOP (1 s in the test signal).
- ``--scenario standby``: a second source node runs with ``--standby-for`` the primary (its .sauth copied), the
  support node is given only the primary's transport file; the primary gets ``kill -9``. Printed: the player's
  stall, when the standby took over (from its /app/standby status), the content ids, the primary's last piece
  the support node held and the standby's first.

    python bench/failover.py --scenario outage --off 15
    python bench/failover.py --scenario standby [--takeover-after 2] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.peerclient import TestPeer  # the real protocol as a test peer: reads a node's WINDOW

from bench.common import HOST, Child, Processes, free_port
from swarmcast.media.ts import TS_PACKET_SIZE, TsAnalyzer
from swarmcast.transport import Descriptor
from swarmcast.wire.messages import HandshakeFlags, PieceFlags

GOP_SECONDS = 1.0  # testsrc: a keyframe every second


@dataclass
class Player:
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (wall time, bytes)
    stamps: list[tuple[float, float]] = field(default_factory=list)  # (stamp, arrival), wall clock
    error: str | None = None
    _analyzer: TsAnalyzer = field(default_factory=TsAnalyzer)
    _pending: bytes = b""

    def feed(self, data: bytes, now: float) -> None:
        self.arrivals.append((now, len(data)))
        buf = self._pending + data
        usable = len(buf) - len(buf) % TS_PACKET_SIZE
        for offset in range(0, usable, TS_PACKET_SIZE):
            info = self._analyzer.feed_packet(buf[offset : offset + TS_PACKET_SIZE])
            if info.clock_us is not None:
                self.stamps.append((info.clock_us / 1e6, now))
        self._pending = buf[usable:]

    def longest_gap(self, since: float) -> tuple[float, float]:
        """(gap seconds, wall time it began) of the longest silence between chunks that ended after ``since``."""
        best = (0.0, since)
        for (a, _), (b, _) in zip(self.arrivals, self.arrivals[1:], strict=False):
            if b >= since and b - a > best[0]:
                best = (b - a, a)
        return best

    def first_arrival_after(self, wall: float) -> float | None:
        return next((at for at, _ in self.arrivals if at >= wall), None)


async def play(url: str, seconds: float, player: Player) -> None:
    timeout = aiohttp.ClientTimeout(total=seconds + 120, sock_read=90)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
            if response.status != 200:
                player.error = f"HTTP {response.status}: {await response.text()}"
                return
            deadline = time.monotonic() + seconds
            async for chunk in response.content.iter_chunked(64 * 1024):
                player.feed(chunk, time.time())
                if time.monotonic() >= deadline:
                    return
            player.error = "the engine ended the stream"
    except (aiohttp.ClientError, TimeoutError) as error:
        player.error = f"{type(error).__name__}: {error}"


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
        return True
    return False


async def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


async def _json(url: str) -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, session.get(url) as r:
        return await r.json()


async def _window(port: int, content_id: bytes) -> dict[int, PieceFlags]:
    peer = await TestPeer.connect(HOST, port, content_id, flags=HandshakeFlags.SEEDER)
    try:
        window = await peer.window()
        if window is None:
            return {}
        return {window.first + i: PieceFlags(int(window.random_access[i])) for i, bit in enumerate(window.have) if bit}
    finally:
        peer.close()


class Chain:
    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.workdir = workdir
        self.args = args
        self.procs = Processes(workdir)
        self.signal_port = free_port()

    def testsrc(self, name: str = "testsrc") -> Child:
        return self.procs.spawn(name, "testsrc", self.signal_port, "testsrc", "--port", str(self.signal_port),
                                "--bitrate", self.args.bitrate, "--size", "320x180", "--fps", "25")  # fmt: skip

    def source(self, name: str, meta: Path, *extra: str) -> Child:
        port = free_port()
        return self.procs.spawn(
            name, "source", port, "node", "source", "--bind", HOST, "--port", str(port),
            "--source", f"http://{HOST}:{self.signal_port}/stream.ts", "--title", "Failover", "--name", "fo",
            "--publish-dir", str(meta), "--metadata-dir", str(meta), "--pid-file-dir", str(self.workdir),
            "--source-reconnect-interval", str(self.args.reconnect_interval), *extra,
        )  # fmt: skip

    def support(self, transport_url: str) -> Child:
        port = free_port()
        return self.procs.spawn("support", "support", port, "node", "support", "--bind", HOST, "--port", str(port),
                                "--url", transport_url, "--pid-file-dir", str(self.workdir))  # fmt: skip

    def engine(self) -> tuple[Child, int]:
        http_port, p2p = free_port(), free_port()
        child = self.procs.spawn("engine", "engine", http_port, "engine", "--http-port", str(http_port),
                                 "--port", str(p2p), "--bind", HOST, "--pid-file-dir", str(self.workdir))  # fmt: skip
        return child, http_port


async def _start_player(
    chain: Chain, support: Child, warmup: float, seconds: float
) -> tuple[Player, asyncio.Task[None]]:
    engine, http_port = chain.engine()
    chain.procs.wait_ports([engine], 30)
    player = Player()
    url = f"http://{HOST}:{http_port}/ace/getstream?url=http://{HOST}:{support.port}/app/get_transport_file"
    task = asyncio.create_task(play(url, seconds, player))
    await _wait(lambda: len(player.arrivals) > 10, 30, "the player's first bytes")
    await asyncio.sleep(warmup)
    return player, task


async def outage(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    chain = Chain(workdir, args)
    try:
        testsrc = chain.testsrc()
        chain.procs.wait_ports([testsrc], 30)
        source = chain.source("source", workdir / "meta")
        chain.procs.wait_ports([source], 30)
        support = chain.support(f"http://{HOST}:{source.port}/app/get_transport_file")
        chain.procs.wait_ports([support], 30)
        player, task = await _start_player(chain, support, args.warmup, args.warmup + args.off + args.after + 5)
        os.kill(testsrc.process.pid, signal.SIGKILL)
        testsrc.process.wait()
        off_at = time.time()
        await asyncio.sleep(args.off)
        restarted = chain.testsrc("testsrc2")
        await _wait(lambda: _listening(chain.signal_port), 30, "testsrc to listen again")
        back_at = time.time()
        await task
        first_after = player.first_arrival_after(back_at)
        gap, gap_from = player.longest_gap(off_at - 1)
        stamps_after = [s for s, at in player.stamps if s > off_at]
        chain.procs.stop(restarted)
        return {
            "scenario": "outage", "off_s": round(back_at - off_at, 2), "error": player.error,
            "stall_s": round(gap, 2), "stall_began_after_kill_s": round(gap_from - off_at, 2),
            "stall_after_return_s": None if first_after is None else round(first_after - back_at, 2),
            "first_keyframe_after_return_drawn_s": round(stamps_after[0] - back_at, 2) if stamps_after else None,
            "bound_s": args.reconnect_interval + GOP_SECONDS,
        }  # fmt: skip
    finally:
        chain.procs.stop_all()


async def standby(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    chain = Chain(workdir, args)
    try:
        testsrc = chain.testsrc()
        chain.procs.wait_ports([testsrc], 30)
        primary = chain.source("primary", workdir / "meta")
        chain.procs.wait_ports([primary], 30)
        descriptor = Descriptor.decode((workdir / "meta" / "fo.acelive").read_bytes())
        (workdir / "standby-meta").mkdir()
        shutil.copy(workdir / "meta" / "fo.sauth", workdir / "standby-meta" / "fo.sauth")
        backup = chain.source("standby", workdir / "standby-meta", "--standby-for", f"{HOST}:{primary.port}",
                              "--standby-takeover-after", str(args.takeover_after))  # fmt: skip
        chain.procs.wait_ports([backup], 30)
        support = chain.support(f"http://{HOST}:{primary.port}/app/get_transport_file")
        chain.procs.wait_ports([support], 30)
        player, task = await _start_player(chain, support, args.warmup, args.warmup + args.after + 5)
        before = await _window(support.port, descriptor.content_id)
        os.kill(primary.process.pid, signal.SIGKILL)
        primary.process.wait()
        killed_at = time.time()
        status_url = f"http://{HOST}:{backup.port}/app/standby"
        took_over_at: float | None = None
        while time.time() - killed_at < 30:
            if (await _json(status_url))["result"]["state"] == "active":
                took_over_at = time.time()
                break
            await asyncio.sleep(0.05)
        await task
        status = (await _json(status_url))["result"]
        after = await _window(support.port, descriptor.content_id)
        standby_descriptor = Descriptor.decode((workdir / "standby-meta" / "fo.acelive").read_bytes())
        first_signed = status["first_signed"]
        primary_last = max((i for i in after if first_signed is None or i < first_signed), default=None)
        gap, gap_from = player.longest_gap(killed_at - 1)
        return {
            "scenario": "standby", "error": player.error, "stall_s": round(gap, 2),
            "stall_began_after_kill_s": round(gap_from - killed_at, 2),
            "takeover_s": None if took_over_at is None else round(took_over_at - killed_at, 2),
            "takeover_after_flag_s": args.takeover_after,
            "content_id_primary": descriptor.infohash, "content_id_standby": standby_descriptor.infohash,
            "primary_newest_before_kill": max(before) if before else None,
            "primary_last_piece": primary_last, "standby_first_piece": first_signed,
            "standby_first_piece_random_access": bool(after.get(first_signed)),
            "support_holds_contiguous": first_signed is not None and primary_last == first_signed - 1,
        }  # fmt: skip
    finally:
        chain.procs.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("outage", "standby"), required=True)
    parser.add_argument("--off", type=float, default=15.0, help="outage: seconds testsrc stays off (default 15)")
    parser.add_argument("--reconnect-interval", type=float, default=1.0,
                        help="the source's --source-reconnect-interval (default 1, the flag's default)")  # fmt: skip
    parser.add_argument("--takeover-after", type=float, default=2.0,
                        help="standby: --standby-takeover-after (default 2, the flag's default)")  # fmt: skip
    parser.add_argument("--warmup", type=float, default=6.0, help="seconds of playing before the event")
    parser.add_argument("--after", type=float, default=10.0, help="seconds of playing after the event")
    parser.add_argument("--bitrate", default="1M")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--out", type=Path, help="keep logs and result.json here (default: a temporary directory)")
    args = parser.parse_args()
    scenario = outage if args.scenario == "outage" else standby
    results = []
    for run in range(args.runs):
        base = args.out / f"run{run}" if args.out else Path(tempfile.mkdtemp(prefix="failover-"))
        base.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(scenario(base, args))
        results.append(result)
        print(json.dumps(result))
        (base / "result.json").write_text(json.dumps(result, indent=2))
    stalls = [r["stall_s"] for r in results]
    line = f"{args.scenario}: player stall {', '.join(f'{s:.2f}' for s in stalls)} s"
    if len(stalls) > 1:
        line += f" (median {statistics.median(stalls):.2f} s)"
    if args.scenario == "outage":
        after = [r["stall_after_return_s"] for r in results]
        line += f"; after the input returned: {', '.join(f'{a:.2f}' for a in after if a is not None)} s"
        line += f" (bound: interval {args.reconnect_interval:g} s + GOP {GOP_SECONDS:g} s)"
    else:
        line += f"; takeover {', '.join(str(r['takeover_s']) for r in results)} s after kill -9"
    print(line)


if __name__ == "__main__":
    main()
