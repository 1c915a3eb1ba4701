"""Fan-out benchmark: one support-node-like server (real PeerHost + Swarm, pinned to one core) serving K peers.

The server runs in its own process (``multiprocessing`` spawn), pinned to CPU 0, with a store pre-filled with
signed pieces. K clients in this process (pinned to CPU 1 when there is one) speak the real protocol through the
sans-IO ``Connection``: INTERESTED, then REQUEST with at most ``--outstanding`` pieces in flight each, discarding
the data. Reported: server upload (wire bytes/s from the swarm's counters), Jain's fairness over per-peer bytes,
server CPU (process time / wall time) and, with ``--profile``, a cProfile top-20 of the server.

    python bench/fanout.py --peers 8 --seconds 10 [--piece-size 25000] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import multiprocessing
import os
import pstats
import random
import time
from multiprocessing.connection import Connection as Pipe
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarmcast.wire.connection import Connection, ConnectionClosed, MessageReceived
from swarmcast.wire.messages import Handshake, HandshakeFlags, Interested, Piece, Reject, Request, Unchoke, Window


def _pin(cpu: int) -> None:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        pass


def serve(pipe: Pipe, peers: int, pieces: int, piece_size: int, profile: bool) -> None:
    """The server process: a real PeerHost + Swarm (role SUPPORT) on loopback, pre-filled with signed pieces."""
    _pin(0)
    from aiohttp import web

    from swarmcast.node.admission import AdmissionConfig
    from swarmcast.node.host import PeerHost
    from swarmcast.swarm.core import Role, Swarm, SwarmConfig
    from swarmcast.swarm.store import PieceStore, StoredPiece
    from swarmcast.transport import Descriptor, public_key_bytes, sign_piece
    from swarmcast.wire.messages import MAX_WINDOW_PIECES, PieceFlags

    async def main() -> None:
        key = Ed25519PrivateKey.generate()
        descriptor = Descriptor(name="bench", title="fanout", piece_size=piece_size, bitrate=250_000,
                                public_key=public_key_bytes(key))  # fmt: skip
        content_id = descriptor.content_id
        store = PieceStore(max_bytes=pieces * piece_size + 1, window_pieces=MAX_WINDOW_PIECES)
        for index in range(pieces):
            flags = PieceFlags.RANDOM_ACCESS if index % 10 == 0 else PieceFlags.NONE
            data = random.randbytes(piece_size)
            store.add(StoredPiece(index, flags, sign_piece(key, content_id, index, flags, data), data))
        peer_id = random.randbytes(20)
        # Every client comes from 127.0.0.1: lift the per-address limits (the totals still apply).
        per_address = AdmissionConfig(max_connections_per_ip=1000, max_peers_per_ip=1000, max_pending_per_ip=1000,
                                      connection_rate_per_ip=1e6, connection_burst_per_ip=100_000)  # fmt: skip
        host = PeerHost(bind="127.0.0.1", port=0, peer_id=peer_id, app=web.Application(), flags=HandshakeFlags.SEEDER,
                        admission=per_address)  # fmt: skip
        swarm = Swarm(content_id=content_id, peer_id=peer_id, store=store, descriptor=descriptor,
                      config=SwarmConfig(role=Role.SUPPORT, upload_slots=peers, max_peers=peers + 4,
                                        transfer_rate=1e9),  # raw serving capacity: no request budget
                      now=time.monotonic())  # fmt: skip
        host.add_swarm(swarm)
        await host.start()
        loop = asyncio.get_running_loop()
        pipe.send({"port": host.port, "content_id": content_id, "pieces": pieces})
        profiler = cProfile.Profile() if profile else None
        marks: dict[str, Any] = {}
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command == "start":
                if profiler is not None:
                    profiler.enable()
                marks = {"wall": time.perf_counter(), "cpu": time.process_time(), "sent": swarm.stats.bytes_sent,
                         "payload": swarm.stats.payload_sent}  # fmt: skip
            elif command == "stop":
                wall, cpu = time.perf_counter() - marks["wall"], time.process_time() - marks["cpu"]
                top = ""
                if profiler is not None:
                    profiler.disable()
                    out = io.StringIO()
                    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
                    top = out.getvalue()
                pipe.send({"wall": wall, "cpu": cpu, "sent": swarm.stats.bytes_sent - marks["sent"],
                           "payload": swarm.stats.payload_sent - marks["payload"], "profile": top})  # fmt: skip
            else:
                break
        await host.close()

    asyncio.run(main())


class Client(asyncio.Protocol):
    """A pulling peer: requests pieces round-robin over the server's window, keeps ``outstanding`` in flight."""

    def __init__(self, content_id: bytes, outstanding: int, start: int) -> None:
        self.connection = Connection(now=time.monotonic())
        self.content_id = content_id
        self.outstanding = outstanding
        self.indices: list[int] = []
        self.next = start
        self.in_flight = 0
        self.received = 0  # payload bytes
        self.unchoked = False
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        now = time.monotonic()
        self.connection.send_handshake(Handshake(self.content_id, random.randbytes(20), 0, HandshakeFlags.NONE), now)
        self.connection.send(Interested(), now)
        transport.write(self.connection.data_to_send())

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        for event in self.connection.receive_data(data, now):
            if isinstance(event, ConnectionClosed):
                self.closed = True
            elif isinstance(event, MessageReceived):
                message = event.message
                if isinstance(message, Piece):
                    self.received += len(message.data)
                    self.in_flight -= 1
                elif isinstance(message, Reject):
                    self.in_flight -= 1
                elif isinstance(message, Window):
                    self.indices = [message.first + i for i, bit in enumerate(message.have) if bit]
                elif isinstance(message, Unchoke):
                    self.unchoked = True
        if self.unchoked and self.indices:
            while self.in_flight < self.outstanding:
                self.connection.send(Request(self.indices[self.next % len(self.indices)]), now)
                self.next += 1
                self.in_flight += 1
        out = self.connection.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


def jain(values: list[float]) -> float:
    if not values or not any(values):
        return 0.0
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


async def _clients(port: int, content_id: bytes, peers: int, outstanding: int, pipe: Pipe, seconds: float,
                   warmup: float) -> dict[str, Any]:  # fmt: skip
    loop = asyncio.get_running_loop()
    clients = []
    for i in range(peers):
        _, client = await loop.create_connection(lambda i=i: Client(content_id, outstanding, i * 7), "127.0.0.1", port)  # type: ignore[misc]
        clients.append(client)
    await asyncio.sleep(warmup)
    before = [c.received for c in clients]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    pipe.send("start")
    await asyncio.sleep(seconds)
    pipe.send("stop")
    per_peer = [c.received - b for c, b in zip(clients, before, strict=True)]
    client_cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    return {"per_peer": per_peer, "client_cpu": client_cpu, "closed": sum(c.closed for c in clients)}


def run(peers: int, seconds: float, *, piece_size: int = 25_000, pieces: int = 64, outstanding: int = 4,
        profile: bool = False, warmup: float = 0.5) -> dict[str, Any]:  # fmt: skip
    """Start the server process, drive ``peers`` clients for ``seconds``; returns the figures."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    server = context.Process(target=serve, args=(theirs, peers, pieces, piece_size, profile), daemon=True)
    server.start()
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        if not ours.poll(30):
            raise RuntimeError("server did not start")
        hello = ours.recv()
        _pin(1)
        client = asyncio.run(_clients(hello["port"], hello["content_id"], peers, outstanding, ours, seconds, warmup))
        if not ours.poll(30):
            raise RuntimeError("server did not report")
        figures = ours.recv()
        ours.send("quit")
        server.join(10)
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
        if server.is_alive():
            server.terminate()
            server.join(5)
    rate = figures["sent"] / figures["wall"]
    return {
        "peers": peers, "seconds": round(figures["wall"], 2), "piece_size": piece_size, "outstanding": outstanding,
        "upload_bytes_per_s": round(rate), "upload_gbit_per_s": round(rate * 8 / 1e9, 3),
        "payload_bytes_per_s": round(figures["payload"] / figures["wall"]),
        "fairness_jain": round(jain([float(b) for b in client["per_peer"]]), 4),
        "per_peer_mbytes": [round(b / 1e6, 1) for b in client["per_peer"]],
        "server_cpu": round(figures["cpu"] / figures["wall"], 3), "client_cpu": round(client["client_cpu"], 3),
        "clients_closed": client["closed"], "profile": figures["profile"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--piece-size", type=int, default=25_000, help="bytes (2 Mbit/s cut every 0.1 s: 25000)")
    parser.add_argument("--pieces", type=int, default=64)
    parser.add_argument("--outstanding", type=int, default=4, help="requests in flight per peer")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.peers, args.seconds, piece_size=args.piece_size, pieces=args.pieces,
                 outstanding=args.outstanding, profile=args.profile)  # fmt: skip
    profile = result.pop("profile")
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    if profile:
        print(profile)


if __name__ == "__main__":
    main()
