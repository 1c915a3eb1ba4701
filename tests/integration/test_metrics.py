"""/metrics with real processes: the figures move while a player plays (a source and an engine on loopback,
scraped twice), Debian's promtool accepts both outputs, and /metrics keeps the web interface's access rules."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from swarmcast import VERSION_CODE, __version__
from tests.integration.chain import HOST, engine, signal_source, source_node, support_node
from tests.procs import free_port, swarmcast_process

PROMTOOL = shutil.which("promtool")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape by (name, labels); parsing it is a check of its own."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, frozenset(sample.labels.items())] = sample.value
    return out


def value(scrape: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in scrape, f"{name}{labels} not exported; have {sorted(k[0] for k in scrape)}"
    return scrape[key]


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    if PROMTOOL is None:
        pytest.skip("promtool (Debian's prometheus package) is not installed")
    return subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60,
                          check=False)


async def scrape(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/plain", response.headers
        return await response.text()


async def test_figures_move_during_playback_and_promtool_accepts_them(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        signal_url = stack.enter_context(signal_source(tmp_path))
        source = stack.enter_context(source_node(tmp_path, signal_url, "--bitrate", "125000"))
        engine_url = stack.enter_context(engine(tmp_path))
        cid = source.descriptor().infohash
        play_url = f"{engine_url}/ace/getstream?url={source.transport_url}"
        timeout = aiohttp.ClientTimeout(total=120, sock_read=30)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(play_url) as player:
            assert player.status == 200, await player.text()
            got = 0

            async def read_for(seconds: float) -> None:
                nonlocal got
                loop = asyncio.get_running_loop()
                deadline = loop.time() + seconds
                while loop.time() < deadline:
                    got += len(await player.content.readany())

            await read_for(2.0)  # the player has started: its startup is observed
            first_engine = await scrape(session, f"{engine_url}/metrics")
            first_source = await scrape(session, f"http://{HOST}:{source.port}/metrics")
            await read_for(3.0)
            second_engine = await scrape(session, f"{engine_url}/metrics")
            second_source = await scrape(session, f"http://{HOST}:{source.port}/metrics")
        assert got > 0
        (tmp_path / "engine.prom").write_text(second_engine)
        (tmp_path / "source.prom").write_text(second_source)
        e1, e2 = samples(first_engine), samples(second_engine)
        s1, s2 = samples(first_source), samples(second_source)

        # The engine: bytes from the source, delivered to the player, one player, its startup and delays.
        assert build_labels(e2) == {"version": __version__, "revision": str(VERSION_CODE), "role": "engine"}
        received = ("swarmcast_received_bytes_total", {"content_id": cid, "peer_role": "source"})
        assert value(e2, received[0], **received[1]) > value(e1, received[0], **received[1]) > 0
        delivered = "swarmcast_delivered_bytes_total"
        assert value(e2, delivered, content_id=cid) > value(e1, delivered, content_id=cid) > 0
        pieces = "swarmcast_pieces_received_total"
        assert value(e2, pieces, content_id=cid) > value(e1, pieces, content_id=cid) > 0
        assert value(e1, "swarmcast_players", content_id=cid) == 1
        assert value(e2, "swarmcast_connected_peers", content_id=cid, peer_role="source") == 1
        assert value(e2, "swarmcast_startup_seconds_count", content_id=cid) >= 1
        assert value(e2, "swarmcast_startup_seconds_bucket", content_id=cid, le="+Inf") >= 1
        delays = "swarmcast_delay_seconds_count"
        assert value(e2, delays, content_id=cid) > value(e1, delays, content_id=cid) > 0, "no keyframe delay seen"
        assert value(e2, "swarmcast_broadcasts", state="playing") == 1
        assert value(e2, "swarmcast_cache_bytes", content_id=cid) > 0

        # The source: bytes sent to the viewer grow, forwarded pieces grow, the input is connected.
        sent = ("swarmcast_sent_bytes_total", {"content_id": cid, "peer_role": "viewer"})
        assert value(s2, sent[0], **sent[1]) > value(s1, sent[0], **sent[1]) > 0
        forwarded = "swarmcast_pieces_forwarded_total"
        assert value(s2, forwarded, content_id=cid) > value(s1, forwarded, content_id=cid) > 0
        assert value(s2, "swarmcast_newest_piece", content_id=cid) > value(s1, "swarmcast_newest_piece", content_id=cid)
        assert value(s2, "swarmcast_source_input_connected", content_id=cid) == 1
        assert value(s2, "swarmcast_source_reconnects_total", content_id=cid) == 0
        assert value(s2, "swarmcast_connected_peers", content_id=cid, peer_role="viewer") == 1
        assert value(s2, "swarmcast_upload_slots", content_id=cid) == 8
        assert value(s2, "swarmcast_cache_max_bytes", content_id=cid) == 209715200
        assert value(s2, "swarmcast_bad_signatures_total", content_id=cid) == 0
        assert build_labels(s2) == {"version": __version__, "revision": str(VERSION_CODE), "role": "source"}

        for name, text in (("engine", second_engine), ("source", second_source)):
            checked = promtool_check(text)
            assert checked.returncode == 0, f"promtool refused the {name}'s metrics:\n{checked.stdout}{checked.stderr}"
            assert checked.stdout.strip() == "", f"promtool lint on the {name}'s metrics: {checked.stdout}"


def build_labels(scrape_: Samples) -> dict[str, str]:
    (labels,) = [dict(k[1]) for k, v in scrape_.items() if k[0] == "swarmcast_build_info" and v == 1]
    return labels


async def test_support_and_start_nodes_export_theirs(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        signal_url = stack.enter_context(signal_source(tmp_path))
        source = stack.enter_context(source_node(tmp_path, signal_url, "--bitrate", "125000"))
        support = stack.enter_context(support_node(tmp_path, source.transport_url, "--download-from",
                                                   f"{HOST}:{source.port}"))  # fmt: skip
        start_port = free_port()
        stack.enter_context(swarmcast_process(
            ["node", "startup", "--bind", HOST, "--port", str(start_port), "--url", source.transport_url,
             "--pid-file-dir", str(tmp_path)], stderr_path=tmp_path / "startup.log", wait_port=(HOST, start_port)))
        cid = source.descriptor().infohash
        async with aiohttp.ClientSession() as session:
            for port, role in ((support, "support"), (start_port, "startup")):
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while True:  # until the node has pieces from the source
                    text = await scrape(session, f"http://{HOST}:{port}/metrics")
                    got = samples(text)
                    if value(got, "swarmcast_received_bytes_total", content_id=cid, peer_role="source") > 0:
                        break
                    assert loop.time() < deadline, f"the {role} node got nothing from the source:\n{text}"
                    await asyncio.sleep(0.5)
                assert build_labels(got)["role"] == role
                assert value(got, "swarmcast_connected_peers", content_id=cid, peer_role="source") == 1
                assert value(got, "swarmcast_pieces_received_total", content_id=cid) > 0
                checked = promtool_check(text)
                assert checked.returncode == 0 and checked.stdout.strip() == "", checked.stdout + checked.stderr
