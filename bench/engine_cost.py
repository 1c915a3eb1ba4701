"""Engine cost: CPU and memory of viewer engines playing a 2 Mbit/s stream, measured with psutil.

    python bench/engine_cost.py --engines 8 --duration 60 --out /tmp/cost

``swarmcast testsrc`` -> a source node -> ``--support`` support nodes -> E viewer engines (as bench/swarm.py starts
them: each on its own loopback address, upload capped at ``--upload-multiple`` x the bitrate) and one player per
engine, an asyncio task here reading ``/ace/getstream`` and counting bytes (no parsing: the players' cost is not
the engines'). After ``--warmup`` seconds of playing, each engine's CPU time is read, again after ``--duration``
seconds: CPU % = (user + system) delta / window. Memory: RSS at the end, peak RSS (VmHWM) and USS/PSS at the end
(psutil ``memory_full_info``: USS is what the engine alone holds, RSS also counts shared library pages). The
machine's load average before and after is printed with the figures: the machine is shared, treat one run as an
indication and repeat.

``--py-spy SECONDS`` also records engine 0 with py-spy (``pip install py-spy``) during the window, as collapsed
stacks (``--format raw``, 100 samples/s, idle samples left out) in ``--out``/engine0.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import HOST, Child, Processes, free_port


def parse_rate(text: str) -> int:
    mult = {"k": 1_000, "M": 1_000_000, "G": 1_000_000_000}
    return int(float(text[:-1]) * mult[text[-1]]) if text[-1] in mult else int(text)


def engine_address(vid: int) -> str:
    return f"127.0.{1 + vid // 250}.{2 + vid % 250}"


BROADCASTER_ADMISSION = ["--max-connection-rate-per-ip", "1000", "--max-pending-per-ip", "256",
                         "--max-http-connections-per-ip", "256"]  # fmt: skip


class Player:
    def __init__(self) -> None:
        self.bytes = 0
        self.first_byte: float | None = None
        self.error: str | None = None
        self.stat_url: str | None = None
        self.stat: dict[str, Any] = {}


async def play(port: int, url: str, player: Player, until: float, session: aiohttp.ClientSession) -> None:
    quoted = urllib.parse.quote(url, safe="")
    try:
        async with session.get(f"http://{HOST}:{port}/ace/getstream?url={quoted}&format=json") as resp:
            info = (await resp.json()).get("response") or {}
        if not info:
            player.error = "no response"
            return
        player.stat_url = info["stat_url"]
        timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
        async with session.get(info["playback_url"], timeout=timeout) as resp:
            async for chunk in resp.content.iter_any():
                if player.first_byte is None:
                    player.first_byte = time.monotonic()
                player.bytes += len(chunk)
                if time.monotonic() >= until:
                    break
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as error:
        player.error = f"{type(error).__name__}: {error}"


async def poll_stat(player: Player, session: aiohttp.ClientSession) -> None:
    if player.stat_url is None:
        return
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
        async with session.get(player.stat_url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
            body = await resp.json()
        if isinstance(body.get("response"), dict):
            player.stat = body["response"]


def cpu_seconds(child: Child) -> float:
    times = psutil.Process(child.process.pid).cpu_times()
    return float(times.user + times.system)


def memory(child: Child) -> dict[str, int]:
    proc = psutil.Process(child.process.pid)
    full = proc.memory_full_info()
    status = Path(f"/proc/{child.process.pid}/status").read_text()
    hwm = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
    return {"rss": int(full.rss), "uss": int(full.uss), "pss": int(full.pss), "peak_rss": hwm}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def run(args: argparse.Namespace, procs: Processes, workdir: Path) -> dict[str, Any]:
    bitrate = parse_rate(args.bitrate)
    port = free_port()
    testsrc = procs.spawn("testsrc", "testsrc", port, "testsrc", "--port", str(port), "--bitrate", args.bitrate,
                          "--size", args.size, "--fps", str(args.fps))  # fmt: skip
    procs.wait_ports([testsrc], 30)
    src_port = free_port()
    support_ports = [free_port() for _ in range(args.support)]
    authorised = [arg for p in support_ports for arg in ("--support-node", f"{HOST}:{p}")]
    source = procs.spawn(
        "source", "source", src_port, "node", "source", "--bind", HOST, "--port", str(src_port),
        "--source", f"http://{HOST}:{testsrc.port}/stream.ts", "--title", "cost", "--name", "cost",
        "--publish-dir", str(workdir / "publish"), "--metadata-dir", str(workdir / "meta"),
        "--pid-file-dir", str(workdir), *BROADCASTER_ADMISSION, *authorised,
    )  # fmt: skip
    procs.wait_ports([source], 30)
    transport = f"http://{HOST}:{src_port}/app/get_transport_file"
    supports = [procs.spawn(f"support{i}", "support", p, "node", "support", "--bind", HOST, "--port", str(p),
                            "--url", transport + "?format=raw", "--pid-file-dir", str(workdir),
                            *BROADCASTER_ADMISSION) for i, p in enumerate(support_ports)]  # fmt: skip
    procs.wait_ports(supports, 30)
    urls = [f"http://{HOST}:{p}/app/get_transport_file" for p in support_ports] + [transport]
    upload = (["--upload-slots", "0"] if args.upload_multiple <= 0
              else ["--upload-limit", str(max(1, round(args.upload_multiple * bitrate / 8 / 1000)))])  # fmt: skip
    engines: list[tuple[Child, int]] = []
    for vid in range(args.engines):
        http_port, p2p_port = free_port(), free_port()
        child = procs.spawn(f"engine{vid}", "engine", http_port, "engine", "--http-port", str(http_port),
                            "--port", str(p2p_port), "--bind", engine_address(vid), "--pid-file-dir", str(workdir),
                            *upload, "--startup-timeout", "30", *args.engine_arg)  # fmt: skip
        engines.append((child, http_port))
    procs.wait_ports([c for c, _ in engines], 60 + args.engines)
    idle = [memory(c) for c, _ in engines]  # before any stream: the engine's imports and its HTTP server
    players = [Player() for _ in engines]
    t_play = time.monotonic()
    until = t_play + args.ramp + args.warmup + args.duration + 5
    load_before = load()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = []
        for i, ((_child, http_port), player) in enumerate(zip(engines, players, strict=True)):
            await asyncio.sleep(args.ramp / max(1, len(engines)) if i else 0)
            tasks.append(asyncio.create_task(play(http_port, urls[i % len(urls)], player, until, session)))
        await asyncio.sleep(max(0.0, t_play + args.ramp + args.warmup - time.monotonic()))
        t0 = time.monotonic()
        cpu0 = [cpu_seconds(c) for c, _ in engines]
        others0 = {c.name: cpu_seconds(c) for c in [testsrc, source, *supports]}
        bytes0 = [p.bytes for p in players]
        spy: asyncio.subprocess.Process | None = None
        if args.py_spy:
            pid = str(engines[0][0].process.pid)
            spy = await asyncio.create_subprocess_exec(
                "py-spy", "record", "-p", pid, "-d", str(args.py_spy), "-r", "100", "--format", "raw",
                "-o", str(args.out / "engine0.txt"), stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        psutil.cpu_percent(None)
        machine: list[float] = []
        while time.monotonic() < t0 + args.duration:
            await asyncio.sleep(1.0)
            machine.append(psutil.cpu_percent(None))
        window = time.monotonic() - t0
        cpu1 = [cpu_seconds(c) for c, _ in engines]
        others = {c.name: round(100 * (cpu_seconds(c) - others0[c.name]) / window, 2)
                  for c in [testsrc, source, *supports]}  # fmt: skip
        mem = [memory(c) for c, _ in engines]
        bytes1 = [p.bytes for p in players]
        await asyncio.gather(*(poll_stat(p, session) for p in players))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if spy is not None:
            async with asyncio.timeout(args.py_spy + 60):
                await spy.wait()
    load_after = load()
    per: list[dict[str, Any]] = []
    for i, (child, _port) in enumerate(engines):
        per.append({
            "engine": child.name, "cpu_percent": round(100 * (cpu1[i] - cpu0[i]) / window, 3),
            "rx_kBps": round((bytes1[i] - bytes0[i]) / window / 1000, 1), **mem[i],
            "idle_rss": idle[i]["rss"], "uploaded": players[i].stat.get("uploaded"),
            "downloaded": players[i].stat.get("downloaded"), "peers": players[i].stat.get("peers"),
            "error": players[i].error,
        })  # fmt: skip
    cpus = [e["cpu_percent"] for e in per]
    mb = 1024 * 1024
    return {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "window_s": round(window, 1), "load_before": load_before, "load_after": load_after,
        "machine_cpu_mean": round(statistics.fmean(machine), 1) if machine else None,
        "cpu_mean": round(statistics.fmean(cpus), 3), "cpu_min": min(cpus), "cpu_max": max(cpus),
        "rss_mean_mb": round(statistics.fmean(e["rss"] for e in per) / mb, 1),
        "peak_rss_mean_mb": round(statistics.fmean(e["peak_rss"] for e in per) / mb, 1),
        "peak_rss_max_mb": round(max(e["peak_rss"] for e in per) / mb, 1),
        "uss_mean_mb": round(statistics.fmean(e["uss"] for e in per) / mb, 1),
        "pss_mean_mb": round(statistics.fmean(e["pss"] for e in per) / mb, 1),
        "idle_rss_mean_mb": round(statistics.fmean(e["idle_rss"] for e in per) / mb, 1),
        "rx_kBps_mean": round(statistics.fmean(e["rx_kBps"] for e in per), 1),
        # The test signal is the stream's clock: on a starved machine it runs slow, and engines with less to carry
        # cost less. Below 90 % of the nominal rate (TS overhead puts a healthy run at about 100 %) the run says so.
        "stream_share": round(statistics.fmean(e["rx_kBps"] for e in per) * 1000 * 8 / bitrate, 3),
        "others_cpu_percent": others, "engines": per,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=int, default=8)
    parser.add_argument("--support", type=int, default=1)
    parser.add_argument("--bitrate", default="2M")
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--upload-multiple", type=float, default=1.0,
                        help="each engine's --upload-limit as a multiple of the bitrate (0: --upload-slots 0)")
    parser.add_argument("--ramp", type=float, default=3.0, help="players join spread over this many seconds")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of playing before the window")
    parser.add_argument("--duration", type=float, default=60.0, help="the measured window (s)")
    parser.add_argument("--engine-arg", action="append", default=[], help="extra engine flag (repeatable)")
    parser.add_argument("--py-spy", type=int, default=0, help="record engine 0 with py-spy for this many seconds")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="swarmcast-cost-"))
    procs = Processes(workdir)

    def on_sigterm(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        result = asyncio.run(run(args, procs, workdir))
    except KeyboardInterrupt:
        print("interrupted")
        return 130
    finally:
        procs.stop_all()
        logs = args.out / "logs"
        logs.mkdir(exist_ok=True)
        for log in workdir.glob("*.log"):
            shutil.copy(log, logs / log.name)
        shutil.rmtree(workdir, ignore_errors=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    print(f"window {result['window_s']} s, load average before {result['load_before']}, after "
          f"{result['load_after']}, machine CPU {result['machine_cpu_mean']} %; players got "
          f"{result['stream_share']:.0%} of the nominal bitrate")  # fmt: skip
    if result["stream_share"] < 0.9:
        print("NOT VALID: the test signal ran slow (machine starved); the engines carried less than the stream")
    print("| engine | CPU % | RSS MB | peak RSS MB | USS MB | idle RSS MB | rx kB/s | up MB | peers | error |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    mb = 1024 * 1024
    for e in result["engines"]:
        up = e["uploaded"]
        print(f"| {e['engine']} | {e['cpu_percent']:.2f} | {e['rss'] / mb:.1f} | {e['peak_rss'] / mb:.1f} | "
              f"{e['uss'] / mb:.1f} | {e['idle_rss'] / mb:.1f} | {e['rx_kBps']} | "
              f"{'-' if up is None else round(up / 1e6, 1)} | {e['peers']} | {e['error'] or ''} |")  # fmt: skip
    print(f"mean CPU {result['cpu_mean']:.2f} % (min {result['cpu_min']:.2f}, max {result['cpu_max']:.2f}); "
          f"RSS {result['rss_mean_mb']} MB, peak {result['peak_rss_mean_mb']} MB (max {result['peak_rss_max_mb']}),"
          f" USS {result['uss_mean_mb']} MB, idle RSS {result['idle_rss_mean_mb']} MB; "
          f"others {result['others_cpu_percent']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
