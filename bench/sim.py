"""Discrete-event swarm simulator driving the REAL ``Swarm`` and ``Connection`` code on a virtual clock.

    python bench/sim.py --peers 10000 --churn 0.2/min [--duration 70] [--latency 20-120] [--bandwidth 1:.3,4:.4,20:.3]
    python bench/sim.py --scale 100,1000,10000 --churn 0.2/min --out /tmp/sim-results   # + sim-scaling.png

Model (what is simulated, what is approximate):
- One source swarm (role SOURCE, 8 upload slots) emits a piece every ``--piece-interval`` (0.2 s, as the real cutter)
  at the stream bitrate, RANDOM_ACCESS every ``--keyframe`` (1 s, i.e. every 5th piece), signed once with the real
  Ed25519 key. A few support nodes (role SUPPORT, 50 slots, the source pinned) and N engines (role ENGINE, 16 slots,
  one cursor = one player opened at join). Slots are the commands' defaults (src/swarmcast/commands/).
- Upload capacity: each engine draws an upload bandwidth from ``--bandwidth`` (Mbit/s:weight). It is both the cap of
  its uplink (below) and its ``SwarmConfig.upload_limit`` (the real engine's ``--upload-limit``: token bucket, REJECT
  over it). An engine drawn with 0 gets ``upload_slots=0`` (it never uploads pieces) and a 0.5 Mbit/s uplink for its
  control messages. Source and support nodes have no upload_limit (as the node defaults), only a link cap.
- Links: bytes written on any of a node's links queue FIFO on its uplink and drain at the cap, then arrive after a
  one-way latency (pair latency = the sum of two per-node access latencies, so pairs span the --latency range).
  Downloads are not capped. Loss on a TCP-like link is extra delay: a write is hit with probability --loss and
  arrives an RTT + 200 ms (a retransmission timeout) later; later bytes on that link wait behind it (in order).
- Time runs in steps of ``--grid`` (2 ms): an arrival is delivered at the end of its step (up to 2 ms late), bytes
  arriving on one link in one step are read in one go (one ``receive_data``), and each swarm flushes once per step,
  after all its events (``Swarm.flush_soon``, as the asyncio node flushes once per event-loop turn).
- Ticks: each node's ``Swarm.tick`` every ``--tick`` (0.1 s, the node's TICK_INTERVAL) at a random phase; dial
  scans as the node's host does them (every tick while short of peers, else once a second). The player reads when
  a piece was stored (the engine's piece listener) and polls every 0.25 s (the engine's POLL_INTERVAL).
- Payload scaling: piece data is ``--payload-scale`` times smaller in memory than the bitrate says (10,000 stores of
  real 50 kB pieces would not fit); links charge the full virtual size of every PIECE frame, the upload limit is
  scaled the same way, and reported bytes (source upload, peer share) are virtual. Control overhead counts the real
  control bytes against the virtual payload. A link's send buffer (``write_buffer_size``) counts real bytes, as the
  swarm subtracts it from its connection's real byte counts; so ``send_buffer_limit`` (4 MiB) stands for 100-1000x
  more of the stream than in a real engine and never binds here, where at 2 Mbit/s ``max_serving`` (32 pieces,
  1.6 MB) binds first in a real engine too. With the piece data drawn from a generator of its own, --payload-scale
  100 and 1000 give identical figures (docs/benchmarks.md, "100,000 peers").
- Memory: every address a PEX names is decoded by the real codec into a new tuple, string and port; the simulator
  swaps each for the one tuple it keeps per address before the swarm sees it (same values: the swarm's behaviour,
  and so every figure, is unchanged), as 100,000 engines' copies of each other's addresses would not fit. A real
  engine's memory is its own process's: bench/engine_cost.py measures that.
- Signatures: verification is replaced by a lookup of the real signature by index (the simulator ONLY), because
  10,000 peers x pieces of Ed25519 verification in Python is too slow.
- Discovery: a simulated tracker returns a random subset (40) of live nodes (source and supports included) at join
  and every 30 s; PEX is the Swarm's own.
- Churn: engines leave (``Swarm.close``: goodbyes) and new ones join at --churn x N per minute each way (Poisson).
- Figures: delay, continuity, source upload, shares and control overhead are measured after ``--warmup`` (default:
  the ramp); startup over every engine that joined, and separately over those that joined after the warmup.
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import itertools
import json
import math
import os
import random
import resource
import subprocess
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.sim_build

from bench import sim_build
from swarmcast import transport
from swarmcast.commands import engine as engine_command
from swarmcast.commands import node as node_command
from swarmcast.node.engine import ENGINE_TARGET_PEERS
from swarmcast.node.host import MAX_CONCURRENT_DIALS
from swarmcast.swarm import peer as peer_module
from swarmcast.swarm.core import Cursor, Role, Swarm, SwarmConfig
from swarmcast.swarm.peer import Address, PeerSession
from swarmcast.swarm.store import PieceStore, StoredPiece
from swarmcast.wire.connection import Connection, HandshakeReceived, MessageReceived
from swarmcast.wire.messages import MAX_WINDOW_PIECES, Handshake, HandshakeFlags, Pex, PieceFlags

TRACKER_SAMPLE = 40
TRACKER_INTERVAL = 30.0
RETRANSMIT = 0.2  # extra delay of a lost write, on top of an RTT
POLL_INTERVAL = 0.25  # the engine's player polls this often while it waits (node/engine.py)
DIAL_SCAN_INTERVAL = 1.0  # the host scans candidates once a second when not short of peers (node/host.py)
WALL_CHECK_STEPS = 50  # steps (0.1 virtual s) between looks at the wall clock and RSS (--wall-limit, --rss-limit)
GC_INTERVAL = 10.0  # virtual seconds between full garbage collections (see run)
ZERO_UPLINK = 0.5e6 / 8  # bytes/s of control traffic for an engine that uploads no pieces
# The collector during a run (see Simulator.run): no automatic collection at all, a full one every GC_INTERVAL
# virtual seconds. Young collections cost in proportion to what outlives them, and the more peers, the more of the
# messages and arrivals are still in flight when one runs: 8 % of the CPU at 10,000 peers in the ramp, 20 % at
# 100,000; off, 3,000 peers x 11 s took 3.9 instead of 7.7 s of GC (the one full collection), RSS the same.
# Reference counting frees all but cyclic garbage (swarms and links that left with churn), which waits for the
# next full collection.
KIND = {Role.SOURCE: 0, Role.SUPPORT: 1, Role.ENGINE: 2}  # index into per-role counters
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_session_keys = itertools.count(1)

Event = tuple[Callable[[Any], None], Any]


def command_defaults() -> dict[Role, tuple[int, int]]:
    """(--upload-slots, --max-peers) as the real commands default them (src/swarmcast/commands), per role."""
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    engine_command.register(commands)
    node_command.register(commands)
    argv = {Role.SOURCE: ["node", "source", "--source", "-", "--title", "-"],
            Role.SUPPORT: ["node", "support", "--url", "-"], Role.ENGINE: ["engine"]}  # fmt: skip
    return {role: (args.upload_slots, args.max_peers) for role, args in
            ((role, parser.parse_args(a)) for role, a in argv.items())}  # fmt: skip


def engine_kind() -> str:
    """How this process runs the swarm code: "python" (interpreted) or "mypyc <build>" (bench/sim_build.py)."""
    from swarmcast.swarm import core

    if sim_build.is_compiled(core):
        return f"mypyc {Path(core.__file__).resolve().parents[2].name}"
    return "python"


def code_version() -> str:
    """Which swarm code a result came from: git HEAD (+ "dirty" when src/ differs from it) and a hash of core.py."""
    from swarmcast.swarm import core

    path = Path(core.__file__).resolve()
    if sim_build.is_compiled(core):  # the mypyc copy: its core.py is the source it was compiled from
        path = path.with_name("core.py")
    digest = hashlib.sha1(path.read_bytes(), usedforsecurity=False).hexdigest()[:10]
    root = Path(__file__).resolve().parents[1]
    if root not in path.parents and not sim_build.is_compiled(core):  # a swarmcast from elsewhere (PYTHONPATH)
        return f"{path.parents[2]} core.py {digest}"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "src"], cwd=root, check=False).returncode
    except (OSError, subprocess.CalledProcessError):
        return f"core.py {digest}"
    return f"{head}{' dirty' if dirty else ''} core.py {digest}"


# The harness's own version: raised when a change here moves the figures for the same arguments (2: the piece
# data drawn from its own generator), so --reuse never takes a result of another model for this one.
MODEL = 2
CODE_VERSION = code_version()  # at import: the code this process runs, even if the files change meanwhile
ENGINE = engine_kind()


@dataclass(slots=True, eq=False)
class Node:
    name: str
    role: Role
    kind: int
    address: Address
    swarm: Swarm
    cap: float  # uplink bytes/s (virtual)
    access_latency: float
    joined: float
    slot: int  # tick phase
    cursor: Cursor | None = None
    alive: bool = True
    uplink_free_at: float = 0.0
    uploaded_virtual: float = 0.0
    connecting: set[Address] = field(default_factory=set)
    first_delivery: float | None = None
    delivered: int = 0  # pieces handed to the player in the measured window
    skip_mark: int = 0  # cursor.skipped when the measured window opened
    woken: bool = False
    next_poll: float = 0.0
    last_dial_scan: float = -1e9
    next_announce: float = 0.0


class SimLink:
    """One direction of a simulated TCP connection (the ``PeerLink`` under a session)."""

    __slots__ = ("closed", "conn", "dst", "last_delivery", "latency", "payload_mark", "peer", "queue", "queued",
                 "session", "sim", "src", "tail", "tail_step")  # fmt: skip

    def __init__(self, sim: Simulator, src: Node, dst: Node, conn: Connection) -> None:
        self.sim, self.src, self.dst = sim, src, dst
        self.conn = conn  # the sending connection: its payload counter says how much of a write is piece data
        self.payload_mark = conn.payload_sent
        self.session: PeerSession | None = None  # the receiving session at dst
        self.peer: SimLink | None = None
        self.closed = False
        self.latency = src.access_latency + dst.access_latency
        # (leaves the uplink at, real bytes) still on src's uplink. Real, not virtual: the swarm subtracts this from
        # its connection's real byte counts (PeerSession.pieces_in_flight, liveness.stalled).
        self.queue: deque[tuple[float, int]] = deque()
        self.queued = 0
        self.last_delivery = 0.0
        self.tail: list[bytes] = []
        self.tail_step = -1

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        sim, src = self.sim, self.src
        sent = self.conn.payload_sent
        payload = sent - self.payload_mark  # real piece bytes in this write
        self.payload_mark = sent
        real = len(data)
        if payload:
            size = real + payload * sim.scale_less_one
            sim.payload_by_kind[src.kind] += payload * sim.scale
        else:
            size = real
        sim.control_bytes += real - payload
        now = sim.now
        start = src.uplink_free_at if src.uplink_free_at > now else now  # FIFO behind what is queued
        finish = start + size / src.cap
        src.uplink_free_at = finish
        src.uploaded_virtual += size
        self.queue.append((finish, real))
        self.queued += real
        deliver = finish + self.latency
        if sim.loss and sim.rng.random() < sim.loss:
            deliver += 2 * self.latency + RETRANSMIT
        if deliver < self.last_delivery:  # noqa: PLR1730 - in order: behind a retransmission (builtin max is slower)
            deliver = self.last_delivery
        self.last_delivery = deliver
        step = int(deliver * sim.inv_grid) + 1
        if step == self.tail_step:
            self.tail.append(data)  # read together with the bytes already arriving in that step
            return
        chunks = [data]
        self.tail, self.tail_step = chunks, step
        bucket = sim.buckets.get(step)
        if bucket is None:
            sim.buckets[step] = [(self._deliver, chunks)]
        else:
            bucket.append((self._deliver, chunks))

    def _deliver(self, chunks: list[bytes]) -> None:
        session, dst = self.session, self.dst
        if session is None or not dst.alive:
            return
        swarm = dst.swarm
        if session.key in swarm.sessions:
            now = self.sim.now
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            events = session.connection.receive_data(data, now)
            for i, event in enumerate(events):
                if type(event) is MessageReceived and type(event.message) is Pex:
                    events[i] = self.sim.shared_pex(event.message)
            swarm.handle_events(session, events, now)

    def write_buffer_size(self) -> int:
        queue = self.queue
        if queue:
            now = self.sim.now
            if queue[-1][0] <= now:  # all of it has left the uplink
                queue.clear()
                self.queued = 0
            else:
                while queue[0][0] <= now:
                    self.queued -= queue.popleft()[1]
        return self.queued

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        peer = self.peer
        if peer is not None:
            # The far end sees EOF once the bytes in flight have arrived.
            self.sim.schedule(max(self.last_delivery, self.sim.now + self.latency), self.sim.eof, peer)


class SimSession(PeerSession):
    """The swarm's ``PeerSession``, with the two flags read off the handshake computed once rather than per access.

    Same values (a handshake never changes); the properties cost two IntFlag operations, microseconds, and the
    request scan reads them for every peer on every message. The real nodes take the status from a verified
    credential (swarm/authority.py), never from the flags; every simulated node is honest, so the flags stand in.
    """

    is_source = False
    is_seeder = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        flags = int(self.handshake.flags)
        self.is_source = bool(flags & HandshakeFlags.SOURCE.value)
        self.is_seeder = bool(flags & (HandshakeFlags.SOURCE.value | HandshakeFlags.SEEDER.value))

    def __hash__(self) -> int:
        # By the session's number rather than its memory address: the swarm keeps sessions in sets (the outbox's
        # dirty set decides the order of writes on an uplink), and addresses differ from run to run. With this and
        # a fixed PYTHONHASHSEED a run is a function of --seed (tests/bench/test_sim_engine.py relies on it).
        return self.key


# The mypyc build (bench/sim_build.py) compiles PeerSession with SimSession's two overrides written into it (a
# compiled class cannot be subclassed here); otherwise the interpreted PeerSession is subclassed as above.
SESSION: type[PeerSession] = PeerSession if sim_build.is_compiled(peer_module) else SimSession


def rss_mb() -> float:
    """This process's resident memory now, MiB (Linux /proc/self/statm; elsewhere the peak, getrusage)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE / (1 << 20)
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class GcClock:
    """CPU seconds spent in garbage collection while installed (``gc.callbacks``): the progress line's ``gc=``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._started = 0.0

    def __call__(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.seconds += time.process_time() - self._started
            self.collections += 1


class LiveSet:
    """Nodes with O(1) add, remove and random choice (the tracker's and churn's view)."""

    def __init__(self) -> None:
        self.items: list[Node] = []
        self._pos: dict[int, int] = {}

    def add(self, node: Node) -> None:
        self._pos[id(node)] = len(self.items)
        self.items.append(node)

    def remove(self, node: Node) -> None:
        pos = self._pos.pop(id(node), None)
        if pos is None:
            return
        last = self.items.pop()
        if last is not node:
            self.items[pos] = last
            self._pos[id(last)] = pos

    def __len__(self) -> int:
        return len(self.items)


class Simulator:
    def __init__(self, args: argparse.Namespace, peers: int, seed: int) -> None:
        self.args = args
        self.rng = random.Random(seed)
        self.payload_rng = random.Random(seed + 1_000_003)  # piece data only (emit)
        self.now = 0.0
        self.step = -1
        self.grid: float = args.grid
        self.inv_grid = 1.0 / self.grid
        self.buckets: dict[int, list[Event]] = {}
        self.tick_slots: list[list[Node]] = [[] for _ in range(max(1, round(args.tick / self.grid)))]
        self.dirty: list[Swarm] = []
        self.woken: list[Node] = []
        self.loss: float = args.loss
        self.scale: int = args.payload_scale
        self.scale_less_one = self.scale - 1
        self.bitrate: int = round(args.bitrate * 1_000_000 / 8)  # bytes/s
        self.piece_interval: float = args.piece_interval
        self.random_access_every = max(1, round(args.keyframe / self.piece_interval))
        self.piece_virtual = int(self.bitrate * self.piece_interval)
        self.piece_real = max(1, self.piece_virtual // self.scale)
        self.nodes: dict[Address, Node] = {}
        self.addresses: dict[Address, Address] = {}  # each address PEX named, once (shared_pex)
        self.live = LiveSet()
        self.live_engines = LiveSet()
        self.engines_total = 0
        self.emitted = array("d")
        self.delays = array("d")
        self.startups: list[float] = []
        self.startups_after_warmup: list[float] = []
        self.never_started = 0
        self.never_started_10s = 0  # of the engines that were in the swarm for at least 10 s
        self.skipped = 0
        self.delivered = 0
        self.control_bytes = 0
        self.payload_by_kind = [0.0, 0.0, 0.0]
        self.warmup: float = args.warmup if args.warmup is not None else args.ramp
        self.measuring = False
        self.wall_limit: float = args.wall_limit
        self.rss_limit: float = args.rss_limit
        self.ended_at: float = args.duration  # virtual time the run stopped at (earlier only with a limit)
        self.marks: dict[str, Any] = {}
        self.gc_clock = GcClock()
        self._ip = itertools.count(1)
        low, high = (float(x) / 1000 for x in args.latency.split("-"))
        self.latency = (low / 2, high / 2)
        self.mix = [(float(m) * 1e6 / 8, float(w)) for m, w in (p.split(":") for p in args.bandwidth.split(","))]
        self.target_peers = peers
        self.defaults = command_defaults()
        self.key = Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32))  # the seed decides everything
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

    def shared_pex(self, pex: Pex) -> MessageReceived:
        """The same PEX with each address the one tuple the run keeps for it (see "Memory" in the module doc)."""
        addresses = self.addresses
        return MessageReceived(Pex(tuple([addresses.setdefault(a, a) for a in pex.peers])))

    # -- plumbing ----------------------------------------------------------------------------------------
    def schedule(self, when: float, fn: Callable[[Any], None], arg: Any) -> None:
        step = math.ceil(when * self.inv_grid - 1e-9)
        if step <= self.step:
            step = self.step + 1
        bucket = self.buckets.get(step)
        if bucket is None:
            self.buckets[step] = [(fn, arg)]
        else:
            bucket.append((fn, arg))

    def add_node(self, role: Role, cap: float, name: str) -> Node:
        n = next(self._ip)
        address = (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 7764)
        seconds = 30 if role is Role.ENGINE else 120
        store = PieceStore(max_bytes=math.ceil(seconds / self.piece_interval) * self.piece_real + 1,
                           window_pieces=MAX_WINDOW_PIECES)  # fmt: skip
        slots, max_peers = self.defaults[role]
        slots = slots if cap > 0 else 0
        # The engine's --upload-limit counts piece data; ours is ``scale`` times smaller than the bytes it stands for.
        limit = max(1, round(cap / self.scale)) if role is Role.ENGINE and cap > 0 else 0
        if role is Role.ENGINE:  # as node/engine.py configures a viewer
            config = SwarmConfig(role=role, target_peers=ENGINE_TARGET_PEERS, upload_slots=slots, upload_limit=limit,
                                 max_peers=max_peers)  # fmt: skip
        else:
            config = SwarmConfig(role=role, upload_slots=slots, max_peers=max_peers)
        swarm = Swarm(content_id=self.content_id, peer_id=self.rng.randbytes(20), config=config, store=store,
                      descriptor=self.descriptor, now=self.now, rng=random.Random(self.rng.random()))  # fmt: skip
        slot = self.rng.randrange(len(self.tick_slots))
        node = Node(name, role, KIND[role], address, swarm, cap if cap > 0 else ZERO_UPLINK,
                    self.rng.uniform(*self.latency), self.now, slot)  # fmt: skip
        swarm.flush_soon = functools.partial(self.dirty.append, swarm)
        if role is Role.ENGINE:
            node.cursor = swarm.open_cursor()
            swarm.piece_listeners.append(functools.partial(self._wake, node))
            self.engines_total += 1
            self.live_engines.add(node)
        node.next_announce = self.now + TRACKER_INTERVAL
        self.nodes[address] = node
        self.tick_slots[slot].append(node)
        self.announce(node)
        self.live.add(node)
        return node

    def _wake(self, node: Node, _index: int) -> None:
        if not node.woken:
            node.woken = True
            self.woken.append(node)

    def announce(self, node: Node) -> None:
        """The tracker's answer: candidates, dialled at once (``PeerHost.dial_now``)."""
        live = self.live.items
        sample = self.rng.sample(live, min(TRACKER_SAMPLE + 1, len(live)))
        node.swarm.add_candidates([n.address for n in sample if n is not node][:TRACKER_SAMPLE])
        self.dial(node, self.now)

    def dial(self, node: Node, now: float) -> None:
        """``PeerHost._dial``: at most MAX_CONCURRENT_DIALS attempts in flight; each opens 1.5 RTT later."""
        connecting = node.connecting
        node.last_dial_scan = now
        if len(connecting) >= MAX_CONCURRENT_DIALS:
            return
        for address in node.swarm.addresses_to_dial(now, connecting):
            if len(connecting) >= MAX_CONCURRENT_DIALS:
                break
            target = self.nodes.get(address)
            rtt = 2 * (node.access_latency + (target.access_latency if target else 0.05))
            connecting.add(address)
            self.schedule(now + 1.5 * rtt, self.connect, (node, address))  # TCP + our handshake

    def flags(self, node: Node) -> HandshakeFlags:
        if node.role is Role.SOURCE:
            return HandshakeFlags.SOURCE
        return HandshakeFlags.SEEDER if node.role is Role.SUPPORT else HandshakeFlags.NONE

    # -- events ------------------------------------------------------------------------------------------
    def tick(self, node: Node, now: float) -> None:
        swarm = node.swarm
        swarm.tick(now)
        if swarm.wants_peers() or now - node.last_dial_scan >= DIAL_SCAN_INTERVAL:
            self.dial(node, now)
        if node.kind and now >= node.next_announce:  # everyone but the source re-announces (it only seeds)
            node.next_announce = now + TRACKER_INTERVAL
            self.announce(node)
        if node.cursor is not None and now >= node.next_poll:
            self.play(node)

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
        hello_a, hello_b = conn_a.data_to_send(), conn_b.data_to_send()
        self.control_bytes += len(hello_a) + len(hello_b)
        ev_b = conn_b.receive_data(hello_a, now)
        ev_a = conn_a.receive_data(hello_b, now)
        assert isinstance(ev_a[0], HandshakeReceived)
        assert isinstance(ev_b[0], HandshakeReceived)
        a_to_b, b_to_a = SimLink(self, dialer, target, conn_a), SimLink(self, target, dialer, conn_b)
        a_to_b.peer, b_to_a.peer = b_to_a, a_to_b
        sa = SESSION(key=next(_session_keys), connection=conn_a, link=a_to_b, handshake=ev_a[0].handshake,
                        remote_ip=address[0], outbound=True, may_download=True, now=now)  # fmt: skip
        sb = SESSION(key=next(_session_keys), connection=conn_b, link=b_to_a, handshake=ev_b[0].handshake,
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
        flags = PieceFlags.RANDOM_ACCESS if index % self.random_access_every == 0 else PieceFlags.NONE
        # Its own generator: drawn from self.rng, the payload's size (--payload-scale) would move every later draw
        # and so the whole run, as another seed would.
        data = self.payload_rng.randbytes(self.piece_real)
        signature = transport.sign_piece(self.key, self.content_id, index, flags, data)
        self.signatures[index] = signature
        self.emitted.append(self.now)
        self.source.swarm.add_local_piece(StoredPiece(index, flags, signature, data), self.now)
        self.schedule((index + 1) * self.piece_interval, self.emit, None)

    def play(self, node: Node) -> None:
        cursor = node.cursor
        assert cursor is not None
        now, swarm = self.now, node.swarm
        node.next_poll = now + POLL_INTERVAL
        while True:
            piece = swarm.next_piece(cursor, now)
            if piece is None:
                return
            if node.first_delivery is None:
                node.first_delivery = now
            if self.measuring:
                node.delivered += 1
                self.delays.append(now - self.emitted[piece.index])

    def join(self, _: object) -> None:
        cap = self.rng.choices([c for c, _ in self.mix], weights=[w for _, w in self.mix])[0]
        self.add_node(Role.ENGINE, cap, f"engine{self.engines_total}")

    def leave(self, node: Node) -> None:
        node.alive = False
        node.swarm.close(self.now)
        del self.nodes[node.address]
        self.live.remove(node)
        self.live_engines.remove(node)
        self.tick_slots[node.slot].remove(node)
        self.retire(node)

    def retire(self, node: Node) -> None:
        cursor = node.cursor
        if cursor is None:
            return
        now = self.now
        if self.measuring:
            self.delivered += node.delivered
            self.skipped += cursor.skipped - node.skip_mark
        if node.first_delivery is None:
            self.never_started += 1
            if now - node.joined >= 10.0:
                self.never_started_10s += 1
        else:
            startup = node.first_delivery - node.joined
            self.startups.append(startup)
            if node.joined >= self.warmup:
                self.startups_after_warmup.append(startup)

    def churn(self, _: object) -> None:
        rate = self.args.churn * self.target_peers / 60.0  # each way, per second
        engines = self.live_engines
        for _i in range(self._poisson(rate)):
            if len(engines):
                self.leave(engines.items[self.rng.randrange(len(engines))])
        for _i in range(self._poisson(rate)):
            self.join(None)
        self.schedule(self.now + 1.0, self.churn, None)

    def mark(self, _: object) -> None:
        """Open the measured window: counters from here on."""
        self.measuring = True
        for node in self.live_engines.items:
            assert node.cursor is not None
            node.skip_mark = node.cursor.skipped
        self.marks = {"source": self.source.uploaded_virtual, "broadcaster": self._broadcaster_uploaded(),
                      "source_payload": self.payload_by_kind[0],
                      "payload": list(self.payload_by_kind), "control": self.control_bytes}  # fmt: skip

    def _broadcaster_uploaded(self) -> float:
        """What the broadcaster pays for: the uplink bytes (virtual) of the source and every support node."""
        return self.source.uploaded_virtual + sum(node.uploaded_virtual for node in self.supports)

    def _poisson(self, mean: float) -> int:
        limit, k, p = math.exp(-mean), 0, self.rng.random()
        while p > limit and k < 10_000:
            k += 1
            p *= self.rng.random()
        return k

    def _progress(self, started: float, cpu: float) -> None:
        print(f"[sim {self.target_peers}] t={self.now:6.1f} s  wall={time.perf_counter() - started:7.1f} s  "
              f"cpu={time.process_time() - cpu:7.1f} s  gc={self.gc_clock.seconds:6.1f} s  rss={rss_mb():6.0f} MB  "
              f"nodes={len(self.live)}  pieces={self.next_index}  deliveries={len(self.delays)}",
              file=sys.stderr, flush=True)  # fmt: skip

    # -- run ---------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        args = self.args
        started, cpu = time.perf_counter(), time.process_time()
        self.schedule(0.0, self.emit, None)
        for i in range(self.target_peers):
            self.schedule(args.ramp * i / max(1, self.target_peers), self.join, None)
        if args.churn > 0:
            self.schedule(args.ramp + 1.0, self.churn, None)
        self.schedule(self.warmup, self.mark, None)
        progress_steps = round(args.progress * self.inv_grid) if args.progress > 0 else 0
        collect_steps = round(GC_INTERVAL * self.inv_grid)
        last = math.floor(args.duration * self.inv_grid + 1e-9)
        # Messages, queue entries and arrivals live about a second: automatic collections look at them again and
        # again (see GC_INTERVAL). None runs by itself; full ones run every GC_INTERVAL.
        # What exists now (modules, the key, the source and support nodes) lives for the whole run: frozen, no
        # collection looks at it again.
        # Frozen only if nothing is yet: gc.unfreeze() thaws everything, so a run inside a process that froze its own
        # (a node's tune_gc in the same test worker) leaves the collector as it found it, at some speed.
        frozen_before = gc.get_freeze_count()
        gc.collect()
        if not frozen_before:
            gc.freeze()
        enabled = gc.isenabled()
        gc.disable()
        gc.callbacks.append(self.gc_clock)
        try:
            self._loop(last, progress_steps, collect_steps, started, cpu)
        finally:
            gc.callbacks.remove(self.gc_clock)
            if enabled:
                gc.enable()
            if not frozen_before:
                gc.unfreeze()
        if not self.measuring:
            self.mark(None)
        for node in self.nodes.values():
            self.retire(node)
        return self.figures(time.perf_counter() - started, time.process_time() - cpu)

    def _loop(self, last: int, progress_steps: int, collect_steps: int, started: float, cpu: float) -> None:
        buckets, slots, dirty, woken = self.buckets, self.tick_slots, self.dirty, self.woken
        n_slots = len(slots)
        for step in range(last + 1):
            self.step = step
            now = self.now = step * self.grid
            events = buckets.pop(step, None)
            if events is not None:
                for fn, arg in events:
                    fn(arg)
            for node in slots[step % n_slots]:
                self.tick(node, now)
            if dirty:
                batch = dirty.copy()
                dirty.clear()
                for swarm in batch:
                    swarm.flush()
            if woken:
                batch_nodes = woken.copy()
                woken.clear()
                for node in batch_nodes:
                    node.woken = False
                    if node.alive:
                        self.play(node)
            if step % collect_steps == 0 and step:
                gc.collect()  # what left with churn (swarms, links: reference cycles)
            if progress_steps and step % progress_steps == 0 and step:
                self._progress(started, cpu)
            if step % WALL_CHECK_STEPS == 0 and (self.wall_limit or self.rss_limit):
                reached = self._limit_reached(started)
                if reached:
                    self.ended_at = now  # out of wall time or memory: the figures cover the virtual time run so far
                    print(f"[sim {self.target_peers}] {reached} reached at t={now:.1f} s", file=sys.stderr, flush=True)
                    return

    def _limit_reached(self, started: float) -> str:
        """Which of --wall-limit and --rss-limit the run has reached ("" for neither)."""
        if self.wall_limit and time.perf_counter() - started > self.wall_limit:
            return f"--wall-limit {self.wall_limit:g} s"
        if self.rss_limit and rss_mb() > self.rss_limit:
            return f"--rss-limit {self.rss_limit:g} MB"
        return ""

    def figures(self, wall: float, cpu: float) -> dict[str, Any]:
        delays = sorted(self.delays)
        startups = sorted(self.startups)
        later = sorted(self.startups_after_warmup)
        marks = self.marks
        window = max(1e-9, self.ended_at - self.warmup)
        payload = [now - before for now, before in zip(self.payload_by_kind, marks["payload"], strict=True)]
        total_payload = sum(payload) or 1.0
        control = self.control_bytes - marks["control"]

        def q(values: list[float], p: float) -> float | None:
            return round(values[min(len(values) - 1, int(p * len(values)))], 3) if values else None

        stream = self.bitrate * window
        return {
            "peers": self.target_peers, "engines_seen": self.engines_total, "duration_s": self.args.duration,
            "window_s": round(window, 3), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "stopped_early": self.ended_at < self.args.duration, "ended_at_s": round(self.ended_at, 3),
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "gc_s": round(self.gc_clock.seconds, 1), "gc_collections": self.gc_clock.collections,
            "bitrate_mbit": self.args.bitrate, "pieces_emitted": self.next_index,
            "startup_p50_s": q(startups, 0.5), "startup_p95_s": q(startups, 0.95),
            "startup_max_s": round(startups[-1], 3) if startups else None,
            "startup_after_warmup_p50_s": q(later, 0.5), "startup_after_warmup_p95_s": q(later, 0.95),
            "never_started": self.never_started, "never_started_10s": self.never_started_10s,
            "delay_p50_s": q(delays, 0.5), "delay_p95_s": q(delays, 0.95), "delay_p99_s": q(delays, 0.99),
            "delay_max_s": round(delays[-1], 3) if delays else None,
            "continuity": round(self.delivered / max(1, self.delivered + self.skipped), 4),
            "source_upload_ratio": round((self.source.uploaded_virtual - marks["source"]) / stream, 3),
            "broadcaster_upload_ratio": round((self._broadcaster_uploaded() - marks["broadcaster"]) / stream, 3),
            "source_payload_ratio": round(payload[0] / stream, 3),
            "share_from_engines": round(payload[2] / total_payload, 4),
            "share_from_supports": round(payload[1] / total_payload, 4),
            "share_from_source": round(payload[0] / total_payload, 4),
            "control_overhead": round(control / max(1.0, control + sum(payload)), 4),
            "source_peers_end": self.source.swarm.peer_count,
            "verifier": "STAND-IN (signature lookup by index; simulator only)",
            "upload_slots": {role.value: slots for role, (slots, _) in self.defaults.items()},
            "code": CODE_VERSION, "engine": ENGINE,
            "params": params(self.args),
        }  # fmt: skip


def params(args: argparse.Namespace) -> dict[str, Any]:
    """What a result depends on besides the swarm size (``--reuse`` matches on it)."""
    skip = {"peers", "scale", "out", "reuse", "progress", "mypyc", "plot_from", "wall_limit", "rss_limit"}
    return {"model": MODEL, **{k: v for k, v in sorted(vars(args).items()) if k not in skip}}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=70.0, help="virtual seconds (default 70: the ramp + 60)")
    parser.add_argument("--churn", type=lambda s: float(s.split("/")[0]), default=0.0,
                        help="share of peers leaving (and joining) per minute: 0.2 or 0.2/min")  # fmt: skip
    parser.add_argument("--latency", default="20-120", help="one-way pair latency range, ms (e.g. 20-120 or 20-120ms)")
    parser.add_argument("--bandwidth", default="1:0.3,4:0.4,20:0.3",
                        help="engine upload mix, Mbit/s:weight,... (0 = uploads nothing: upload_slots 0)")  # fmt: skip
    parser.add_argument("--loss", type=float, default=0.01)
    parser.add_argument("--bitrate", type=float, default=2, help="stream Mbit/s")
    parser.add_argument("--piece-interval", type=float, default=0.2, help="seconds per piece (the cutter's 0.2)")
    parser.add_argument("--keyframe", type=float, default=1.0, help="seconds between RANDOM_ACCESS pieces")
    parser.add_argument("--supports", type=int, default=3)
    parser.add_argument("--source-mbit", type=float, default=100.0)
    parser.add_argument("--support-mbit", type=float, default=100.0)
    parser.add_argument("--tick", type=float, default=0.1, help="Swarm.tick interval per node (the node's 0.1)")
    parser.add_argument("--grid", type=float, default=0.002, help="time step, s: arrivals are rounded up to it")
    parser.add_argument("--ramp", type=float, default=10.0, help="initial peers join evenly over this many seconds")
    parser.add_argument("--warmup", type=float, default=None, help="measure from this virtual second (default: ramp)")
    parser.add_argument("--payload-scale", type=int, default=100)
    parser.add_argument("--scale", default="", help="comma-separated swarm sizes: scaling mode with a plot")
    parser.add_argument("--reuse", default="",
                        help="JSON files (comma-separated) of earlier results: sizes run with the same params reused")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--progress", type=float, default=10.0, help="progress line (stderr) every so many virtual s")
    parser.add_argument("--wall-limit", type=float, default=0.0,
                        help="stop after so many wall seconds and report the figures of the virtual time run so far "
                             "(stopped_early, ended_at_s in the result); 0 = run to --duration")  # fmt: skip
    parser.add_argument("--rss-limit", type=float, default=0.0,
                        help="stop once the process's resident memory exceeds so many MB, reporting the figures "
                             "so far as --wall-limit does (a large run that would not fit stops with figures "
                             "instead of swapping or being killed); 0 = no limit")  # fmt: skip
    parser.add_argument("--out", default="", help="directory for sim-results.json (and sim-scaling.png)")
    parser.add_argument("--plot-from", default="",
                        help="no run: table and sim-scaling.png (into --out) of the results in these JSON files")
    parser.add_argument("--mypyc", action="store_true",
                        help="run the same swarm/ and wire/ code compiled with mypyc (bench/sim_build.py; built once "
                             "per source tree, minutes)")  # fmt: skip
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

    results = sorted(results, key=lambda r: r["peers"])
    sizes = [r["peers"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=80)
    broadcaster = [(n, r["broadcaster_upload_ratio"]) for n, r in zip(sizes, results, strict=True)
                   if r.get("broadcaster_upload_ratio") is not None]  # fmt: skip
    if broadcaster:
        left.plot(*zip(*broadcaster, strict=True), "o-", label="broadcaster (source + support)")
    left.plot(sizes, [r["source_upload_ratio"] for r in results], "s--", label="source alone")
    left.axhline(2.0, color="grey", linestyle="--", linewidth=1, label="target ≤ 2")
    # Log scale: the support nodes' tens of copies and the source's one both show.
    left.set(xscale="log", yscale="log", xlabel="peers", ylabel="copies of the stream", title="broadcaster upload")
    left.legend(fontsize="small")
    right.plot(sizes, [r["delay_p50_s"] for r in results], "o-", label="p50")
    right.plot(sizes, [r["delay_p95_s"] for r in results], "s-", label="p95")
    right.axhline(2.5, color="grey", linestyle="--", linewidth=1, label="p95 target ≤ 2.5 s")
    right.set(xscale="log", xlabel="peers", ylabel="seconds", title="emit-to-player delay")
    right.set_ylim(bottom=0)
    right.legend(fontsize="small")
    def ran(r: dict[str, Any]) -> float:  # virtual seconds run: the duration, or where a limit stopped it
        return float(r.get("ended_at_s", r["duration_s"]))

    short = [r for r in results if ran(r) != ran(results[0])]
    if short:  # a size run for another length (the 100,000-peer run): say so on the figure
        fig.text(0.01, 0.01, f"{ran(results[0]):g} virtual s each; " + "; ".join(
            f"{r['peers']:,} peers: {ran(r):g} s{' (stopped by a limit)' if r.get('stopped_early') else ''}"
            for r in short), fontsize="x-small", color="grey")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _earlier(paths: str) -> list[dict[str, Any]]:
    """The results in one or more (comma-separated) sim-results.json files."""
    found: list[dict[str, Any]] = []
    for path in filter(None, paths.split(",")):
        data = json.loads(Path(path).read_text())
        found.extend(data if isinstance(data, list) else [data])
    return found


def run_compiled() -> None:
    """``--mypyc``: build (or find) the compiled copy and run this command again with it first on the path."""
    if os.environ.get(sim_build.ENV):
        if ENGINE == "python":
            sys.exit(f"sim: --mypyc: {os.environ[sim_build.ENV]} did not provide the compiled modules")
        return
    print("[sim] building the mypyc copy of swarm/ and wire/ (once per source tree) ...", file=sys.stderr, flush=True)
    try:
        build = sim_build.build()
    except sim_build.BuildError as error:
        sys.exit(f"sim: --mypyc: {error}")
    env = dict(os.environ, **{sim_build.ENV: str(build)})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(build), os.environ.get("PYTHONPATH", "")) if p)
    os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]], env)


def main() -> None:
    args = parse()
    if args.plot_from:
        results = sorted(_earlier(args.plot_from), key=lambda r: r["peers"])
        print(table(results), flush=True)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            plot(results, Path(args.out) / "sim-scaling.png")
        return
    if args.mypyc:
        run_compiled()
    sizes = [int(s) for s in args.scale.split(",")] if args.scale else [args.peers]
    earlier = _earlier(args.reuse)
    results = []
    for size in sizes:
        args.peers = size
        found = [r for r in earlier if r.get("peers") == size and r.get("params") == params(args)
                 and not r.get("stopped_early")]  # fmt: skip
        result = dict(found[0], reused=args.reuse) if found else simulate(args, size)
        results.append(result)
        print(json.dumps(result), flush=True)
    print(table(results), flush=True)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "sim-results.json").write_text(json.dumps(results, indent=1))
        if len(results) > 1:
            plot(results, out / "sim-scaling.png")


def table(results: list[dict[str, Any]]) -> str:
    """The figures as a Markdown table (docs/benchmarks-sim.md)."""

    def f(value: Any, fmt: str = "{}") -> str:
        return "–" if value is None else fmt.format(value)

    lines = ["| peers | wall / cpu | startup p50 / p95 (after warmup) | never started (≥10 s) | delay p50 / p95 / max "
             "| continuity | broadcaster (source) upload | from engines / supports / source | control |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        stopped = f" (to t = {r['ended_at_s']:g} s)" if r.get("stopped_early") else ""
        lines.append(
            f"| {r['peers']}{stopped} "
            f"| {r['wall_s']:.0f} / {r['cpu_s']:.0f} s "
            f"| {f(r['startup_p50_s'])} / {f(r['startup_p95_s'])} s "
            f"({f(r['startup_after_warmup_p50_s'])} / {f(r['startup_after_warmup_p95_s'])} s) "
            f"| {r['never_started']} ({r['never_started_10s']}) / {r['engines_seen']} "
            f"| {f(r['delay_p50_s'])} / {f(r['delay_p95_s'])} / {f(r['delay_max_s'])} s | {r['continuity']:.4f} "
            f"| {f(r.get('broadcaster_upload_ratio'), '{:.2f}')} ({r['source_upload_ratio']:.2f}) × "
            f"| {100 * r['share_from_engines']:.1f} / "
            f"{100 * r['share_from_supports']:.1f} / {100 * r['share_from_source']:.1f} % "
            f"| {100 * r['control_overhead']:.1f} % |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
