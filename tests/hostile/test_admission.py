"""Admission attacks against a real source node: Sybils, handshake floods, slowloris, descriptor exhaustion, tokens.

The attackers connect from other loopback addresses (127.0.0.2 ...; every 127.0.0.0/8 address is a distinct
host to the victim), the honest peer and client from 127.0.0.1. Most tests share one victim; the descriptor test
starts its own under a low open-file limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from swarmcast.wire.messages import PROTOCOL_MAGIC, Handshake, HandshakeFlags
from tests.integration.chain import HOST, node_pieces, signal_source, source_args
from tests.peerclient import TestPeer
from tests.procs import free_port, wait_for_port

TOKEN = "secret"


@dataclass
class Victim:
    port: int
    content_id: bytes

    @property
    def transport_url(self) -> str:
        return f"http://{HOST}:{self.port}/app/{TOKEN}/get_transport_file?format=raw"


@contextlib.contextmanager
def _process(args: list[str], log: Path, *, nofile: tuple[int, int] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``swarmcast ARGS``, optionally under an open-file limit (soft, hard); always killed and reaped."""

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    with log.open("wb") as stderr:
        popen = subprocess.Popen([sys.executable, "-m", "swarmcast.cli", *args], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=stderr, preexec_fn=limit)  # noqa: PLW1509  # fmt: skip
    try:
        yield popen
    finally:
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(5)
            except subprocess.TimeoutExpired:
                popen.kill()
        popen.wait()


def _content_id(publish: Path) -> bytes:
    from swarmcast.transport import Descriptor

    return Descriptor.decode(next(publish.glob("*.acelive")).read_bytes()).content_id


@pytest.fixture(scope="module")
def signal_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with signal_source(tmp_path_factory.mktemp("admission-signal")) as url:
        yield url


@pytest.fixture(scope="module")
def victim(tmp_path_factory: pytest.TempPathFactory, signal_url: str) -> Iterator[Victim]:
    tmp = tmp_path_factory.mktemp("admission")
    port = free_port()
    # --service-remote-access: the HTTP attackers come from other addresses, and must meet the HTTP budgets (without
    # it they would be closed at their first bytes by the web interface's access rule, node/webaccess.py).
    args = source_args(tmp, signal_url, port, "--service-access-token", TOKEN, "--service-remote-access",
                       "--handshake-timeout", "2", "--http-header-timeout", "3")  # fmt: skip
    with _process(args, tmp / "source.log") as popen:
        wait_for_port(HOST, port, 30)
        yield Victim(port, _content_id(tmp / "publish"))
        assert popen.poll() is None, (tmp / "source.log").read_text()[-3000:]


@pytest.fixture(autouse=True)
def many_descriptors() -> None:
    """This process opens over a thousand sockets as the attacker."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, 8192):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))


async def peer_from(local_ip: str, port: int, content_id: bytes) -> TestPeer:
    """A peer handshaking from ``local_ip`` with a fresh peer id."""
    reader, writer = await asyncio.open_connection(HOST, port, local_addr=(local_ip, 0))
    peer = TestPeer(reader, writer)
    peer.connection.send_handshake(Handshake(content_id, os.urandom(20), 0, HandshakeFlags.NONE), time.monotonic())
    peer.flush()
    return peer


async def accepted(peer: TestPeer, timeout: float = 5.0) -> bool:
    """Whether the node took the peer into its swarm (it sends a WINDOW to every peer it attaches)."""
    with contextlib.suppress(ConnectionError):
        return await peer.window(timeout) is not None
    return False


async def honest_http(port: int, path: str) -> int:
    timeout = aiohttp.ClientTimeout(total=10)
    url = URL(f"http://{HOST}:{port}{path}", encoded=True)  # as written: yarl would decode %73 to "s"
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
        await response.read()
        return response.status


Raw = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def raw_connection(local_ip: str, port: int, first: bytes) -> Raw | None:
    try:
        async with asyncio.timeout(3):
            reader, writer = await asyncio.open_connection(HOST, port, local_addr=(local_ip, 0))
    except (OSError, TimeoutError):
        return None
    writer.write(first)
    return reader, writer


async def closed_by_peer(connection: Raw, timeout: float) -> bool:
    """Whether the victim closes the connection within ``timeout`` s (whatever it sends first)."""
    reader = connection[0]
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def all_closed_by_peer(connections: list[Raw], timeout: float) -> int:
    """How many of ``connections`` are still open after ``timeout`` s."""
    closed = await asyncio.gather(*(closed_by_peer(c, timeout) for c in connections))
    return closed.count(False)


async def test_sybils_from_one_address_do_not_lock_out_newcomers(victim: Victim) -> None:
    sybils = await asyncio.gather(*(peer_from("127.0.0.2", victim.port, victim.content_id) for _ in range(60)),
                                  return_exceptions=True)  # fmt: skip
    live = [s for s in sybils if isinstance(s, TestPeer)]
    try:
        taken = sum(await asyncio.gather(*(accepted(s) for s in live)))
        # --max-peers-per-ip 4 (the default): one address holds a few peer ids, not the node's 60 slots.
        assert 1 <= taken <= 4, f"{taken} of 60 Sybil peer ids from one address were accepted"
        honest = await peer_from("127.0.0.3", victim.port, victim.content_id)
        try:
            assert await accepted(honest), f"honest newcomer refused: {honest.closed}"
        finally:
            honest.close()
    finally:
        for sybil in live:
            sybil.close()


async def test_handshake_flood_does_not_close_the_port(victim: Victim) -> None:
    flood: list[Raw] = []
    addresses = [f"127.0.1.{i}" for i in range(1, 41)]

    async def wave(count: int) -> None:
        writers = await asyncio.gather(*(raw_connection(addresses[i % len(addresses)], victim.port, PROTOCOL_MAGIC)
                                         for i in range(count)))  # fmt: skip
        flood.extend(w for w in writers if w is not None)

    try:
        await wave(1100)  # more than the old MAX_CONNECTIONS (1024), each sending only the magic
        silent = await asyncio.gather(*(raw_connection(f"127.0.1.{200 + i}", victim.port, b"") for i in range(20)))
        flood.extend(c for c in silent if c is not None)  # and some that send nothing at all
        for _ in range(4):
            # ~100 new connections per second keep coming while the honest ones arrive.
            sustain = asyncio.create_task(wave(100))
            honest = await TestPeer.connect(HOST, victim.port, victim.content_id)
            try:
                assert await accepted(honest), f"honest peer refused during the flood: {honest.closed}"
            finally:
                honest.close()
            assert await honest_http(victim.port, f"/app/{TOKEN}/get_transport_file") == 200
            await sustain
        # Every unfinished handshake is dropped within a few seconds (first bytes 3 s; handshake 2 s here, default 4).
        remaining = await all_closed_by_peer(flood, 8.0)
        assert not remaining, f"{remaining} of {len(flood)} silent handshakes still open after 8 s"
    finally:
        for _reader, writer in flood:
            writer.transport.abort()


async def test_slowloris_is_cut_off_and_cannot_starve_http(victim: Victim) -> None:
    slow: list[Raw] = []
    try:
        for i in range(1, 21):  # 20 addresses x 8 connections, each sending its headers a byte at a time
            for _ in range(8):
                connection = await raw_connection(f"127.0.2.{i}", victim.port, b"GET /app/")
                if connection is not None:
                    slow.append(connection)
        assert slow
        for _ in range(4):
            await asyncio.sleep(1.0)
            for _reader, writer in slow:
                if not writer.transport.is_closing():
                    writer.write(b"s")
            assert await honest_http(victim.port, f"/app/{TOKEN}/get_transport_file") == 200
        # --http-header-timeout 3 here (default 10): a client still sending its headers is cut off by then.
        remaining = await all_closed_by_peer(slow, 6.0)
        assert not remaining, f"{remaining} of {len(slow)} slowloris connections still open"
    finally:
        for _reader, writer in slow:
            writer.transport.abort()


async def test_percent_encoded_token_is_refused(victim: Victim) -> None:
    assert await honest_http(victim.port, f"/app/{TOKEN}/get_transport_file") == 200
    assert await honest_http(victim.port, "/app/%73ecret/get_transport_file") == 403
    assert await honest_http(victim.port, "/app/%73ecret/stat") == 403


async def test_http_0_9_is_not_answered(victim: Victim) -> None:
    reader, writer = await asyncio.open_connection(HOST, victim.port)
    try:
        writer.write(f"GET /app/{TOKEN}/get_transport_file\r\n".encode())
        async with asyncio.timeout(10):
            answer = await reader.read()
        assert answer == b""
    finally:
        writer.close()


async def test_internal_tracker_needs_the_token(victim: Victim) -> None:
    query = "info_hash=" + "%41" * 20 + "&peer_id=" + "%42" * 20 + "&port=6881&uploaded=0&downloaded=0&left=0"
    assert await honest_http(victim.port, f"/announce?{query}") == 404
    assert await honest_http(victim.port, f"/app/%73ecret/announce?{query}") == 403
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
        f"http://{HOST}:{victim.port}/app/{TOKEN}/announce?{query}"
    ) as response:
        assert response.status == 200
        assert b"interval" in await response.read()


async def test_descriptor_exhaustion_does_not_kill_the_node(tmp_path: Path, signal_url: str) -> None:
    port = free_port()
    args = source_args(tmp_path, signal_url, port, "--live-cache-type", "disk", "--cache-dir", str(tmp_path / "c"),
                       "--http-header-timeout", "30", "--service-remote-access")  # fmt: skip
    log = tmp_path / "source.log"
    # 256 open files to start with, 1024 at most: the node raises its soft limit to the hard one and fits its
    # connection budgets under it.
    with _process(args, log, nofile=(256, 1024)) as popen:
        wait_for_port(HOST, port, 30)
        limits = Path(f"/proc/{popen.pid}/limits").read_text()
        assert any(line.startswith("Max open files") and line.split()[3] == "1024" for line in limits.splitlines())
        slow: list[Raw] = []
        try:
            for i in range(1, 111):  # 1,100 slow HTTP clients from 110 addresses
                opened = await asyncio.gather(*(raw_connection(f"127.0.3.{i}", port, b"GET /app/get_tr")
                                                for _ in range(10)))  # fmt: skip
                slow.extend(c for c in opened if c is not None)
            await asyncio.sleep(3.0)  # pieces keep being cut and written to the disk cache meanwhile
            assert popen.poll() is None, f"the node died under the flood:\n{log.read_text()[-3000:]}"
            assert await honest_http(port, "/app/get_transport_file") == 200
        finally:
            for _reader, writer in slow:
                writer.transport.abort()
        await asyncio.sleep(1.0)
        assert popen.poll() is None, f"the node died under the flood:\n{log.read_text()[-3000:]}"
        assert await honest_http(port, "/app/get_transport_file") == 200
        pieces = await node_pieces(port, _content_id(tmp_path / "publish"), timeout=10)
        assert pieces, "no pieces served after the flood"

