"""Fake support nodes: peers that set the SEEDER (or SOURCE) handshake flag get no broadcaster's treatment.

The issue's attack: ten connections that claim SEEDER pulled 45x the stream from the source in 40 s, the real
support node was choked twice and the honest player stalled. Here the real support node is started the Ace Stream
way (``--url http://SOURCE/app/TOKEN/get_transport_file``), so it holds a credential the source issued for its
address; ten greedy fakes claim SEEDER at the source (five of them from other IPs, presenting the real support
node's credential, copied off the wire); another claims SOURCE|SEEDER at the viewer engine. The source must serve
the fakes nothing while its support node wants data, the engine must treat the claimant as a viewer, and the
honest player reading through the support node must get the source's pieces without a skip. The second test
does the same for a support node the source names with ``--upload-to`` (issue 8): status by credential, not claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from swarmcast.wire.connection import MessageReceived
from swarmcast.wire.messages import (
    CredentialKind,
    CredentialMessage,
    Handshake,
    HandshakeFlags,
    Have,
    Interested,
    Piece,
    Request,
    Unchoke,
    Window,
)
from tests.integration.chain import (
    HOST,
    decode_video,
    match_pieces,
    read_stream,
    signal_source,
    source_node,
    source_pieces,
)
from tests.peerclient import TestPeer
from tests.procs import free_port, swarmcast_process

TOKEN = "s3cret"
FAKES_SAME_IP = 5
FAKE_IPS = [f"127.0.0.{i}" for i in range(2, 7)]  # distinct loopback hosts: a replayed credential names another IP
ATTACK_SECONDS = 12.0
STREAM_BYTES_PER_SECOND = 1_000_000 // 8  # signal_source's default 1 Mbit/s


# The two starters below pick their ports up front (as chain.py's do not, in the old code this test is checked on).
@contextlib.contextmanager
def support_on_port(tmp: Path, url: str, port: int, *extra: str) -> Iterator[None]:
    args = ["node", "support", "--bind", HOST, "--port", str(port), "--url", url, "--pid-file-dir", str(tmp), *extra]
    with swarmcast_process(args, stderr_path=tmp / "support.log", wait_port=(HOST, port)):
        yield


@contextlib.contextmanager
def engine_with_p2p_port(tmp: Path, p2p_port: int) -> Iterator[str]:
    http_port = free_port()
    args = ["engine", "--http-port", str(http_port), "--port", str(p2p_port), "--bind", HOST,
            "--pid-file-dir", str(tmp), "--startup-timeout", "20"]  # fmt: skip
    with swarmcast_process(args, stderr_path=tmp / "engine.log", wait_port=(HOST, http_port)):
        yield f"http://{HOST}:{http_port}"


async def connect_from(local_ip: str, port: int, content_id: bytes, flags: HandshakeFlags) -> TestPeer:
    """A TestPeer whose connection comes from ``local_ip`` (a distinct loopback host)."""
    reader, writer = await asyncio.open_connection(HOST, port, local_addr=(local_ip, 0))
    peer = TestPeer(reader, writer)
    peer.connection.send_handshake(Handshake(content_id, os.urandom(20), 0, flags), time.monotonic())
    peer.flush()
    return peer


async def greedy(peer: TestPeer, deadline: float, stolen: bytes | None) -> int:
    """Ask for every piece announced, as fast as it can, until ``deadline``; the piece bytes received."""
    if stolen is not None:
        peer.send(CredentialMessage(CredentialKind.PRESENT, stolen))
    peer.send(Interested())
    asked: set[int] = set()
    received = 0
    while time.monotonic() < deadline and peer.closed is None:
        try:
            events = await peer.read_events(min(0.5, max(deadline - time.monotonic(), 0.01)))
        except ConnectionError:
            break
        for event in events:
            if not isinstance(event, MessageReceived):
                continue
            message = event.message
            wanted: list[int] = []
            if isinstance(message, Window):
                wanted = [message.first + i for i, bit in enumerate(message.have) if bit][-30:]
            elif isinstance(message, Have):
                wanted = [message.index]
            elif isinstance(message, Unchoke):
                wanted = sorted(asked)[-30:]  # ask again for what was rejected while choked
            elif isinstance(message, Piece):
                received += len(message.data)
            for index in wanted:
                asked.add(index)
                peer.send(Request(index))
        peer.messages.clear()
    peer.close()
    return received


async def stat(session: aiohttp.ClientSession, url: str) -> dict[str, object]:
    async with session.get(url) as response:
        result = (await response.json())["result"]
    return result[0] if isinstance(result, list) else result  # type: ignore[no-any-return]


async def test_fake_support_nodes_get_nothing_and_the_real_one_keeps_its_place(tmp_path: Path) -> None:
    support_port, engine_p2p = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        signal_url = stack.enter_context(signal_source(tmp_path))
        source = stack.enter_context(source_node(tmp_path, signal_url, "--service-access-token", TOKEN))
        transport = f"http://{HOST}:{source.port}/app/{TOKEN}/get_transport_file?format=raw"
        download_from = f"{HOST}:{source.port}"
        stack.enter_context(support_on_port(tmp_path, transport, support_port, "--download-from", download_from))
        api = stack.enter_context(engine_with_p2p_port(tmp_path, engine_p2p))
        content_id = source.descriptor().content_id
        source_stat = f"http://{HOST}:{source.port}/app/{TOKEN}/stat"
        support_stat = f"http://{HOST}:{support_port}/app/stat"
        player_url = f"{api}/ace/getstream?url=http://{HOST}:{support_port}/app/get_transport_file"
        async with aiohttp.ClientSession() as session:
            # The support node fetched its credential at start; give the source a moment to have it attached.
            for _ in range(50):
                if (await stat(session, source_stat)).get("support_nodes"):
                    break
                await asyncio.sleep(0.2)
            # What any peer of the support node receives from it: its credential (copied by the fakes below).
            spy = await TestPeer.connect(HOST, support_port, content_id, listen_port=1)
            shown = await spy.wait_for(CredentialMessage, 5.0)
            spy.close()
            stolen = shown.credential if isinstance(shown, CredentialMessage) else None
            support_before = await stat(session, support_stat)

            player = asyncio.create_task(read_stream(player_url, ATTACK_SECONDS))
            for _ in range(100):  # until the engine has joined: then its P2P port serves the broadcast
                async with session.get(f"{api}/app/stat") as response:
                    if (await response.json())["result"]:
                        break
                await asyncio.sleep(0.1)
            end = time.monotonic() + ATTACK_SECONDS
            fakes = [await TestPeer.connect(HOST, source.port, content_id, listen_port=40000 + i,
                                            flags=HandshakeFlags.SEEDER) for i in range(FAKES_SAME_IP)]  # fmt: skip
            fakes += [await connect_from(ip, source.port, content_id, HandshakeFlags.SEEDER) for ip in FAKE_IPS]
            at_source = asyncio.gather(*(greedy(f, end, stolen if i >= FAKES_SAME_IP else None)
                                         for i, f in enumerate(fakes)))  # fmt: skip
            # At the engine: a claimed source (no HAVEs for a source, its PEX dialled first) and seeder.
            claimant = await TestPeer.connect(HOST, engine_p2p, content_id, listen_port=40100,
                                              flags=HandshakeFlags.SOURCE | HandshakeFlags.SEEDER)  # fmt: skip
            have_to_claimant = await claimant.wait_for(Have, 8.0)
            claimant_handshake = claimant.remote is not None
            claimant.close()
            fake_bytes = await at_source
            stream = await player

            after = await stat(session, source_stat)
            support_after = await stat(session, support_stat)
            viewer = await stat(session, f"{api}/app/stat")

        # The source served the fakes (almost) nothing: before the fix, 45x the stream.
        assert sum(fake_bytes) < STREAM_BYTES_PER_SECOND, f"fakes pulled {fake_bytes} bytes from the source"
        assert after.get("support_nodes") == [f"{HOST}:{support_port}"], after
        assert stolen is not None, "the support node presented no credential"
        assert support_after["downloaded_from_source"] > support_before["downloaded_from_source"]  # type: ignore[operator]
        # The engine treated the claimant as a viewer: it announced pieces to it (never to a real source), and
        # its only support node is the real one.
        assert claimant_handshake
        assert have_to_claimant is not None, "the engine treated a peer that claims SOURCE as a source"
        assert viewer.get("support_nodes") == [f"{HOST}:{support_port}"], viewer
        # The honest player got the source's own pieces, in order, without a skip.
        assert len(decode_video(stream)) >= 150
        match_pieces(stream, await source_pieces(source))  # consecutive pieces: a skip would fail here


async def test_upload_to_names_the_support_node_and_claimants_elsewhere_get_nothing(tmp_path: Path) -> None:
    """Item 7 with the operator's other control: the source's ``--upload-to`` lists the support node, which joins
    with the transport file alone (no token, no --support-node). It must be granted support status by the source
    and recognised by the engine; fakes claiming SEEDER from other addresses get nothing from the source (not
    listed: choked), and a claimant at the engine is a viewer there."""
    support_ip = "127.0.0.2"
    support_port, engine_p2p = free_port(support_ip), free_port()
    with contextlib.ExitStack() as stack:
        signal_url = stack.enter_context(signal_source(tmp_path))
        source = stack.enter_context(source_node(tmp_path, signal_url, "--upload-to", f"{support_ip}:{support_port}"))
        content_id = source.descriptor().content_id
        args = ["node", "support", "--bind", support_ip, "--port", str(support_port), "--url", source.transport_url,
                "--download-from", f"{HOST}:{source.port}", "--pid-file-dir", str(tmp_path)]  # fmt: skip
        stack.enter_context(swarmcast_process(args, stderr_path=tmp_path / "support.log",
                                              wait_port=(support_ip, support_port)))  # fmt: skip
        api = stack.enter_context(engine_with_p2p_port(tmp_path, engine_p2p))
        source_stat = f"http://{HOST}:{source.port}/app/stat"
        player_url = f"{api}/ace/getstream?url=http://{support_ip}:{support_port}/app/get_transport_file"
        async with aiohttp.ClientSession() as session:
            for _ in range(50):
                if (await stat(session, source_stat)).get("support_nodes"):
                    break
                await asyncio.sleep(0.2)
            player = asyncio.create_task(read_stream(player_url, 6.0))
            end = time.monotonic() + 6.0
            fakes = [await connect_from(ip, source.port, content_id, HandshakeFlags.SEEDER) for ip in FAKE_IPS[1:]]
            fakes.append(await TestPeer.connect(HOST, source.port, content_id, listen_port=40000,
                                                flags=HandshakeFlags.SEEDER))  # fmt: skip
            fake_bytes = await asyncio.gather(*(greedy(f, end, None) for f in fakes))
            for _ in range(100):  # until the engine has joined: then its P2P port serves the broadcast
                async with session.get(f"{api}/app/stat") as response:
                    if (await response.json())["result"]:
                        break
                await asyncio.sleep(0.1)
            claimant = await TestPeer.connect(HOST, engine_p2p, content_id, listen_port=40100,
                                              flags=HandshakeFlags.SOURCE | HandshakeFlags.SEEDER)  # fmt: skip
            have_to_claimant = await claimant.wait_for(Have, 8.0)
            claimant.close()
            stream = await player
            at_source = await stat(session, source_stat)
            viewer = await stat(session, f"{api}/app/stat")
        assert at_source.get("support_nodes") == [f"{support_ip}:{support_port}"], at_source
        assert sum(fake_bytes) == 0, f"fakes outside --upload-to got {fake_bytes} bytes from the source"
        assert viewer.get("support_nodes") == [f"{support_ip}:{support_port}"], viewer
        assert have_to_claimant is not None, "the engine treated a peer that claims SOURCE as a source"
        assert len(decode_video(stream)) >= 50
