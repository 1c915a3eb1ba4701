"""``swarmcast demo``: the whole chain on loopback with one command (``--hls``: from RTMP to HLS)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="test signal, source, two support nodes and an engine on loopback",
        description="Start the whole chain on 127.0.0.1 as real swarmcast processes (a test signal, a source node, "
        "two support nodes and a viewer engine, each on a free port, in a temporary directory), print the URL to "
        "open in a player and a status line until Ctrl-C, then stop everything and remove the directory. "
        "With --hls: RTMP -> transcoding ladder -> swarm -> HLS instead (a broadcaster with --p2p and a one-profile "
        "ladder, the test signal publishing to it over RTMP, a viewer engine; prints the engine's master playlist "
        "and player page and the origin's playlists).",
    )
    parser.add_argument("--hls", action="store_true",
                        help="show RTMP -> ladder -> swarm -> HLS (default: the MPEG-TS chain)")
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    if args.hls:
        from swarmcast.demo_hls import run as run_hls  # noqa: PLC0415 - keeps `swarmcast --help` fast

        return run_hls()
    from swarmcast.demo import run  # noqa: PLC0415

    return run()
