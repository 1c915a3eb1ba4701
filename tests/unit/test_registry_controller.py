"""The fleet controller's storage (registry/controller_store.py) and start check (controller.prepare), on SQLite
and PostgreSQL: lists by server, keys sealed at rest, metadata rules, the monitoring caps. No sockets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import make_mocked_request

from swarmcast.registry import controller_store as store
from swarmcast.registry.controller import REFUSAL_LOG_INTERVAL, ControllerSettings, RefusalLog, prepare
from swarmcast.registry.db import Database
from swarmcast.registry.keys import KeyBox, KeyFileError, load_or_create
from swarmcast.registry.models import controller_keys, controller_lists, controller_monitor
from swarmcast.registry.state import RegistrySettings, RegistryState

KEY = ("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIE1vY2sga2V5IGZvciB0aGUgcmVnaXN0cnkgdGVzdA==\n"
       "-----END PRIVATE KEY-----\n")
OTHER = KEY.replace("E1vY2sg", "E2vY2sg")


def source(uid: str, port: int, **more: object) -> dict[str, object]:
    return {"stream_uid": uid, "port": port, "title": "T", "url": "http://o/s.ts", "bitrate": "25000", **more}


def support(port: int, ip: str = "127.0.0.2") -> dict[str, object]:
    return {"port": port, "source_ip": ip, "source_port": 9000}


@pytest.fixture
def db(registry_db_url: str) -> Iterator[Database]:
    """Every test here runs on SQLite and on the real PostgreSQL server the tests start (conftest)."""
    database = Database(registry_db_url)
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def box(tmp_path: Path) -> KeyBox:
    return load_or_create(tmp_path / "registry.key")


def test_each_server_gets_its_own_list_else_the_default_else_none(db: Database, box: KeyBox) -> None:
    with db.engine.begin() as c:
        assert store.pick_list(c, "support_node", "127.0.0.3") is None
        store.put_list(c, box, "support_node", "127.0.0.3", [support(9001)], 1.0)
        store.put_list(c, box, "support_node", "default", [support(9009)], 1.0)
        store.put_list(c, box, "support_node", "127.0.0.4", [], 1.0)  # an explicit empty list is one
    with db.engine.begin() as c:
        assert store.pick_list(c, "support_node", "127.0.0.3") == ("127.0.0.3", [support(9001)])
        assert store.pick_list(c, "support_node", "127.0.0.9") == ("default", [support(9009)])
        assert store.pick_list(c, "support_node", "127.0.0.4") == ("127.0.0.4", [])
        assert store.pick_list(c, "source_node", "127.0.0.3") is None, "kinds are apart"
        assert store.delete_list(c, "support_node", "default") and not store.delete_list(c, "support_node", "default")
        assert store.pick_list(c, "support_node", "127.0.0.9") is None


def test_server_names_are_ip_addresses_normalized_or_default() -> None:
    assert store.server_name("::ffff:127.0.0.2") == "127.0.0.2"
    assert store.server_name("default") == "default"
    assert store.server_name("2001:db8::1") == "2001:db8::1"
    for bad in ("", "host.example", "127.0.0.256", "default "):
        with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
            store.server_name(bad)


def test_lists_are_checked_with_the_fleets_own_rules_and_nothing_is_stored_when_bad(db: Database,
                                                                                      box: KeyBox) -> None:
    with db.engine.begin() as c, pytest.raises(store.RefusedError) as caught:
        store.put_list(c, box, "source_node", "default", [source("a", 9000), source("b", 9000, title=5)], 1.0)
    assert caught.value.status == 400
    assert "source_node[1].port: 9000 is also source_node[0]'s" in caught.value.problems
    assert any(p.startswith("source_node[1].title") for p in caught.value.problems)
    with db.engine.begin() as c, pytest.raises(store.RefusedError, match="is not a list"):
        store.put_list(c, box, "support_node", "default", {"port": 1}, 1.0)
    with db.engine.begin() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(controller_lists)).scalar() == 0


def test_metadata_in_a_list_is_sealed_apart_and_given_back_only_on_request(db: Database, box: KeyBox,
                                                                            tmp_path: Path) -> None:
    entry = source("ch1", 9000, metadata={"last_seq": 2000, "private_key": KEY})
    with db.engine.begin() as c:
        assert store.put_list(c, box, "source_node", "default", [entry], 1.0) == ["ch1"]
    with db.engine.begin() as c:
        _, listed = store.pick_list(c, "source_node", "127.0.0.5") or ("", [])
        assert listed == [source("ch1", 9000)], "the list itself keeps no key"
        assert store.with_metadata(c, box, listed) == [entry]
        assert store.list_keys(c) == [{"name": "ch1", "last_seq": 2000, "key_id": box.key_id, "updated_at": 1.0}]
        sealed = c.execute(sa.select(controller_keys.c.sealed)).scalar()
    db.dispose()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("registry.sqlite3*"))
    assert db.dialect != "sqlite" or raw, "the SQLite file was read"
    assert KEY.encode() not in raw and b"PRIVATE KEY" not in raw and b"E1vY2sga2V5" not in raw
    assert isinstance(sealed, bytes) and box.open("ch1", sealed) == KEY.encode()


def test_a_different_key_for_a_stored_stream_is_refused_and_numbers_never_go_back(db: Database,
                                                                                   box: KeyBox) -> None:
    with db.engine.begin() as c:
        store.store_metadata(c, box, store.check_metadata({"ch1": {"last_seq": 3000, "private_key": KEY}}), 1.0)
        store.store_metadata(c, box, {"ch1": (1000, KEY), "ch2": (5, OTHER)}, 2.0)
    with db.engine.begin() as c:
        assert store.open_keys(c, box, ["ch1", "ch2", "nope"]) == {"ch1": (3000, KEY), "ch2": (5, OTHER)}
    with db.engine.begin() as c, pytest.raises(store.RefusedError) as caught:
        store.store_metadata(c, box, {"ch3": (1, KEY), "ch1": (4000, OTHER)}, 3.0)
    assert caught.value.status == 409 and "ch1: a different key" in str(caught.value)
    assert KEY not in str(caught.value) and OTHER not in str(caught.value)
    with db.engine.begin() as c:
        assert set(store.open_keys(c, box, ["ch1", "ch3"])) == {"ch1"}, "all or nothing"
        assert store.delete_key(c, "ch1")
        store.store_metadata(c, box, {"ch1": (10, OTHER)}, 4.0)  # deleted first: a new key is taken
        assert store.open_keys(c, box, ["ch1"]) == {"ch1": (10, OTHER)}


@pytest.mark.parametrize(("body", "message"), [
    ([], "expected"), ({}, "expected"), ({"../x": {"last_seq": 1, "private_key": "k"}}, "is not a stream name"),
    ({"a": {"last_seq": -1, "private_key": "k"}}, "a.last_seq"), ({"a": {"last_seq": True, "private_key": "k"}},
    "a.last_seq"), ({"a": {"last_seq": 1, "private_key": " "}}, "a.private_key"),
    ({"a": {"last_seq": 1, "private_key": "k" * 20000}}, "over 16384 bytes"), ({"a": 5}, "a: not an object"),
])  # fmt: skip
def test_bad_metadata_pushes_are_refused_without_echoing_keys(body: object, message: str) -> None:
    with pytest.raises(store.RefusedError, match=message) as caught:
        store.check_metadata(body)
    assert caught.value.status == 400 and "kkkk" not in str(caught.value)


def test_one_entry_is_replaced_or_added_by_port_and_deleted(db: Database, box: KeyBox) -> None:
    with db.engine.begin() as c:
        store.put_list(c, box, "source_node", "127.0.0.2", [source("a", 9000)], 1.0)
        store.put_entry(c, box, "source_node", "127.0.0.2", 9000, source("a", 9000, title="New"), 2.0)
        store.put_entry(c, box, "source_node", "127.0.0.2", 9002, {k: v for k, v in source("b", 0).items()
                                                                 if k != "port"}, 2.0)  # fmt: skip
        with pytest.raises(store.RefusedError, match="port 9003 is not 9004"):
            store.put_entry(c, box, "source_node", "127.0.0.2", 9004, source("c", 9003), 2.0)
        with pytest.raises(store.RefusedError, match="stream_uid"):
            store.put_entry(c, box, "source_node", "127.0.0.2", 9004, source("a", 9004), 2.0)
        assert store.stored_list(c, "source_node", "127.0.0.2") == [source("a", 9000, title="New"), source("b", 9002)]
        assert store.delete_entry(c, box, "source_node", "127.0.0.2", 9000, 3.0)
        assert not store.delete_entry(c, box, "source_node", "127.0.0.2", 9000, 3.0)
        assert store.stored_list(c, "source_node", "127.0.0.2") == [source("b", 9002)]


def monitor(port: int, pad: int = 0) -> dict[str, object]:
    return {"port": port, "type": "source", "infohash": "ab" * 20, "upload_speed": port, "pad": "x" * pad}


def test_monitoring_keeps_a_series_and_prunes_by_age_rows_and_bytes(db: Database) -> None:
    limits = store.MonitorLimits(retention=100.0, max_rows=50, max_bytes=10**9)
    with db.engine.begin() as c:
        for i in range(80):
            store.add_monitor(c, "127.0.0.2", monitor(9000), 100, 1000.0 + i)
        assert store.prune_monitor(c, limits, 1079.0) == (45, 4500), "cut to 90 % of the row cap, oldest first"
        series = store.monitor_series(c, "127.0.0.2", 9000, 0.0)
        assert series["t"][0] == 1035.0 and series["t"][-1] == 1079.0 and series["upload_speed"][0] == 9000
        assert store.prune_monitor(c, limits, 1150.0) == (30, 3000), "older than the retention (at < 1050): gone"
        by_bytes = store.MonitorLimits(retention=1e9, max_rows=10**6, max_bytes=1000)
        assert store.prune_monitor(c, by_bytes, 1150.0) == (9, 900), "cut to 90 % of the byte cap"
        latest = store.monitor_latest(c)
    assert [(n["server"], n["port"], n["content_id"], n["at"]) for n in latest] == [
        ("127.0.0.2", 9000, "ab" * 20, 1079.0)]


def test_a_monitor_needs_port_and_type() -> None:
    for body, message in (([], "expected a JSON object"), ({"type": "source"}, "port"),
                          ({"port": 70000, "type": "source"}, "port"), ({"port": 1, "type": "x"}, "type")):
        with pytest.raises(store.RefusedError, match=message):
            store.check_monitor(body)
    assert store.check_monitor({"port": 1, "type": "support", "infohash": "ZZ"}) == (1, "support", None)


def test_a_registry_started_with_another_key_file_is_refused_in_one_line(db: Database, tmp_path: Path) -> None:
    state = RegistryState(db=db, token="t" * 16, settings=RegistrySettings(state_dir=tmp_path))
    ctl = prepare(state)
    assert ctl.box.path == tmp_path / "registry.key"
    with db.engine.begin() as c:
        store.store_metadata(c, ctl.box, {"ch1": (1, KEY)}, 1.0)
    with pytest.raises(KeyFileError, match=r"--key-file .*other.key: key id \w+ did not seal the 1 stored stream "
                                           r"key\(s\) \(sealed by key id " + ctl.box.key_id):
        prepare(state, ControllerSettings(key_file=tmp_path / "other.key"))
    assert prepare(state).box.key_id == ctl.box.key_id


def test_the_monitor_table_is_empty_after_upgrade(db: Database) -> None:
    with db.engine.begin() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(controller_monitor)).scalar() == 0
        assert store.monitor_totals(c) == (0, 0)


def test_refused_requests_are_logged_once_per_interval_with_a_count_and_the_encoded_path(
        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    refusals = RefusalLog()
    forged = make_mocked_request("GET", "/api/controller/keys/x%0AFORGED?token=secret-guess")
    with caplog.at_level("WARNING", logger="swarmcast.registry.controller"):
        refusals.note(forged, 100.0)
        for i in range(50):
            refusals.note(forged, 100.0 + i * 0.1)
        refusals.note(forged, 100.0 + REFUSAL_LOG_INTERVAL)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2, lines
    assert "GET /api/controller/keys/x%0AFORGED from" in lines[0] and "\n" not in lines[0]
    assert lines[1].endswith("(50 more refused since the last such line)")
    assert not any("secret-guess" in line for line in lines)
