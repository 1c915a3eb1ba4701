"""The registry's queries (registry/queries.py, series.py) on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarmcast.registry import queries, series
from swarmcast.registry.db import Database
from swarmcast.registry.queries import Heartbeat, NodeInfo, StreamInfo

T = TypeVar("T")
CID = "ab" * 20
CID2 = "cd" * 20


class Db:
    def __init__(self, database: Database) -> None:
        self.database = database

    def __call__(self, fn: Callable[[Connection], T]) -> T:
        with self.database.engine.begin() as connection:
            return fn(connection)


@pytest.fixture
def db(registry_db_url: str) -> Iterator[Db]:
    database = Database(registry_db_url)
    database.upgrade()
    try:
        yield Db(database)
    finally:
        database.dispose()


def node(role: str = "support", address: str | None = "127.0.0.1:7001", content_ids: tuple[str, ...] = (CID,),
         name: str | None = None) -> NodeInfo:  # fmt: skip
    return NodeInfo(role=role, address=address, http="http://127.0.0.1:7001", capacity_bps=10_000_000,
                    version="1.0", content_ids=content_ids, name=name)  # fmt: skip


def stream(content_id: str = CID, name: str = "news", node_id: str | None = None) -> StreamInfo:
    return StreamInfo(content_id=content_id, name=name, title="News", categories=("informational",), quality="HD",
                      bitrate=2_000_000, renditions=None, transport=b"d1:xi1ee", node_id=node_id)  # fmt: skip


def beat(content_ids: tuple[str, ...] = (CID,), figures: dict[str, Any] | None = None,
         per_stream: dict[str, dict[str, Any]] | None = None) -> Heartbeat:  # fmt: skip
    return Heartbeat(content_ids=content_ids, figures=figures or {}, stream_figures=per_stream or {})


def test_a_stream_shows_its_live_nodes_viewers_and_peers(db: Db) -> None:
    source = db(lambda c: queries.register_node(c, node("source", "127.0.0.1:7000"), 100.0))
    assert db(lambda c: queries.upsert_stream(c, stream(node_id=source), 100.0)) is True
    support = db(lambda c: queries.register_node(c, node("support", "127.0.0.2:7001"), 100.0))
    db(lambda c: queries.register_node(c, node("start", "127.0.0.3:7002"), 100.0))
    engines = [db(lambda c: queries.register_node(c, node("engine", None), 100.0)) for _ in range(3)]
    db(lambda c: queries.heartbeat(c, engines[0], beat(per_stream={CID: {"viewers": 2}}), 101.0, 2.5))
    [listed] = db(queries.list_streams)
    assert listed["live"] is True
    assert listed["nodes"] == {"source": 1, "support": 1, "start": 1, "engine": 3, "broadcaster": 0}
    assert listed["viewers"] == 4  # 2 sessions on one engine, one each on the two that did not say
    peers = db(lambda c: queries.stream_peers(c, "news"))
    assert peers is not None
    assert [p["role"] for p in peers] == ["start", "support", "source"]
    assert db(lambda c: queries.stream_peers(c, "nosuch")) is None
    detail = db(lambda c: queries.get_stream(c, CID.upper()))
    assert detail is not None
    assert len(detail["nodes"]) == 6
    assert db(lambda c: queries.get_transport(c, "news")) == b"d1:xi1ee"

    assert db(lambda c: queries.deregister(c, support, 102.0)) is True
    assert db(lambda c: queries.mark_gone(c, 130.0, 15.0)) == 5  # every live one: none beat after 115 s
    [listed] = db(queries.list_streams)
    assert listed["live"] is False
    assert listed["viewers"] == 0
    assert db(lambda c: queries.get_node(c, support))["state"] == "left"  # type: ignore[index]
    assert db(lambda c: queries.get_node(c, source))["state"] == "gone"  # type: ignore[index]


def test_a_heartbeat_revives_a_gone_node_but_not_one_that_left(db: Db) -> None:
    gone = db(lambda c: queries.register_node(c, node(), 100.0))
    left = db(lambda c: queries.register_node(c, node(), 100.0))
    db(lambda c: queries.mark_gone(c, 200.0, 15.0))
    db(lambda c: queries.deregister(c, left, 200.0))
    assert db(lambda c: queries.heartbeat(c, gone, beat(), 201.0, 2.5)) is True
    assert db(lambda c: queries.heartbeat(c, left, beat(), 201.0, 2.5)) is False
    assert db(lambda c: queries.heartbeat(c, "00000000-0000-4000-8000-000000000000", beat(), 201.0, 2.5)) is False
    assert db(lambda c: queries.get_node(c, gone))["state"] == "live"  # type: ignore[index]


def test_samples_are_kept_at_most_once_per_interval_and_pruned(db: Db) -> None:
    node_id = db(lambda c: queries.register_node(c, node("engine", None), 0.0))
    for i in range(40):  # a flood: 40 heartbeats in 4 s
        at = i * 0.1
        db(lambda c: queries.heartbeat(c, node_id, beat(figures={"cpu_percent": 1.0}), at, 2.5))  # noqa: B023
    got = db(lambda c: series.node_series(c, node_id, 4.0, 60.0, 5.0))
    assert got["cpu_percent"] == [1.0]
    count = db(lambda c: c.execute(sa.text("SELECT count(*) FROM samples")).scalar_one())
    assert count == 2  # the node's own figures at 0 s and at 2.5 s (no per-stream figures were sent)
    db(lambda c: queries.prune(c, 1000.0, 100.0, 10))
    assert db(lambda c: c.execute(sa.text("SELECT count(*) FROM samples")).scalar_one()) == 0


def test_a_live_name_is_not_taken_but_an_off_air_one_moves(db: Db) -> None:
    source = db(lambda c: queries.register_node(c, node("source"), 100.0))
    db(lambda c: queries.upsert_stream(c, stream(node_id=source), 100.0))
    with pytest.raises(queries.StreamConflict):
        db(lambda c: queries.upsert_stream(c, stream(CID2), 101.0))
    db(lambda c: queries.deregister(c, source, 102.0))
    assert db(lambda c: queries.upsert_stream(c, stream(CID2), 103.0)) is True
    assert db(lambda c: queries.find_stream(c, "news")) == CID2
    with pytest.raises(queries.UnknownNode):
        db(lambda c: queries.upsert_stream(c, stream(node_id="00000000-0000-4000-8000-000000000000"), 104.0))


def test_series_sum_uploads_and_average_delays(db: Db) -> None:
    source = db(lambda c: queries.register_node(c, node("source"), 0.0))
    e1 = db(lambda c: queries.register_node(c, node("engine", None), 0.0))
    e2 = db(lambda c: queries.register_node(c, node("engine", None), 0.0))
    db(lambda c: queries.heartbeat(c, source, beat(per_stream={CID: {"upload_bps": 1000}}), 10.0, 2.5))
    db(lambda c: queries.heartbeat(c, e1, beat(per_stream={CID: {"upload_bps": 300, "delay_s": 2.0}}), 11.0, 2.5))
    db(lambda c: queries.heartbeat(c, e2, beat(per_stream={CID: {"upload_bps": 500, "delay_s": 4.0,
                                                                  "viewers": 3}}), 12.0, 2.5))  # fmt: skip
    got = db(lambda c: series.stream_series(c, CID, 14.0, 60.0, 5.0))
    assert got["t"] == [10.0]
    assert got["broadcaster_upload_bps"] == [1000]
    assert got["viewer_upload_bps"] == [800]
    assert got["delay_s"] == [3.0]
    assert got["viewers"] == [4]
    assert got["startup_s"] == [None]
    assert db(lambda c: series.stream_series(c, None, 14.0, 60.0, 5.0))["viewers"] == [4]
    assert db(lambda c: series.stream_series(c, CID2, 14.0, 60.0, 5.0))["t"] == []
