"""Where a simulated peer's memory goes: bench/sim.py's run with memory snapshots at chosen virtual times.

    PYTHONHASHSEED=0 PYTHONPATH=$PWD/src python bench/sim_mem.py --at 20,60 [--tracemalloc] -- --peers 1000 ...

At each time in ``--at`` it prints (stderr) the process RSS, then a walk of every live node's swarm: the shallow
size (``sys.getsizeof``) of each container attribute of the swarm, of its parts (picker, dialer, ...) and of its
sessions, summed over the nodes and by ``Class.attribute`` (plus the int objects above the small-int cache that
sets and dicts of ints hold), largest first. With ``--tracemalloc`` it also prints the allocation sites that grew
most since the previous snapshot (much slower: use a few hundred peers). The arguments after ``--`` are
bench/sim.py's own; the run and its figures are the same as without this wrapper (the snapshots only read).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.sim

from bench import sim
from swarmcast import transport
from swarmcast.swarm.core import Swarm


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _attributes(obj: object) -> list[tuple[str, Any]]:
    names: list[str] = list(getattr(obj, "__dict__", {}))
    for klass in type(obj).__mro__:
        names.extend(n for n in getattr(klass, "__slots__", ()) if n not in ("__dict__", "__weakref__"))
    return [(n, getattr(obj, n)) for n in dict.fromkeys(names) if hasattr(obj, n)]


def _size(value: Any) -> int:
    """The container's own size plus its large ints (small ones are shared; a set of piece indices holds ints)."""
    size = sys.getsizeof(value)
    items = value.values() if isinstance(value, dict) else value
    if isinstance(value, dict):
        size += sum(28 for k in value if isinstance(k, int) and k > 256)
    size += sum(sys.getsizeof(i) for i in items if isinstance(i, int) and i > 256)
    return size


CONTAINERS = (set, dict, list, collections.deque, bytearray, bytes, frozenset, tuple)


def walk(swarms: list[Swarm]) -> collections.Counter[str]:
    sizes: collections.Counter[str] = collections.Counter()
    for swarm in swarms:
        sizes["Swarm (object)"] += sys.getsizeof(swarm)
        for name, value in _attributes(swarm):
            if isinstance(value, CONTAINERS):
                sizes[f"Swarm.{name}"] += _size(value)
            elif hasattr(value, "__dict__") or hasattr(type(value), "__slots__"):
                for sub, inner in _attributes(value):
                    if isinstance(inner, CONTAINERS):
                        sizes[f"{type(value).__name__}.{sub}"] += _size(inner)
        for session in swarm.sessions.values():
            sizes["PeerSession (object)"] += sys.getsizeof(session)
            for name, value in _attributes(session):
                if isinstance(value, CONTAINERS):
                    sizes[f"PeerSession.{name}"] += _size(value)
            connection = session.connection
            for name, value in _attributes(connection):
                if isinstance(value, CONTAINERS):
                    sizes[f"Connection.{name}"] += _size(value)
    return sizes


def main() -> None:
    argv = sys.argv[1:]
    own, rest = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--at", default="20,60", help="virtual seconds to snapshot at, comma-separated")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    mine = parser.parse_args(own)
    args = sim.parse(rest)
    if mine.tracemalloc:
        tracemalloc.start(1)
    simulator = sim.Simulator(args, args.peers, args.seed)
    previous: list[tracemalloc.Snapshot] = []

    def snapshot(_: object) -> None:
        swarms = [node.swarm for node in simulator.live.items]
        sessions = sum(len(s.sessions) for s in swarms)
        print(f"[mem] t={simulator.now:.1f} s  nodes={len(swarms)}  sessions={sessions}  rss={rss_mb():.0f} MB "
              f"({rss_mb() * 1024 / max(1, len(swarms)):.0f} kB per node)", file=sys.stderr, flush=True)
        sizes = walk(swarms)
        total = sum(sizes.values())
        print(f"[mem]   walked {total / 2**20:.1f} MB ({total / 1024 / max(1, len(swarms)):.1f} kB per node, "
              f"{total / max(1, sessions):.0f} B per session)", file=sys.stderr)
        for key, value in sizes.most_common(mine.top):
            print(f"[mem]   {value / 2**20:9.2f} MB  {value / max(1, len(swarms)):9.0f} B/node  {key}", file=sys.stderr)
        if mine.tracemalloc:
            snap = tracemalloc.take_snapshot()
            stats = snap.compare_to(previous[0], "lineno") if previous else snap.statistics("lineno")
            print(f"[mem]   tracemalloc traced {sum(s.size for s in snap.statistics('filename')) / 2**20:.1f} MB; "
                  f"top {'growth since last snapshot' if previous else 'sites'}:", file=sys.stderr)
            for stat in stats[: mine.top]:
                print(f"[mem]     {stat}", file=sys.stderr)
            previous[:] = [snap]
        sys.stderr.flush()

    for at in (float(t) for t in mine.at.split(",")):
        simulator.schedule(at, snapshot, None)
    original = transport.PieceVerifier.verify  # the simulator replaces it (sim.simulate puts it back likewise)
    try:
        result = simulator.run()
    finally:
        transport.PieceVerifier.verify = original  # type: ignore[method-assign]
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
