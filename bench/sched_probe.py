"""Where the support nodes' upload goes: bench/sim.py's simulator with counting probes (benchmarks.md, "Scheduling").

    PYTHONPATH=src python bench/sched_probe.py --peers 100 --duration 40 --supports 2 \\
        --bandwidth 0:0.2,1:0.2,2:0.2,4:0.2,6:0.2 --latency 5-40 --loss 0 --progress 0 [--loopback] \\
        [--set viewer_patience=0.4 --set reject_backoff=0.3 ...]

Takes bench/sim.py's arguments and runs its Simulator unchanged, wrapping a few methods to count only: payload
bytes by role -> role over the measured window (so the broadcaster's total, source + support nodes to engines,
as bench/swarm.py reports it), the age of each piece a support node served to a viewer (since the support node
stored it), and for each request a viewer sent a support node whether another viewer had announced the piece to it.
``--loopback`` gives engines a 100 Mbit/s uplink so that only their ``upload_limit`` caps them, as the real engines'
``--upload-limit`` does on loopback in bench/swarm.py. The wrappers follow bench/sim.py's internals (SimLink.write,
Simulator.mark/figures/add_node): when those change, this file follows.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import sim
from swarmcast.swarm import core, picker
from swarmcast.swarm.config import Role, SwarmConfig
from swarmcast.swarm.peer import PeerSession
from swarmcast.swarm.store import StoredPiece

NAMES = {0: "source", 1: "support", 2: "engine"}


class Probe:
    def __init__(self) -> None:
        self.flows: collections.Counter[tuple[int, int]] = collections.Counter()
        self.measuring = False
        self.stored_at: dict[tuple[int, int], float] = {}
        self.ages: collections.Counter[str] = collections.Counter()
        self.why: collections.Counter[str] = collections.Counter()

    def install(self, *, loopback: bool) -> None:
        probe = self
        write, store, serve, ask = sim.SimLink.write, core.Swarm._store_and_announce, core.Swarm._serve_request, \
            picker.Picker._ask  # fmt: skip
        mark, figures, add_node = sim.Simulator.mark, sim.Simulator.figures, sim.Simulator.add_node

        def probed_write(link: sim.SimLink, data: bytes) -> None:
            payload = link.conn.payload_sent - link.payload_mark
            write(link, data)
            if payload and probe.measuring and not link.closed:
                probe.flows[(link.src.kind, link.dst.kind)] += payload * link.sim.scale

        def probed_store(swarm: core.Swarm, piece: StoredPiece, origin: PeerSession | None, now: float) -> None:
            if swarm.config.role is Role.SUPPORT and piece.index not in swarm.store:
                probe.stored_at[(id(swarm), piece.index)] = now
            store(swarm, piece, origin, now)

        def probed_serve(swarm: core.Swarm, session: PeerSession, index: int, now: float) -> None:
            before = swarm.stats.uploaded
            serve(swarm, session, index, now)
            if probe.measuring and swarm.config.role is Role.SUPPORT and swarm.stats.uploaded > before \
                    and not session.is_seeder:  # fmt: skip
                age = now - probe.stored_at.get((id(swarm), index), now)
                probe.ages[f"{min(int(age * 10), 20) / 10:.1f}"] += 1

        def probed_ask(p: picker.Picker, session: PeerSession, index: int, now: float) -> None:
            if probe.measuring and session.is_seeder and not session.is_source:
                probe.why[probe.reason(p, index, now)] += 1
            ask(p, session, index, now)

        def probed_mark(simulator: sim.Simulator, arg: object) -> None:
            probe.measuring = True
            mark(simulator, arg)

        def probed_figures(simulator: sim.Simulator, wall: float, cpu: float) -> dict[str, Any]:
            return probe.figures(simulator, figures(simulator, wall, cpu))

        def probed_add_node(simulator: sim.Simulator, role: Role, cap: float, name: str) -> sim.Node:
            node = add_node(simulator, role, cap, name)
            if role is Role.ENGINE:
                node.cap = 100e6 / 8  # loopback: only the engine's own upload_limit caps it
            return node

        sim.SimLink.write = probed_write  # type: ignore[method-assign,assignment]
        core.Swarm._store_and_announce = probed_store  # type: ignore[method-assign,assignment]
        core.Swarm._serve_request = probed_serve  # type: ignore[method-assign,assignment]
        picker.Picker._ask = probed_ask  # type: ignore[method-assign,assignment]
        sim.Simulator.mark = probed_mark  # type: ignore[method-assign,assignment]
        sim.Simulator.figures = probed_figures  # type: ignore[method-assign,assignment]
        if loopback:
            sim.Simulator.add_node = probed_add_node  # type: ignore[method-assign,assignment]

    @staticmethod
    def reason(p: picker.Picker, index: int, now: float) -> str:
        """Why a viewer asked a support node rather than another viewer."""
        others = [s for s in p._sessions.values() if not s.is_seeder and index in s.have]
        if not others:
            return "no viewer announced it"
        unchoking = [s for s in others if not s.peer_choking]
        if not unchoking:
            return "viewer holders choke us"
        if all(s.busy_until > now for s in unchoking):
            return "viewer holders busy (REJECTed)"
        if all(len(s.requests_out) >= p._max_requests for s in unchoking):
            return "viewer holders full"
        return "retried or other"

    def figures(self, simulator: sim.Simulator, out: dict[str, Any]) -> dict[str, Any]:
        stream = simulator.bitrate * max(1e-9, simulator.args.duration - simulator.warmup)
        flows = self.flows
        out["flows_copies"] = {f"{NAMES[a]}->{NAMES[b]}": round(v / stream, 2) for (a, b), v in sorted(flows.items())}
        out["broadcaster_ratio"] = round((flows[(0, 1)] + flows[(0, 2)] + flows[(1, 2)]) / stream, 2)
        out["support_to_engine_by_age"] = dict(sorted(self.ages.items()))
        out["why_engines_asked_support"] = dict(self.why.most_common())
        return out


def override(settings: list[str]) -> None:
    """``--set field=value`` (repeatable): SwarmConfig fields for every node the simulator builds, to try a policy."""
    fields = {f.name: f.type for f in dataclasses.fields(SwarmConfig)}
    values: dict[str, Any] = {}
    for item in settings:
        name, _, text = item.partition("=")
        if name not in fields:
            raise SystemExit(f"--set: no SwarmConfig field {name!r}")
        values[name] = int(text) if fields[name] in (int, "int") else float(text)
    build = SwarmConfig

    def configured(**kwargs: Any) -> SwarmConfig:
        return build(**{**kwargs, **values})

    sim.SwarmConfig = configured  # type: ignore[attr-defined,assignment]


def main(argv: list[str]) -> int:
    loopback = "--loopback" in argv
    argv = [a for a in argv if a != "--loopback"]
    settings = [argv[i + 1] for i, a in enumerate(argv) if a == "--set" and i + 1 < len(argv)]
    argv = [a for i, a in enumerate(argv) if a != "--set" and (i == 0 or argv[i - 1] != "--set")]
    override(settings)
    args = sim.parse(argv)
    probe = Probe()
    probe.install(loopback=loopback)
    result = sim.Simulator(args, args.peers, args.seed).run()
    keys = ["peers", "wall_s", "startup_p50_s", "startup_p95_s", "delay_p50_s", "delay_p95_s", "delay_max_s",
            "continuity", "source_upload_ratio", "broadcaster_ratio", "flows_copies", "support_to_engine_by_age",
            "why_engines_asked_support", "control_overhead", "never_started", "code"]  # fmt: skip
    print(json.dumps({k: result.get(k) for k in keys}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
