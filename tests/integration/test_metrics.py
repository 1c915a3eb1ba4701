"""/metrics with real processes: the figures move while a player plays (a source and an engine on loopback,
scraped twice, and by a real Prometheus with docs/prometheus.yml), Debian's promtool accepts every role's output.
The access rules: tests/hostile/test_metrics_and_ctl_access.py."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from swarmcast import VERSION_CODE, __version__
from tests.integration.chain import HOST, engine, signal_source, source_node, support_node
from tests.procs import free_port, swarmcast_process

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
DOCS_CONFIG = Path(__file__).resolve().parents[2] / "docs" / "prometheus.yml"
TOKEN = "metrics-t0ken"
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


async def scrape(session: aiohttp.ClientSession, url: str, token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with session.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/plain", response.headers
        return await response.text()


def prometheus_config(tmp: Path, node: str, engine_address: str, token: str) -> Path:
    """docs/prometheus.yml pointed at these processes, scraping every second."""
    config = yaml.safe_load(DOCS_CONFIG.read_text())
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s"}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (tmp / "token").write_text(token + "\n")
    jobs["swarmcast-nodes"]["authorization"]["credentials_file"] = str(tmp / "token")
    jobs["swarmcast-nodes"]["static_configs"] = [{"targets": [node], "labels": {"role": "source"}}]
    jobs["swarmcast-engines"]["static_configs"][0]["targets"] = [engine_address]
    config["scrape_configs"] = [jobs["swarmcast-nodes"], jobs["swarmcast-engines"]]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


async def prometheus_query(session: aiohttp.ClientSession, base: str, query: str) -> dict[str, float]:
    """The query's vector as {job: value}; empty while Prometheus is still starting (it answers 503 then)."""
    async with session.get(f"{base}/api/v1/query", params={"query": query}) as response:
        if response.status == 503:
            return {}
        answer = await response.json()
    assert answer["status"] == "success", answer
    return {str(r["metric"].get("job")): float(r["value"][1]) for r in answer["data"]["result"]}


async def test_figures_move_during_playback_and_prometheus_and_promtool_take_them(tmp_path: Path) -> None:
    if PROMETHEUS is None:
        pytest.skip("Debian's prometheus package is not installed")
    with contextlib.ExitStack() as stack:
        signal_url = stack.enter_context(signal_source(tmp_path))
        source = stack.enter_context(source_node(tmp_path, signal_url, "--bitrate", "125000",
                                                 "--service-access-token", TOKEN))  # fmt: skip
        engine_url = stack.enter_context(engine(tmp_path))
        # A real Prometheus with the docs' scrape config (the node's token as a bearer token from a file).
        prom_port = free_port()
        config = prometheus_config(tmp_path, f"{HOST}:{source.port}", engine_url.removeprefix("http://"), TOKEN)
        stack.enter_context(swarmcast_process(
            [f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address={HOST}:{prom_port}"], command=[PROMETHEUS], stderr_path=tmp_path / "prom.log",
            wait_port=(HOST, prom_port)))  # fmt: skip
        prometheus = f"http://{HOST}:{prom_port}"
        cid = source.descriptor().infohash
        transport_url = f"http://{HOST}:{source.port}/app/{TOKEN}/get_transport_file?format=raw"
        play_url = f"{engine_url}/ace/getstream?url={urllib.parse.quote(transport_url, safe='')}"
        timeout = aiohttp.ClientTimeout(total=150, sock_read=30)
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
            first_source = await scrape(session, f"http://{HOST}:{source.port}/metrics", TOKEN)
            await read_for(3.0)
            second_engine = await scrape(session, f"{engine_url}/metrics")
            second_source = await scrape(session, f"http://{HOST}:{source.port}/metrics", TOKEN)
            # Prometheus, while the player plays: both targets up (a refused token or a bad exposition is up 0),
            # and the figures move in its own view too.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while True:
                up = await prometheus_query(session, prometheus, "up")
                played = await prometheus_query(session, prometheus, "increase(swarmcast_delivered_bytes_total[5s])")
                uploaded = await prometheus_query(session, prometheus, "increase(swarmcast_sent_bytes_total[5s])")
                if (up == {"swarmcast-nodes": 1, "swarmcast-engines": 1} and played.get("swarmcast-engines", 0) > 0
                        and uploaded.get("swarmcast-nodes", 0) > 0):  # fmt: skip
                    break
                assert loop.time() < deadline, f"Prometheus: up {up}, delivered {played}, sent {uploaded}"
                await read_for(1.0)
            roles = await prometheus_query(session, prometheus, "count by (job) (swarmcast_build_info)")
            assert roles == {"swarmcast-nodes": 1, "swarmcast-engines": 1}
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
