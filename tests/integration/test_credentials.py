"""Support credentials with real processes: both ways of getting one, and their refresh before expiry."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp

from swarmcast.credential import CredentialRole, decode_credential
from swarmcast.wire.messages import CredentialMessage
from tests.integration.chain import HOST, signal_source, source_node, support_node
from tests.peerclient import TestPeer
from tests.procs import free_port

TOKEN = "t0ken"
LIFETIME = 10  # --credential-lifetime: re-signed after 5 s


async def presented(port: int, content_id: bytes) -> int:
    """The expiry of the credential a node presents to a newcomer."""
    peer = await TestPeer.connect(HOST, port, content_id, listen_port=1)
    try:
        message = await peer.wait_for(CredentialMessage, 5.0)
    finally:
        peer.close()
    assert isinstance(message, CredentialMessage), f"the node on {port} presented no credential"
    credential = decode_credential(message.credential)
    assert credential.role is CredentialRole.SUPPORT and credential.ip == HOST
    return credential.expires


async def test_support_credentials_by_token_and_by_list_are_refreshed(tmp_path: Path) -> None:
    listed_port = free_port()
    with contextlib.ExitStack() as stack:
        signal_url = stack.enter_context(signal_source(tmp_path))
        source = stack.enter_context(source_node(
            tmp_path, signal_url, "--service-access-token", TOKEN, "--credential-lifetime", str(LIFETIME),
            "--support-node", f"{HOST}:{listed_port}",
        ))  # fmt: skip
        base = f"http://{HOST}:{source.port}/app"
        by_token = stack.enter_context(support_node(tmp_path, f"{base}/{TOKEN}/get_transport_file?format=raw",
                                                    name="support-token"))  # fmt: skip
        # From a file, so no token: its credential can only be the one the source grants it on the peer protocol.
        transport_file = str(next(source.publish_dir.glob("*.acelive")))
        stack.enter_context(support_node(tmp_path, transport_file, "--download-from", f"{HOST}:{source.port}",
                                         name="listed", port=listed_port))  # fmt: skip
        content_id = source.descriptor().content_id
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/wrong/get_credential") as response:
                assert response.status == 403
            async with session.get(f"{base}/{TOKEN}/get_credential?port=x") as response:
                assert response.status == 400
            for _ in range(50):
                async with session.get(f"{base}/{TOKEN}/stat") as response:
                    holders = (await response.json())["result"]["support_nodes"]
                if len(holders) == 2:
                    break
                await asyncio.sleep(0.2)
            assert sorted(holders) == sorted([f"{HOST}:{by_token}", f"{HOST}:{listed_port}"])
            first = [await presented(by_token, content_id), await presented(listed_port, content_id)]
            await asyncio.sleep(LIFETIME * 0.5 + 4)  # past the re-signing point, plus a fetch and a housekeeping
            later = [await presented(by_token, content_id), await presented(listed_port, content_id)]
            async with session.get(f"{base}/{TOKEN}/stat") as response:
                holders = (await response.json())["result"]["support_nodes"]
        assert later[0] > first[0], "the token support node did not refresh its credential"
        assert later[1] > first[1], "the source did not grant the listed support node a fresh credential"
        assert len(holders) == 2
