"""Hostile benchmark: issue 7's attacks against a real chain on loopback, with an honest player watching.

    PYTHONPATH=$PWD/src python bench/hostile.py --attack all --out /tmp/hostile [--code /work/before/src]
    PYTHONPATH=$PWD/src python bench/hostile.py --attack have-overflow --attack sybil --duration 8

For each attack: a fresh chain (testsrc -> source -> support -> engine, bench/hostile_chain.py) and an honest
player reading MPEG-TS from the engine; a baseline phase ("before"), the attack ("during", bench/attacks.py),
then "after" with the attackers gone. Per phase: the player's throughput and stalls, every node's RSS, CPU %,
open descriptors and attacker connections, whether it is alive, and whether an honest newcomer peer and an HTTP
client still get in. ``--code DIR[:DIR]`` is the PYTHONPATH of the swarmcast children (default: this process's
PYTHONPATH); the attackers, the player and the report always run from this script's own tree. Writes
``hostile.json`` and ``hostile.md`` to ``--out``; docs/benchmarks-hostile.md explains every column.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import swarmcast
from bench.attack_tools import Ctx, probe_http, probe_peer
from bench.attacks import ATTACKS, AttackSpec
from bench.hostile_chain import Chain, ChainOptions, PlayerLog, Sampler, player_phase, stop_process

PHASES = ("before", "during", "after")
STALL_GAP = 1.0  # seconds without data that count as a stall (pieces come every 0.2 s)
WARMUP = 3.0  # seconds of playing before the baseline starts
FIRST_BYTE_TIMEOUT = 40.0
ROLES = ("source", "support", "engine")
ATTACK_GRACE = 15.0  # an attack's run() overrunning its phase by more than this is cancelled


def default_code() -> Path:
    return Path(swarmcast.__file__).resolve().parent.parent


async def _probe(ctx: Ctx, victim: str) -> dict[str, str]:
    chain = ctx.chain
    node = chain.nodes[victim]
    if victim == "engine":
        http = f"{chain.engine_api}/webui/api/service?method=get_version"
    elif victim == "support":
        http = chain.support_transport_url
    else:
        http = chain.source_transport_url
    peer, web = await asyncio.gather(probe_peer(node.port, ctx.content_id), probe_http(http))
    return {"newcomer_peer": peer, "http": web}


async def _phase(ctx: Ctx, victim: str, seconds: float,
                 attack: AttackSpec | None) -> tuple[float, float, dict[str, Any]]:  # fmt: skip
    start = time.monotonic()
    probe_task = asyncio.create_task(_delayed_probe(ctx, victim, seconds * 0.6))
    if attack is not None:
        try:
            async with asyncio.timeout(seconds + ATTACK_GRACE):
                await attack.run(ctx, seconds)
        except Exception as error:  # the attack's own failure is a note; the victim's state is the result
            ctx.notes.setdefault("attack_error", f"{type(error).__name__}: {error}"[:300])
    await asyncio.sleep(max(0.0, start + seconds - time.monotonic()))
    probe = await probe_task
    return start, time.monotonic(), probe


async def _delayed_probe(ctx: Ctx, victim: str, delay: float) -> dict[str, str]:
    await asyncio.sleep(delay)
    try:
        return await _probe(ctx, victim)
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}"[:200]}


def _wait_first_byte(player_file: Path, popen: subprocess.Popen[bytes], chain: Chain) -> float | None:
    deadline = time.monotonic() + FIRST_BYTE_TIMEOUT
    while time.monotonic() < deadline:
        log = PlayerLog.read(player_file)
        if log.data:
            return log.data[0][0]
        dead = [n.name for n in chain.nodes.values() if not n.alive()]
        if dead or popen.poll() is not None:
            return None
        time.sleep(0.3)
    return None


async def run_attack(spec: AttackSpec, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    workdir = out / "work" / spec.name
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    during = max(args.duration, spec.min_during)
    overrides = dict(spec.chain)
    options = ChainOptions(code=args.code, workdir=workdir, bitrate=args.bitrate, as_limit=args.as_limit_mb * 2**20)
    if overrides.pop("disk_cache", False):
        options = replace(options, source_extra=("--live-cache-type", "disk", "--cache-dir", str(workdir / "cache")))
    options = replace(options, **overrides)
    options = replace(options, source_extra=options.source_extra + tuple(shlex.split(args.source_args)),
                      support_extra=tuple(shlex.split(args.support_args)),
                      engine_extra=tuple(shlex.split(args.engine_args)))  # fmt: skip
    chain = Chain(options)
    result: dict[str, Any] = {"attack": spec.name, "victim": spec.victim, "what": spec.what, "error": None,
                              "phases": {}, "notes": {}}  # fmt: skip
    ctx: Ctx | None = None
    sampler_task: asyncio.Task[None] | None = None
    player_file = workdir / "player.txt"
    try:
        await asyncio.to_thread(chain.start)
        ctx = Ctx(chain, chain.content_id)
        total = WARMUP + args.duration * 2 + during + 120
        player = chain.start_player(player_file, total)
        first = await asyncio.to_thread(_wait_first_byte, player_file, player, chain)
        if first is None:
            raise RuntimeError("the honest player got no data before the attack")
        sampler = Sampler(chain, ROLES)
        sampler_task = asyncio.create_task(sampler.run(time.monotonic() + total))
        await asyncio.sleep(WARMUP)
        if spec.prepare is not None:
            await spec.prepare(ctx)
        bounds: dict[str, tuple[float, float]] = {}
        probes: dict[str, dict[str, str]] = {}
        counters: dict[str, dict[str, int]] = {}
        for phase in PHASES:
            before = dict(ctx.counters)
            seconds = during if phase == "during" else args.duration
            start, end, probes[phase] = await _phase(ctx, spec.victim, seconds, spec if phase == "during" else None)
            bounds[phase] = (start, end)
            # During: every counter the attack keeps, zeros included ("fake_seeder_bytes=0" is a result).
            counters[phase] = {k: v - before.get(k, 0) for k, v in ctx.counters.items()
                               if phase == "during" or v - before.get(k, 0)}  # fmt: skip
        log = PlayerLog.read(player_file)
        for finalize in ctx.finalizers:
            finalize(log)
        rate = args.bitrate / 8
        for phase, (start, end) in bounds.items():
            play = player_phase(log, start, end, STALL_GAP)
            play["x_bitrate"] = round(play["throughput_Bps"] / rate, 2)
            extra = dict(counters[phase])
            for key, value in counters[phase].items():
                if key.endswith("_bytes"):
                    extra[key.removesuffix("_bytes") + "_x_stream"] = round(value / (rate * (end - start)), 1)
            result["phases"][phase] = {
                "seconds": round(end - start, 1), "player": play, "probe": probes[phase], "counters": extra,
                "nodes": {role: sampler.phase(role, start, end) for role in ROLES},
            }  # fmt: skip
    except asyncio.CancelledError:
        result["error"] = "interrupted"
        raise
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {error}"[:2000]
    finally:
        if sampler_task is not None:
            sampler_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sampler_task
        if ctx is not None:
            with contextlib.suppress(Exception):
                await ctx.stack.aclose()
            result["notes"] = {k: v for k, v in ctx.notes.items() if k != "pex_addresses"}
        alive = {name: node.alive() for name, node in chain.nodes.items()}
        await asyncio.to_thread(chain.stop_all)
        result["alive_at_end"] = alive
        result["stop"] = chain.stop_notes
        result["exit_codes"] = {n: node.popen.returncode for n, node in chain.nodes.items()}
        result["victim_log_tail"] = chain.nodes[spec.victim].log_tail(600) if spec.victim in chain.nodes else ""
    return result


# --- report ------------------------------------------------------------------------------------------------------


def _fmt(value: Any, suffix: str = "") -> str:
    return "–" if value is None else f"{value}{suffix}"


def _short_probe(probe: dict[str, str]) -> str:
    peer = probe.get("newcomer_peer", probe.get("error", "?"))
    web = probe.get("http", "?").split(" ")[0]
    return f"{peer.replace('refused:', '')} / {web}"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Command: `{report['command']}`  ",
        f"Code under test: `{report['code']}`; {report['duration']} s phases; stream {report['bitrate'] // 1000} "
        f"kbit/s ({report['bitrate'] // 8000} kB/s); {report['started']}",
        "",
        "| attack | victim | phase | player kB/s (× bitrate) | stalls > 1 s | longest gap s | reconnects "
        "| victim RSS MB (peak) | victim CPU % | victim FDs | victim alive | newcomer / HTTP |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for item in report["results"]:
        if item["error"] and not item["phases"]:
            lines.append(f"| {item['attack']} | {item['victim']} | – | bench error: {item['error'][:120]} "
                         "| | | | | | | | |")  # fmt: skip
            continue
        for phase in PHASES:
            data = item["phases"].get(phase)
            if data is None:
                continue
            play, node = data["player"], data["nodes"][item["victim"]]
            alive = "yes" if node["alive_at_end"] else f"**no** ({_fmt(node.get('exit_code'))})"
            deaths = data["counters"].get("victim_deaths", 0)
            if deaths:
                alive = f"**died {deaths}×** (restarted by the bench)" if node["alive_at_end"] else alive
            lines.append(
                f"| {item['attack']} | {item['victim']} | {phase} | {play['throughput_Bps'] / 1000:.0f} "
                f"({play['x_bitrate']}) | {play['stalls']} | {_fmt(play['longest_gap_s'])} | {play['reconnects']} "
                f"| {_fmt(node['rss_max_mb'])} ({_fmt(node.get('rss_peak_mb'))}) | {_fmt(node['cpu_pct'])} "
                f"| {_fmt(node['fds_max'])} | {alive} "
                f"| {_short_probe(data['probe'])} |"
            )
    lines += ["", "Attack-specific figures (counters are per phase: during / after):", ""]
    for item in report["results"]:
        bits = []
        during = item["phases"].get("during", {}).get("nodes")
        if during:
            bits.append("RSS peak by the end of during (MB): " + ", ".join(
                f"{role} {_fmt(during[role].get('rss_peak_mb'))}" for role in ROLES))  # fmt: skip
        for phase in ("during", "after"):
            counters = item["phases"].get(phase, {}).get("counters")
            if counters:
                bits.append(f"{phase}: " + ", ".join(f"{k}={v}" for k, v in sorted(counters.items())))
        if item["notes"]:
            bits.append("notes: " + json.dumps(item["notes"], sort_keys=True))
        others = [f"{role} died ({code})" for role, code in item.get("exit_codes", {}).items()
                  if role != "testsrc" and item.get("alive_at_end", {}).get(role) is False]  # fmt: skip
        if others:
            bits.append("; ".join(others))
        if any("ignored SIGTERM" in v for v in item.get("stop", {}).values()):
            bits.append("stop: " + json.dumps(item["stop"], sort_keys=True))
        if item["error"]:
            bits.append(f"bench error: {item['error'][:300]}")
        lines.append(f"- **{item['attack']}** ({item['what']}): " + ("; ".join(bits) or "–"))
    return "\n".join(lines) + "\n"


# --- main --------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--attack", action="append", required=True,
                        help=f"an attack (repeatable) or 'all': {', '.join(ATTACKS)}")  # fmt: skip
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase (default 10)")
    parser.add_argument("--out", type=Path, default=None, help="directory for hostile.json, hostile.md, logs")
    parser.add_argument("--code", default=None, metavar="DIR[:DIR...]",
                        help="PYTHONPATH of the swarmcast processes: their src directory, and any extra library "
                             "directory (default: this process's PYTHONPATH, else the code it imports)")  # fmt: skip
    parser.add_argument("--bitrate", type=int, default=1_000_000, help="test signal, bits/s (default 1000000)")
    parser.add_argument("--as-limit-mb", type=int, default=4096,
                        help="address-space cap of every node in MiB, 0 = none (default 4096)")  # fmt: skip
    for role in ("source", "support", "engine"):
        parser.add_argument(f"--{role}-args", default="", metavar="ARGS",
                            help=f"extra command-line flags of the {role} node (one string, shell-split)")  # fmt: skip
    args = parser.parse_args(argv)
    names = list(ATTACKS) if "all" in args.attack else args.attack
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        parser.error(f"--attack: unknown {', '.join(unknown)} (choose from {', '.join(ATTACKS)} or all)")
    if args.duration < 2:
        parser.error(f"--duration: {args.duration} is too short (at least 2 s)")
    args.names = names
    # Without --code the children get this process's PYTHONPATH (or, without one, the tree it imports).
    code = args.code or os.environ.get("PYTHONPATH") or str(default_code())
    paths = [Path(p).resolve() for p in code.split(os.pathsep) if p]
    if not any((p / "swarmcast" / "cli.py").is_file() for p in paths):
        parser.error(f"--code: {code} holds no swarmcast package")
    args.code = os.pathsep.join(str(p) for p in paths)
    args.out = args.out or Path(tempfile.mkdtemp(prefix="hostile-"))
    return args


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        if task is not None:
            loop.add_signal_handler(signum, task.cancel)
    report: dict[str, Any] = {
        "command": " ".join(["python", "bench/hostile.py", *sys.argv[1:]]),
        "code": str(args.code), "duration": args.duration, "bitrate": args.bitrate,
        "stall_gap_s": STALL_GAP, "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
        "results": [],
    }  # fmt: skip
    for name in args.names:
        print(f"[hostile] {name} ...", flush=True)
        began = time.monotonic()
        result = await run_attack(ATTACKS[name], args, args.out)
        result["wall_s"] = round(time.monotonic() - began, 1)
        report["results"].append(result)
        (args.out / "hostile.json").write_text(json.dumps(report, indent=1, sort_keys=False) + "\n")
        print(f"[hostile] {name}: {result['error'] or 'done'} in {result['wall_s']} s", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    atexit.register(_reap_leftovers)
    try:
        report = asyncio.run(main_async(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("[hostile] interrupted; every process stopped", file=sys.stderr)
        return 130
    text = markdown(report)
    (args.out / "hostile.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "hostile.md").write_text(text)
    print(text)
    print(f"[hostile] wrote {args.out / 'hostile.json'} and {args.out / 'hostile.md'}")
    return 0


def _reap_leftovers() -> None:
    from bench.hostile_chain import SPAWNED

    for popen in SPAWNED:
        stop_process(popen, 1.0)


if __name__ == "__main__":
    sys.exit(main())
