"""Review findings on the registry's reads and states, on SQLite and PostgreSQL: reads take no write lock, the
series reads are bounded, the "database unavailable" line is throttled and logs the encoded path, bad path
parameters are 404s before the database, a heartbeat in flight cannot revive a node that left, and nothing is
marked gone before the registry has run one heartbeat timeout."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from swarmcast.registry import api, queries, series, sweeper
from swarmcast.registry.app import build_app
from swarmcast.registry.db import Database
from swarmcast.registry.models import nodes, samples
from swarmcast.registry.queries import Heartbeat, NodeInfo
from swarmcast.registry.state import RegistrySettings, RegistryState
from tests.procs import free_port
from tests.registry_helpers import AUTH, TOKEN, node_body, registry_client

NODE = NodeInfo(role="support", address="127.0.0.1:7001", http=None, capacity_bps=None, version="1", content_ids=(),
                name=None)  # fmt: skip


async def test_reads_run_while_a_write_transaction_is_held_open(tmp_path: Path) -> None:
    """SQLite: a writer holds the write lock (BEGIN IMMEDIATE, as a heartbeat does); every public read and page
    still answers, from the last committed state. Before, every read began IMMEDIATE too and waited for the lock
    (then 503 after the busy timeout): readers and heartbeats queued on one lock."""
    async with registry_client(f"sqlite:///{tmp_path / 'registry.sqlite3'}", tmp_path) as (client, state):
        async with client.post("/api/nodes", json=node_body(), headers=AUTH) as response:
            node_id = (await response.json())["node_id"]
        writer = state.db.engine.connect()
        try:
            writer.begin()
            queries.register_node(writer, NODE, time.time())  # uncommitted, lock held
            for path in ("/api/nodes", f"/api/nodes/{node_id}", f"/api/nodes/{node_id}/series", "/api/streams",
                         "/api/series", "/api/streams/news", "/", f"/nodes/{node_id}", "/dashboard"):  # fmt: skip
                async with client.get(path) as response:
                    assert response.status in (200, 404), (path, response.status, await response.text())
                    if path == "/api/nodes":
                        assert [n["node_id"] for n in (await response.json())["nodes"]] == [node_id]
        finally:
            writer.rollback()
            writer.close()


async def test_the_series_reads_are_bounded_and_cached() -> None:
    now = [0.0]
    reader = series.SeriesReader(concurrency=2, ttl=2.0, clock=lambda: now[0])
    release = asyncio.Event()
    calls: list[int] = []

    async def compute(n: int) -> int:
        calls.append(n)
        await release.wait()
        return n

    tasks = [asyncio.create_task(reader.get(("q", n), functools.partial(compute, n))) for n in range(8)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert reader.running == 2 and len(calls) == 2, "two reads at once, the others wait"
    release.set()
    assert await asyncio.gather(*tasks) == list(range(8))
    assert reader.peak == 2
    assert await reader.get(("q", 3), lambda: compute(99)) == 3 and len(calls) == 8, "answered from the cache"
    now[0] = 5.0
    assert await reader.get(("q", 3), lambda: compute(99)) == 99, "a stale answer is read again"


async def test_series_requests_go_through_the_bound(registry_db_url: str, tmp_path: Path) -> None:
    async with registry_client(registry_db_url, tmp_path) as (client, state):
        async def fetch(seconds: int) -> int:
            async with client.get(f"/api/series?seconds={seconds}") as response:
                return response.status

        assert await asyncio.gather(*(fetch(60 + n) for n in range(8))) == [200] * 8
        reader = state.extras[api.SERIES_READER]
        assert isinstance(reader, series.SeriesReader)
        assert 1 <= reader.peak <= series.SERIES_CONCURRENCY


def test_the_unavailable_line_is_throttled_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    throttle = api.ThrottledLog(interval=10.0)
    with caplog.at_level(logging.WARNING, "swarmcast.registry"):
        assert throttle.warning(0.0, "down %s", "a")
        assert not any(throttle.warning(t, "down %s", "b") for t in (1.0, 2.0, 9.9))
        assert throttle.warning(10.0, "down %s", "c")
    assert [r.getMessage() for r in caplog.records] == [
        "down a", "down c (and 3 more such answer(s) since the last line)"]  # fmt: skip


async def test_a_503_logs_the_encoded_path_once(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(api, "unavailable_log", api.ThrottledLog())
    database = Database(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    database.upgrade()
    state = RegistryState(db=database, token=TOKEN, settings=RegistrySettings(state_dir=tmp_path))
    client = TestClient(TestServer(build_app(state, sweep=False)))
    await client.start_server()
    working = database.engine
    database.engine = Database(f"postgresql://nobody@127.0.0.1:{free_port()}/none?connect_timeout=5").engine
    try:
        with caplog.at_level(logging.WARNING, "swarmcast.registry"):
            for _ in range(3):
                async with client.get("/api/streams?x=%0Aforged%00line") as response:
                    assert response.status == 503
        lines = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(lines) == 1, lines
        assert "%0Aforged%00line" in lines[0] and "\n" not in lines[0] and "\0" not in lines[0]
    finally:
        await client.close()
        database.dispose()
        working.dispose()


BAD = ("a%00b", "news%0Aforged", "x%00" + "0" * 38, "%00")


async def test_bad_path_parameters_are_404_before_the_database(registry_db_url: str, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """A NUL in a PostgreSQL query was a 500 with a traceback (and the decoded path, a forged line, in the log)."""
    async with registry_client(registry_db_url, tmp_path) as (client, _state):
        with caplog.at_level(logging.INFO):
            for bad in BAD:
                for path in (f"/streams/{bad}", f"/watch/{bad}", f"/nodes/{bad}", f"/api/streams/{bad}",
                             f"/api/streams/{bad}/transport", f"/api/streams/{bad}/peers", f"/api/nodes/{bad}",
                             f"/api/nodes/{bad}/series"):  # fmt: skip
                    async with client.get(path) as response:
                        assert response.status == 404, (path, response.status, await response.text())
                for method in ("GET", "DELETE"):
                    async with client.request(method, f"/api/controller/keys/{bad}", headers=AUTH) as response:
                        assert response.status == 404, (method, bad, response.status, await response.text())
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not [r for r in caplog.records if "forged" in r.getMessage() and "\n" in r.getMessage()]


def test_a_heartbeat_in_flight_does_not_revive_a_node_that_left(registry_db_url: str) -> None:
    """The heartbeat has read the node (live) when a DELETE commits "left"; its UPDATE must not set it live.
    On SQLite the heartbeat's write lock makes the DELETE wait for it instead: the node ends "left" either way."""
    database = Database(registry_db_url)
    database.upgrade()
    try:
        with database.engine.begin() as c:
            node_id = queries.register_node(c, NODE, time.time())
        read_done, go_on, left = threading.Event(), threading.Event(), threading.Event()
        answer: list[bool] = []

        def beat() -> None:
            with database.engine.begin() as c:
                execute = c.execute
                calls = [0]

                def paused(*args: Any, **kwargs: Any) -> Any:
                    result = execute(*args, **kwargs)
                    calls[0] += 1
                    if calls[0] == 1:  # the SELECT of the node's state
                        read_done.set()
                        go_on.wait(10)
                    return result

                c.execute = paused  # type: ignore[method-assign]
                answer.append(queries.heartbeat(c, node_id, Heartbeat(None, {}, None), time.time(), 2.5))

        def leave() -> None:
            with database.engine.begin() as c:
                assert queries.deregister(c, node_id, time.time())
            left.set()

        beating = threading.Thread(target=beat)
        beating.start()
        assert read_done.wait(10)
        leaving = threading.Thread(target=leave)
        leaving.start()
        postgres = database.dialect == "postgresql"
        if postgres:
            assert left.wait(10), "on PostgreSQL the DELETE commits while the heartbeat is in flight"
        go_on.set()
        beating.join(20)
        leaving.join(20)
        with database.engine.begin() as c:
            assert queries.get_node(c, node_id)["state"] == "left"  # type: ignore[index]
        if postgres:
            assert answer == [False], "the heartbeat is told the node is unknown (404)"
    finally:
        database.dispose()


async def test_nothing_is_marked_gone_before_one_timeout_after_start(registry_db_url: str, tmp_path: Path) -> None:
    """After an outage every node's last heartbeat is old: the first sweeps must leave them live."""
    database = Database(registry_db_url)
    database.upgrade()
    now = time.time()
    settings = RegistrySettings(state_dir=tmp_path, heartbeat_timeout=15.0, max_samples=0)  # prune all samples
    state = RegistryState(db=database, token=TOKEN, settings=settings)

    def old_node(c: sa.Connection) -> str:
        node_id = queries.register_node(c, NODE, now - 100)
        queries.heartbeat(c, node_id, Heartbeat(None, {"peers": 1}, None), now - 100, 2.5)  # a sample to prune
        return node_id

    def observe(c: sa.Connection) -> tuple[int, str]:
        count = c.execute(sa.select(sa.func.count()).select_from(samples)).scalar_one()
        return count, c.execute(sa.select(nodes.c.state).where(nodes.c.node_id == node_id)).scalar_one()

    try:
        node_id = await database.run(old_node)
        task = asyncio.create_task(sweeper.run_sweeper(state, None))
        try:
            for _ in range(200):  # the first round prunes after its look for silent nodes: then it has looked
                if (await database.run(observe))[0] == 0:
                    break
                await asyncio.sleep(0.05)
            assert await database.run(observe) == (0, "live")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        task = asyncio.create_task(sweeper.run_sweeper(state, None, started_at=now - 20))
        try:
            for _ in range(200):
                if (await database.run(observe))[1] == "gone":
                    break
                await asyncio.sleep(0.05)
            assert (await database.run(observe))[1] == "gone", "one timeout after start, silent nodes go"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert not sweeper.may_mark_gone(now, now + 14.9, 15.0) and sweeper.may_mark_gone(now, now + 15, 15.0)
    finally:
        database.dispose()
