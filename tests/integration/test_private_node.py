"""Private nodes and the ip filter with real processes; 127.0.0.x addresses are distinct hosts on loopback.

- A private source (``--private-node 1 --upload-to 127.0.0.2:P``) feeds its support node at 127.0.0.2, and a
  connection from any other address (127.0.0.1, 127.0.0.3) is closed at accept: the peer protocol gets no
  handshake, the web interface no answer.
- A node's ip filter (countries through a test .mmdb) is re-read on SIGHUP: the newly blacklisted address is
  refused and its live connection closed, the newly allowed one admitted, and an allowed connection stays open.
- A filter that names countries without ``--geoip-db`` stops the node at start: one line naming the key, exit 2.
- ``--close-connections-from-same-peer 1``: a second connection from the same IP and listen port replaces the first.
- A private support node admits its ``--download-from`` source and its ``--upload-to`` address, no one else.

The nodes run with ``--service-remote-access`` (as streaming-utils starts them), so that the web interface answers
other addresses and its silence means the access policy refused them, not the web interface's loopback rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from swarmcast.wire.messages import KeepAlive
from tests.integration.chain import HOST, signal_source, source_args, source_node, wait_until
from tests.mmdb import write_country_db
from tests.peerclient import TestPeer
from tests.procs import free_port, swarmcast_process

SUPPORT_IP = "127.0.0.2"
STRANGER_IPS = ("127.0.0.1", "127.0.0.3")


async def get_json(url: str, local_ip: str) -> dict[str, object]:
    """GET from ``local_ip``; raises aiohttp.ClientError when the node closes the connection unanswered."""
    connector = aiohttp.TCPConnector(local_addr=(local_ip, 0), force_close=True)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session, session.get(url) as response:
        assert response.status == 200, f"{url} from {local_ip}: HTTP {response.status}"
        body = await response.json()
    result = body["result"]
    return result[0] if isinstance(result, list) else result  # type: ignore[no-any-return]


async def http_refused(url: str, local_ip: str) -> bool:
    try:
        await get_json(url, local_ip)
    except (aiohttp.ClientError, ConnectionError):
        return True
    return False


async def peer_refused(port: int, content_id: bytes, local_ip: str) -> bool:
    """A peer from ``local_ip`` handshakes: refused when the node closes without a handshake of its own."""
    peer = await TestPeer.connect(HOST, port, content_id, listen_port=9999, local_host=local_ip)
    try:
        closed = await peer.wait_closed(10.0)
        return closed and peer.remote is None
    finally:
        peer.close()


async def silent_connection_closed(port: int, local_ip: str) -> bool:
    """Connect and send nothing: the node closes it (it read no byte of it); True at EOF or reset."""
    reader, writer = await asyncio.open_connection(HOST, port, local_addr=(local_ip, 0))
    try:
        async with asyncio.timeout(10.0):
            return await reader.read(1) == b""
    except ConnectionResetError:
        return True
    finally:
        writer.close()


async def test_a_private_source_feeds_its_upload_to_node_and_refuses_everyone_else(tmp_path: Path) -> None:
    support_port = free_port(SUPPORT_IP)
    with contextlib.ExitStack() as stack:
        signal_url = stack.enter_context(signal_source(tmp_path))
        source = stack.enter_context(source_node(
            tmp_path, signal_url, "--service-remote-access", "--private-node", "1",
            "--upload-to", f"{SUPPORT_IP}:{support_port}",
        ))  # fmt: skip
        content_id = source.descriptor().content_id
        transport_file = next((tmp_path / "publish").glob("*.acelive"))
        args = ["node", "support", "--bind", SUPPORT_IP, "--port", str(support_port), "--url", str(transport_file),
                "--download-from", f"{HOST}:{source.port}", "--pid-file-dir", str(tmp_path),
                "--service-remote-access"]  # fmt: skip
        stack.enter_context(swarmcast_process(args, stderr_path=tmp_path / "support.log",
                                              wait_port=(SUPPORT_IP, support_port)))  # fmt: skip
        support_stat = f"http://{SUPPORT_IP}:{support_port}/app/stat"
        source_stat = f"http://{HOST}:{source.port}/app/stat"

        async def fed() -> bool:
            stat = await get_json(support_stat, SUPPORT_IP)
            downloaded = stat["downloaded_from_source"]
            return isinstance(downloaded, int) and downloaded > 100_000

        for _ in range(100):
            if await fed():
                break
            await asyncio.sleep(0.2)
        assert await fed(), "the support node got no data from the private source"
        # The source's web interface answers its --upload-to address, and the support node holds its credential.
        at_source = await get_json(source_stat, SUPPORT_IP)
        assert at_source["support_nodes"] == [f"{SUPPORT_IP}:{support_port}"], at_source
        for ip in STRANGER_IPS:
            assert await peer_refused(source.port, content_id, ip), f"a peer from {ip} was let in"
            assert await http_refused(source_stat, ip), f"the web interface answered {ip}"
            assert await silent_connection_closed(source.port, ip)
        # The support node is public: strangers get the broadcast from it.
        peer = await TestPeer.connect(SUPPORT_IP, support_port, content_id, local_host="127.0.0.3")
        assert await peer.window() is not None
        peer.close()
        await wait_until(lambda: "over private node" in source.process.stderr_tail(), 15.0)


def write_filter(path: Path, document: dict[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document))
    tmp.replace(path)


async def test_the_ip_filter_is_reloaded_on_sighup_without_dropping_allowed_connections(tmp_path: Path) -> None:
    db = write_country_db(tmp_path / "countries.mmdb", {"127.0.0.0/8": "PL", "127.0.0.3/32": "UA"})
    filter_path = tmp_path / "filter.json"
    write_filter(filter_path, {"blacklist": {"countries": ["UA"]}})
    port = free_port()
    # No input is needed for this: the source listens once its descriptor is settled (--bitrate given).
    args = source_args(tmp_path, f"http://{HOST}:1/none.ts", port, "--service-remote-access", "--bitrate", "125000",
                       "--ip-filter-config", str(filter_path), "--geoip-db", str(db))  # fmt: skip
    with swarmcast_process(args, stderr_path=tmp_path / "source.log", wait_port=(HOST, port)) as process:
        from swarmcast.transport import Descriptor

        content_id = Descriptor.decode(next((tmp_path / "publish").glob("*.acelive")).read_bytes()).content_id
        stat = f"http://{HOST}:{port}/app/stat"
        assert await http_refused(stat, "127.0.0.3")  # UA, blacklisted by country
        assert await peer_refused(port, content_id, "127.0.0.3")
        assert (await get_json(stat, "127.0.0.4"))["content_id"] == content_id.hex()  # PL
        # Live peer connections from .4 (to be blacklisted) and .5 (stays allowed).
        doomed = await TestPeer.connect(HOST, port, content_id, listen_port=9004, local_host="127.0.0.4")
        kept = await TestPeer.connect(HOST, port, content_id, listen_port=9005, local_host="127.0.0.5")
        assert await doomed.window() is not None and await kept.window() is not None

        write_filter(filter_path, {"blacklist": {"addresses": ["127.0.0.4/32"]}})
        process.signal(signal.SIGHUP)
        assert await doomed.wait_closed(10.0), "the reload left a newly blacklisted connection open"
        await wait_until(lambda: "ip filter" in process.stderr_tail() and "reloaded" in process.stderr_tail(), 10.0)
        assert await http_refused(stat, "127.0.0.4")
        assert (await get_json(stat, "127.0.0.3"))["content_id"] == content_id.hex()  # no longer blacklisted
        kept.send(KeepAlive())
        assert not await kept.wait_closed(1.0), "an allowed connection was dropped by the reload"

        # A bad file on SIGHUP: logged, and the filter in force stays.
        filter_path.write_text('{"blacklist": {"addresses": ["not-an-ip"]}}')
        process.signal(signal.SIGHUP)
        await wait_until(lambda: "not reloaded" in process.stderr_tail(), 10.0)
        assert "'not-an-ip' is not an IP address" in process.stderr_tail()
        assert await http_refused(stat, "127.0.0.4")
        assert process.popen.poll() is None
        kept.close()
        doomed.close()


def test_countries_without_a_database_are_refused_at_start(tmp_path: Path) -> None:
    filter_path = tmp_path / "filter.json"
    write_filter(filter_path, {"groups": {"g": {"countries": ["UA"]}}, "whitelist": {"groups": ["g"]}})
    args = source_args(tmp_path, f"http://{HOST}:1/none.ts", free_port(),
                       "--service-remote-access", "--bitrate", "125000",
                       "--ip-filter-config", str(filter_path))  # fmt: skip
    command = [sys.executable, "-m", "swarmcast.cli", *args]
    done = subprocess.run(command, capture_output=True, timeout=60, text=True, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "--ip-filter-config" in lines[0] and "whitelist.countries" in lines[0] and "--geoip-db" in lines[0]
    assert not (tmp_path / "publish").exists()  # nothing left behind


async def test_one_connection_per_peer_address_the_newer_replaces_the_older(tmp_path: Path) -> None:
    port = free_port()
    args = source_args(tmp_path, f"http://{HOST}:1/none.ts", port, "--service-remote-access", "--bitrate", "125000",
                       "--close-connections-from-same-peer", "1")  # fmt: skip
    with swarmcast_process(args, stderr_path=tmp_path / "source.log", wait_port=(HOST, port)):
        from swarmcast.transport import Descriptor

        content_id = Descriptor.decode(next((tmp_path / "publish").glob("*.acelive")).read_bytes()).content_id
        older = await TestPeer.connect(HOST, port, content_id, listen_port=9100, local_host="127.0.0.6")
        assert await older.window() is not None
        neighbour = await TestPeer.connect(HOST, port, content_id, listen_port=9101, local_host="127.0.0.6")
        assert await neighbour.window() is not None  # another node on that host: its own address
        newer = await TestPeer.connect(HOST, port, content_id, listen_port=9100, local_host="127.0.0.6")
        assert await newer.window() is not None
        assert await older.wait_closed(10.0), "the older connection of the same peer address stayed open"
        for peer in (newer, neighbour):
            peer.send(KeepAlive())
            assert not await peer.wait_closed(1.0)
            peer.close()
        older.close()


async def test_a_private_support_node_talks_only_to_its_source_and_upload_to(tmp_path: Path) -> None:
    source_port = free_port()
    args = source_args(tmp_path, f"http://{HOST}:1/none.ts", source_port,
                       "--service-remote-access", "--bitrate", "125000")
    with contextlib.ExitStack() as stack:
        stack.enter_context(swarmcast_process(args, stderr_path=tmp_path / "source.log", wait_port=(HOST, source_port)))
        transport_file = next((tmp_path / "publish").glob("*.acelive"))
        from swarmcast.transport import Descriptor

        content_id = Descriptor.decode(transport_file.read_bytes()).content_id
        support_port = free_port(SUPPORT_IP)
        args = ["node", "support", "--bind", SUPPORT_IP, "--port", str(support_port), "--url", str(transport_file),
                "--download-from", f"{HOST}:{source_port}", "--private-node", "1", "--upload-to", "127.0.0.4:9",
                "--pid-file-dir", str(tmp_path), "--service-remote-access"]  # fmt: skip
        stack.enter_context(swarmcast_process(args, stderr_path=tmp_path / "support.log",
                                              wait_port=(SUPPORT_IP, support_port)))  # fmt: skip
        stat = f"http://{SUPPORT_IP}:{support_port}/app/stat"
        assert (await get_json(stat, "127.0.0.4"))["content_id"] == content_id.hex()
        listed = await TestPeer.connect(SUPPORT_IP, support_port, content_id, listen_port=9, local_host="127.0.0.4")
        assert await listed.window() is not None
        listed.close()
        for ip in ("127.0.0.3", "127.0.0.5"):
            stranger = await TestPeer.connect(SUPPORT_IP, support_port, content_id, local_host=ip)
            assert await stranger.wait_closed(10.0) and stranger.remote is None, f"{ip} was let in"
            stranger.close()
            assert await http_refused(stat, ip)
        # Its upstream, the source, is connected (it is the one address it may dial besides --upload-to).
        for _ in range(50):
            if (await get_json(stat, "127.0.0.4"))["peers"] == 1:
                break
            await asyncio.sleep(0.2)
        assert (await get_json(stat, "127.0.0.4"))["peers"] == 1
