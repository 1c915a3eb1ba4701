"""Discrete-event swarm simulator driving the REAL ``Swarm`` and ``Connection`` code on a virtual clock.

    python bench/sim.py --peers 1000 --duration 30 [--churn 0.2] [--latency 20-120] [--bandwidth 1:0.3,4:0.4,20:0.3]
    python bench/sim.py --scale 100,300,1000 --duration 20 --out docs/img

Model (what is simulated, what is approximate):
- One source swarm (role SOURCE) emits a piece every 0.1 s at the stream bitrate (RANDOM_ACCESS every 10th, i.e.
  a keyframe a second), signed once with the real Ed25519 key. A few support nodes (role SUPPORT, the source pinned)
  and N engines (role ENGINE, one cursor = one player opened at join).
- Links: every node has an upload cap; bytes written on any of its links queue FIFO on its uplink and drain at the
  cap, then arrive after a one-way latency (pair latency = the sum of two per-node access latencies, so pairs span
  the --latency range). Downloads are not capped. Loss on a TCP-like link is extra delay: a write is hit with
  probability --loss and arrives an RTT + 200 ms (a retransmission timeout) later; later bytes on that link wait
  behind it (in-order delivery). Writes arriving within 5 ms on one link are coalesced into one delivery.
- Payload scaling: piece data is ``--payload-scale`` times smaller in memory than the bitrate says (10,000 stores of
  real 25 kB pieces would not fit); links charge the full virtual size of every PIECE frame, and the reported bytes
  (source upload, peer share) are virtual. Control overhead counts the real control bytes against the virtual payload.
- Signatures: verification is replaced by a lookup of the real signature by index (the simulator ONLY), because
  10,000 peers x pieces of Ed25519 verification in Python is too slow.
- Discovery: a simulated tracker returns a random subset (40) of live nodes (source and supports included) at join
  and every 30 s; PEX is the Swarm's own.
- Churn: engines leave (``Swarm.close``: goodbyes) and new ones join at --churn x N per minute each way.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import random
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarmcast import transport
from swarmcast.swarm.core import Cursor, Role, Swarm, SwarmConfig
from swarmcast.swarm.peer import Address, PeerSession
from swarmcast.swarm.store import PieceStore, StoredPiece
from swarmcast.wire.connection import Connection, HandshakeReceived
from swarmcast.wire.messages import MAX_WINDOW_PIECES, Handshake, HandshakeFlags, PieceFlags

PIECE_TYPE = 9
PIECE_HEADER = 1 + 8 + 1 + 64  # type, index, flags, signature
COALESCE = 0.005
TRACKER_SAMPLE = 40
TRACKER_INTERVAL = 30.0
_session_keys = itertools.count(1)


@dataclass
class Node:
    name: str
    role: Role
    address: Address
    swarm: Swarm
    cap: float  # upload bytes/s
    access_latency: float
    joined: float
    cursor: Cursor | None = None
    alive: bool = True
    uplink_free_at: float = 0.0
    uploaded_virtual: float = 0.0
    payload_virtual: float = 0.0
    connecting: set[Address] = field(default_factory=set)
    first_delivery: float | None = None
    delivered: int = 0


class SimLink:
    """One direction of a simulated TCP connection (the ``PeerLink`` under a session)."""

    def __init__(self, sim: Simulator, src: Node, dst: Node) -> None:
        self.sim, self.src, self.dst = sim, src, dst
        self.session: PeerSession | None = None  # the receiving session at dst
        self.peer: SimLink | None = None
        self.closed = False
        self.queue: deque[tuple[float, int]] = deque()
        self.queued = 0
        self.last_delivery = 0.0
        self.tail: list[Any] | None = None  # [time, chunks, delivered]

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        sim = self.sim
        size, payload = sim.virtual_size(data)
        src = self.src
        start = max(sim.now, src.uplink_free_at)
        finish = start + size / src.cap
        src.uplink_free_at = finish
        src.uploaded_virtual += size
        src.payload_virtual += payload
        sim.payload_by_role[src.role] += payload
        self.queue.append((finish, size))
        self.queued += size
        latency = src.access_latency + self.dst.access_latency
        deliver = finish + latency
        if sim.rng.random() < sim.loss:
            deliver += 2 * latency + 0.2
        deliver = max(deliver, self.last_delivery)
        self.last_delivery = deliver
        tail = self.tail
        if tail is not None and not tail[2] and deliver - tail[0] <= COALESCE:
            tail[1].append(data)
            return
        self.tail = [deliver, [data], False]
        sim.schedule(deliver, self._deliver, self.tail)

    def _deliver(self, entry: list[Any]) -> None:
        entry[2] = True
        session, dst = self.session, self.dst
        if session is None or not dst.alive or session.key not in dst.swarm.sessions:
            return
        now = self.sim.now
        events = session.connection.receive_data(b"".join(entry[1]), now)
        dst.swarm.handle_events(session, events, now)
        self.sim.play(dst)

    def write_buffer_size(self) -> int:
        now = self.sim.now
        while self.queue and self.queue[0][0] <= now:
            self.queued -= self.queue.popleft()[1]
        return self.queued

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        peer = self.peer
        if peer is not None:
            # The far end sees EOF once the bytes in flight have arrived.
            when = max(self.last_delivery, self.sim.now + self.src.access_latency + self.dst.access_latency)
            self.sim.schedule(when, self.sim.eof, peer)


class Simulator:
    def __init__(self, args: argparse.Namespace, peers: int, seed: int) -> None:
        self.args = args
        self.rng = random.Random(seed)
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._seq = itertools.count()
        self.loss: float = args.loss
        self.scale: int = args.payload_scale
        self.bitrate: int = args.bitrate * 1_000_000 // 8  # bytes/s
        self.piece_virtual = int(self.bitrate * 0.1)
        self.piece_real = max(1, self.piece_virtual // self.scale)
        self.payload_by_role: dict[Role, float] = dict.fromkeys(Role, 0.0)
        self.nodes: dict[Address, Node] = {}
        self.engines_total = 0
        self.connections: list[Connection] = []
        self.emitted: dict[int, float] = {}
        self.delays = array("d")
        self.startups: list[float] = []
        self.never_started = 0
        self.skipped = 0
        self.delivered = 0
        self._ip = itertools.count(1)
        low, high = (float(x) / 1000 for x in args.latency.split("-"))
        self.latency = (low / 2, high / 2)
        self.mix = [(float(m) * 1e6 / 8, float(w)) for m, w in (p.split(":") for p in args.bandwidth.split(","))]
        self.target_peers = peers
        self.key = Ed25519PrivateKey.generate()
        public_key = transport.public_key_bytes(self.key)
        self.descriptor = transport.Descriptor(name="sim", title="sim", piece_size=self.piece_real,
                                               bitrate=self.bitrate, public_key=public_key)  # fmt: skip
        self.content_id = self.descriptor.content_id
        self.signatures: dict[int, bytes] = {}
        signatures = self.signatures

        def cheap_verify(_self: transport.PieceVerifier, index: int, _flags: PieceFlags, _data: bytes,
                         signature: bytes) -> bool:  # fmt: skip
            return signatures.get(index) == signature

        transport.PieceVerifier.verify = cheap_verify  # type: ignore[method-assign,assignment]
        self.source = self.add_node(Role.SOURCE, args.source_mbit * 1e6 / 8, "source")
        self.supports = [self.add_node(Role.SUPPORT, args.support_mbit * 1e6 / 8, f"support{i}")
                         for i in range(args.supports)]  # fmt: skip
        for support in self.supports:
            support.swarm.add_candidates([self.source.address], pinned=True)
        self.next_index = 0

    # -- plumbing ----------------------------------------------------------------------------------------
    def schedule(self, when: float, fn: Callable[[Any], None], arg: Any) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), fn, arg))

    def virtual_size(self, data: bytes) -> tuple[int, int]:
        """Bytes on the wire as the bitrate says: PIECE frames count ``scale`` times their in-memory data."""
        extra = payload = 0
        offset, end = 0, len(data)
        while offset + 5 <= end:
            length = int.from_bytes(data[offset : offset + 4], "big")
            if data[offset + 4] == PIECE_TYPE:
                real = length - PIECE_HEADER
                extra += real * (self.scale - 1)
                payload += real * self.scale
            offset += 4 + length
        return len(data) + extra, payload

    def add_node(self, role: Role, cap: float, name: str) -> Node:
        n = next(self._ip)
        address = (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 7764)
        if role is Role.ENGINE:
            store = PieceStore(max_bytes=30 * 10 * self.piece_real + 1, window_pieces=MAX_WINDOW_PIECES)
        else:
            store = PieceStore(max_bytes=120 * 10 * self.piece_real + 1, window_pieces=MAX_WINDOW_PIECES)
        swarm = Swarm(content_id=self.content_id, peer_id=self.rng.randbytes(20), config=SwarmConfig(role=role),
                      store=store, descriptor=self.descriptor, now=self.now,
                      rng=random.Random(self.rng.random()))  # fmt: skip
        node = Node(name, role, address, swarm, cap, self.rng.uniform(*self.latency), self.now)
        if role is Role.ENGINE:
            node.cursor = swarm.open_cursor()
            self.engines_total += 1
        self.nodes[address] = node
        self.announce(node)
        self.schedule(self.now + self.rng.uniform(0, self.args.tick), self.tick, node)
        return node

    def announce(self, node: Node) -> None:
        live = [a for a in self.nodes if a != node.address]
        node.swarm.add_candidates(self.rng.sample(live, min(TRACKER_SAMPLE, len(live))))

    def flags(self, node: Node) -> HandshakeFlags:
        if node.role is Role.SOURCE:
            return HandshakeFlags.SOURCE
        return HandshakeFlags.SEEDER if node.role is Role.SUPPORT else HandshakeFlags.NONE

    # -- events ------------------------------------------------------------------------------------------
    def tick(self, node: Node) -> None:
        if not node.alive:
            return
        now = self.now
        node.swarm.tick(now)
        self.play(node)
        for address in node.swarm.addresses_to_dial(now, node.connecting):
            target = self.nodes.get(address)
            rtt = 2 * (node.access_latency + (target.access_latency if target else 0.05))
            node.connecting.add(address)
            self.schedule(now + 1.5 * rtt, self.connect, (node, address))
        if node.role is Role.ENGINE and now - node.joined >= TRACKER_INTERVAL and self.rng.random() < (
            self.args.tick / TRACKER_INTERVAL
        ):
            self.announce(node)
        self.schedule(now + self.args.tick, self.tick, node)

    def connect(self, arg: tuple[Node, Address]) -> None:
        dialer, address = arg
        dialer.connecting.discard(address)
        target = self.nodes.get(address)
        now = self.now
        if not dialer.alive:
            return
        if target is None or not target.alive or not target.swarm.can_accept():
            dialer.swarm.dial_failed(address, now)
            return
        conn_a, conn_b = Connection(now=now), Connection(now=now)
        conn_a.send_handshake(Handshake(self.content_id, dialer.swarm.peer_id, 7764, self.flags(dialer)), now)
        conn_b.send_handshake(Handshake(self.content_id, target.swarm.peer_id, 7764, self.flags(target)), now)
        ev_b = conn_b.receive_data(conn_a.data_to_send(), now)
        ev_a = conn_a.receive_data(conn_b.data_to_send(), now)
        assert isinstance(ev_a[0], HandshakeReceived)
        assert isinstance(ev_b[0], HandshakeReceived)
        self.connections += [conn_a, conn_b]
        a_to_b, b_to_a = SimLink(self, dialer, target), SimLink(self, target, dialer)
        a_to_b.peer, b_to_a.peer = b_to_a, a_to_b
        sa = PeerSession(key=next(_session_keys), connection=conn_a, link=a_to_b, handshake=ev_a[0].handshake,
                         remote_ip=address[0], outbound=True, may_download=True, now=now)  # fmt: skip
        sb = PeerSession(key=next(_session_keys), connection=conn_b, link=b_to_a, handshake=ev_b[0].handshake,
                         remote_ip=dialer.address[0], outbound=False, may_download=True, now=now)  # fmt: skip
        b_to_a.session, a_to_b.session = sa, sb
        if target.swarm.attach(sb, now):
            dialer.swarm.attach(sa, now)

    def eof(self, link: SimLink) -> None:
        node = link.src
        # ``link`` is the direction from the node that now sees EOF; its receiving session is on the other side.
        session = link.peer.session if link.peer is not None else None
        if session is not None and node.alive and session.key in node.swarm.sessions:
            node.swarm.detach(session, self.now, "connection lost")
            link.closed = True

    def emit(self, _: object) -> None:
        index = self.next_index
        self.next_index += 1
        flags = PieceFlags.RANDOM_ACCESS if index % 10 == 0 else PieceFlags.NONE
        data = self.rng.randbytes(self.piece_real)
        signature = transport.sign_piece(self.key, self.content_id, index, flags, data)
        self.signatures[index] = signature
        self.emitted[index] = self.now
        self.source.swarm.add_local_piece(StoredPiece(index, flags, signature, data), self.now)
        self.schedule(self.now + 0.1, self.emit, None)

    def play(self, node: Node) -> None:
        cursor = node.cursor
        if cursor is None:
            return
        while True:
            piece = node.swarm.next_piece(cursor, self.now)
            if piece is None:
                return
            if node.first_delivery is None:
                node.first_delivery = self.now
            node.delivered += 1
            self.delays.append(self.now - self.emitted[piece.index])

    def join(self, _: object) -> None:
        cap = self.rng.choices([c for c, _ in self.mix], weights=[w for _, w in self.mix])[0]
        self.add_node(Role.ENGINE, cap, f"engine{self.engines_total}")

    def leave(self, node: Node) -> None:
        node.alive = False
        node.swarm.close(self.now)
        del self.nodes[node.address]
        self.retire(node)

    def retire(self, node: Node) -> None:
        if node.cursor is None:
            return
        self.delivered += node.delivered
        self.skipped += node.cursor.skipped
        if node.first_delivery is None:
            self.never_started += 1
        else:
            self.startups.append(node.first_delivery - node.joined)

    def churn(self, _: object) -> None:
        rate = self.args.churn * self.target_peers / 60.0  # each way, per second
        engines = [n for n in self.nodes.values() if n.role is Role.ENGINE]
        for _i in range(self._poisson(rate)):
            if engines:
                self.leave(engines.pop(self.rng.randrange(len(engines))))
        for _i in range(self._poisson(rate)):
            self.join(None)
        self.schedule(self.now + 1.0, self.churn, None)

    def _poisson(self, mean: float) -> int:
        limit, k, p = math.exp(-mean), 0, self.rng.random()
        while p > limit and k < 10_000:
            k += 1
            p *= self.rng.random()
        return k

    # -- run ---------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        args = self.args
        started = time.perf_counter()
        self.schedule(0.0, self.emit, None)
        for i in range(self.target_peers):
            self.schedule(args.ramp * i / max(1, self.target_peers), self.join, None)
        if args.churn > 0:
            self.schedule(args.ramp + 1.0, self.churn, None)
        heap = self._heap
        while heap and heap[0][0] <= args.duration:
            when, _, fn, arg = heapq.heappop(heap)
            self.now = when
            fn(arg)
        for node in self.nodes.values():
            self.retire(node)
        return self.figures(time.perf_counter() - started)

    def figures(self, wall: float) -> dict[str, Any]:
        delays = sorted(self.delays)
        startups = sorted(self.startups)
        control = sum(c.bytes_sent - c.payload_sent for c in self.connections)
        payload_virtual = sum(c.payload_sent for c in self.connections) * self.scale
        total_payload = sum(self.payload_by_role.values()) or 1.0

        def q(values: list[float], p: float) -> float | None:
            return round(values[min(len(values) - 1, int(p * len(values)))], 3) if values else None

        duration = self.args.duration
        return {
            "peers": self.target_peers, "engines_seen": self.engines_total, "duration_s": duration,
            "wall_s": round(wall, 1), "bitrate_mbit": self.args.bitrate, "pieces_emitted": self.next_index,
            "startup_p50_s": q(startups, 0.5), "startup_p95_s": q(startups, 0.95),
            "startup_max_s": round(startups[-1], 3) if startups else None, "never_started": self.never_started,
            "delay_p50_s": q(delays, 0.5), "delay_p95_s": q(delays, 0.95),
            "delay_max_s": round(delays[-1], 3) if delays else None,
            "continuity": round(self.delivered / max(1, self.delivered + self.skipped), 4),
            "source_upload_ratio": round(self.source.uploaded_virtual / (self.bitrate * duration), 3),
            "source_payload_ratio": round(self.source.payload_virtual / (self.bitrate * duration), 3),
            "share_from_engines": round(self.payload_by_role[Role.ENGINE] / total_payload, 4),
            "share_from_supports": round(self.payload_by_role[Role.SUPPORT] / total_payload, 4),
            "share_from_source": round(self.payload_by_role[Role.SOURCE] / total_payload, 4),
            "control_overhead": round(control / max(1.0, control + payload_virtual), 4),
            "source_peers_end": self.source.swarm.peer_count,
            "verifier": "STAND-IN (signature lookup by index; simulator only)",
        }  # fmt: skip


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=30.0, help="virtual seconds")
    parser.add_argument("--churn", type=lambda s: float(s.split("/")[0]), default=0.0,
                        help="share of peers leaving (and joining) per minute: 0.2 or 0.2/min")  # fmt: skip
    parser.add_argument("--latency", default="20-120", help="one-way pair latency range, ms (e.g. 20-120 or 20-120ms)")
    parser.add_argument("--bandwidth", default="1:0.3,4:0.4,20:0.3", help="engine upload mix, Mbit/s:weight,...")
    parser.add_argument("--loss", type=float, default=0.01)
    parser.add_argument("--bitrate", type=int, default=2, help="stream Mbit/s")
    parser.add_argument("--supports", type=int, default=3)
    parser.add_argument("--source-mbit", type=float, default=100.0)
    parser.add_argument("--support-mbit", type=float, default=100.0)
    parser.add_argument("--tick", type=float, default=0.25, help="Swarm.tick interval per node (the node uses 0.1)")
    parser.add_argument("--ramp", type=float, default=10.0, help="initial peers join evenly over this many seconds")
    parser.add_argument("--payload-scale", type=int, default=100)
    parser.add_argument("--scale", default="", help="comma-separated swarm sizes: scaling mode with a plot")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    args.latency = args.latency.removesuffix("ms")
    return args


def simulate(args: argparse.Namespace, peers: int) -> dict[str, Any]:
    original = transport.PieceVerifier.verify
    try:
        return Simulator(args, peers, args.seed).run()
    finally:
        transport.PieceVerifier.verify = original  # type: ignore[method-assign]


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["peers"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3), dpi=80)
    left.plot(sizes, [r["source_upload_ratio"] for r in results], "o-")
    left.set(xscale="log", xlabel="peers", ylabel="copies of the stream", title="source upload")
    left.set_ylim(bottom=0)
    right.plot(sizes, [r["delay_p50_s"] for r in results], "o-", label="p50")
    right.plot(sizes, [r["delay_p95_s"] for r in results], "s-", label="p95")
    right.set(xscale="log", xlabel="peers", ylabel="seconds", title="emit-to-player delay")
    right.set_ylim(bottom=0)
    right.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    args = parse()
    sizes = [int(s) for s in args.scale.split(",")] if args.scale else [args.peers]
    results = []
    for size in sizes:
        result = simulate(args, size)
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "sim-results.json").write_text(json.dumps(results, indent=1))
        if len(results) > 1:
            plot(results, out / "sim-scaling.png")


if __name__ == "__main__":
    main()
