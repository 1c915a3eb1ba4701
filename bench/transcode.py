"""Transcoding cost: CPU per rendition of the broadcaster's ladder, and how many renditions one core keeps live.

    python bench/transcode.py --seconds 20 [--size 1280x720 --fps 30] [--profiles P144p30fps16x9,...] [--json out.json]

What runs: one FLV of the test picture and a tone (H.264 + AAC, ``--size`` at ``--fps``, a keyframe a second), made
once in memory, is fed to ``MediaPipeline`` (broadcaster/pipeline.py, exactly what a publisher's stream goes
through) once per case: the source rendition alone (the remux: the baseline), each profile alone, then the whole
ladder at once. The bytes are fed as fast as the pipeline takes them with no queue bound, so no frame is dropped
and the run measures work, not pacing. For each case: process CPU time (all threads: demux, decode, scale,
x264, mux) and wall time for ``--seconds`` of media.

Figures: ``cpu_per_media_s`` = CPU seconds per second of media = cores the case needs to run in real time;
``rendition_cores`` = that minus the source-only baseline (the decode of the source is counted once per case, in
every case); ``realtime_x`` = media seconds per wall second (on a shared machine wall time is noisy, CPU time much
less); ``renditions_per_core`` = floor(1 / rendition_cores): how many renditions of that profile one core keeps
in real time. x264 runs one thread per rendition (transcoder.ENCODER_THREADS), preset ``ENCODER_PRESET``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.flvgen import make_flv

from swarmcast.broadcaster.pipeline import MediaPipeline
from swarmcast.broadcaster.profiles import LIVEPEER_PROFILES, Profile, parse_transcoding_options
from swarmcast.broadcaster.transcoder import ENCODER_PRESET, ENCODER_THREADS
from swarmcast.media.units import parse_size

UNBOUNDED = 1 << 40


async def run_case(flv: bytes, profiles: list[Profile]) -> dict[str, Any]:
    out: dict[str, int] = {}
    errors: list[str] = []

    def on_ts(name: str, data: bytes) -> None:
        out[name] = out.get(name, 0) + len(data)

    cpu0, wall0 = time.process_time(), time.monotonic()
    pipeline = MediaPipeline("bench", profiles, on_ts=on_ts, on_info=lambda infos: None, on_error=errors.append,
                             max_queue_bytes=UNBOUNDED, rendition_queue_bytes=UNBOUNDED)  # fmt: skip
    pipeline.feed(flv)
    pipeline.close()
    await pipeline.wait_closed()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    if errors:
        raise RuntimeError(f"pipeline error: {errors[0]}")
    return {"cpu_s": cpu, "wall_s": wall, "bytes": out}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    width, height = args.size
    profiles = parse_transcoding_options(args.profiles) if args.profiles else list(LIVEPEER_PROFILES.values())
    print(f"making {args.seconds:g} s of {width}x{height} at {args.fps} fps ...", file=sys.stderr)
    flv = make_flv(args.seconds, width=width, height=height, fps=args.fps)
    media_s = args.seconds
    cases: list[tuple[str, list[Profile]]] = [("source only (remux)", [])]
    cases += [(p.name, [p]) for p in profiles]
    cases.append((f"full ladder ({len(profiles)})", profiles))
    rows: list[dict[str, Any]] = []
    baseline = 0.0
    for name, chosen in cases:
        print(f"  {name} ...", file=sys.stderr)
        result = await run_case(flv, chosen)
        per_s = result["cpu_s"] / media_s
        if not chosen:
            baseline = per_s
        rendition_cores = per_s - baseline if chosen else 0.0
        rows.append({
            "case": name,
            "renditions": len(chosen),
            "cpu_s": round(result["cpu_s"], 2),
            "wall_s": round(result["wall_s"], 2),
            "cpu_per_media_s": round(per_s, 3),
            "rendition_cores": round(rendition_cores, 3),
            "realtime_x": round(media_s / result["wall_s"], 2),
            "renditions_per_core": (math.floor(1 / rendition_cores) if len(chosen) == 1 and rendition_cores > 0
                                    else None),
            "bits_per_s": {k: int(v * 8 / media_s) for k, v in result["bytes"].items()},
        })  # fmt: skip
    ladder = rows[-1]
    return {
        "source": f"{width}x{height} {args.fps} fps H.264 + AAC, {media_s:g} s",
        "preset": ENCODER_PRESET,
        "x264_threads_per_rendition": ENCODER_THREADS,
        "rows": rows,
        "full_ladder_cores": ladder["cpu_per_media_s"],
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"source: {result['source']}; x264 preset {result['preset']}, {result['x264_threads_per_rendition']} "
        "thread per rendition",
        "",
        "| case | CPU s | wall s | cores for real time | cores per rendition | x real time | renditions per core |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        per_core = row["renditions_per_core"]
        lines.append(f"| {row['case']} | {row['cpu_s']:.1f} | {row['wall_s']:.1f} | {row['cpu_per_media_s']:.3f} | "
                     f"{row['rendition_cores']:.3f} | {row['realtime_x']:.2f} | "
                     f"{'' if per_core is None else per_core} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of media per case (default 20)")
    parser.add_argument("--size", type=parse_size, default=(1280, 720), help="source WIDTHxHEIGHT (default 1280x720)")
    parser.add_argument("--fps", type=int, default=30, help="source frame rate (default 30)")
    parser.add_argument("--profiles", default="", help="comma list or JSON file (default: all 14 Livepeer profiles)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    result = asyncio.run(bench(args))
    print(table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
