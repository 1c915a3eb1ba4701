"""The fleet controller's row caps and answer limits (registry/controller_store.py), on SQLite and PostgreSQL:
one list per server IP and any number of stream keys cannot fill the database, and the answers listing all
lists and all monitors are bounded. No sockets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmcast.registry import controller_store as store
from swarmcast.registry.db import Database
from swarmcast.registry.keys import KeyBox, load_or_create
from tests.unit.test_registry_controller import KEY, monitor, support


@pytest.fixture
def db(registry_db_url: str) -> Iterator[Database]:
    database = Database(registry_db_url)
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def box(tmp_path: Path) -> KeyBox:
    return load_or_create(tmp_path / "registry.key")


def test_lists_past_the_cap_are_refused_but_stored_ones_still_update(
    db: Database, box: KeyBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "MAX_LISTS", 3)
    with db.engine.begin() as c:
        for i in range(3):
            store.put_list(c, box, "support_node", f"127.0.1.{i}", [support(9000 + i)], 1.0)
    with pytest.raises(store.RefusedError) as refused, db.engine.begin() as c:
        store.put_list(c, box, "support_node", "127.0.1.9", [support(9009)], 2.0)
    assert refused.value.status == 409 and "limit" in str(refused.value)
    with db.engine.begin() as c:
        store.put_list(c, box, "support_node", "127.0.1.0", [support(9100)], 3.0)  # an update is no new row
        assert store.stored_list(c, "support_node", "127.0.1.0") == [support(9100)]
        assert store.stored_list(c, "support_node", "127.0.1.9") is None
        assert store.delete_list(c, "support_node", "127.0.1.1")
        store.put_list(c, box, "support_node", "127.0.1.9", [support(9009)], 4.0)  # room again


def test_keys_past_the_cap_are_refused_all_or_nothing(db: Database, box: KeyBox,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(store, "MAX_KEYS", 3)
    with db.engine.begin() as c:
        store.store_metadata(c, box, {"ch1": (1, KEY), "ch2": (1, KEY)}, 1.0)
    with pytest.raises(store.RefusedError) as refused, db.engine.begin() as c:
        store.store_metadata(c, box, {"ch1": (5, KEY), "ch3": (1, KEY), "ch4": (1, KEY)}, 2.0)
    assert refused.value.status == 409 and "limit of 3" in str(refused.value)
    with db.engine.begin() as c:
        assert [k["name"] for k in store.list_keys(c)] == ["ch1", "ch2"]
        assert store.open_keys(c, box, ["ch1"])["ch1"][0] == 1, "nothing of the refused push was stored"
        store.store_metadata(c, box, {"ch1": (5, KEY), "ch3": (1, KEY)}, 3.0)  # updates and one new: fits
        assert [k["name"] for k in store.list_keys(c)] == ["ch1", "ch2", "ch3"]


def test_all_lists_answers_the_newest_lists_only(db: Database, box: KeyBox, monkeypatch: pytest.MonkeyPatch) -> None:
    with db.engine.begin() as c:
        for i in range(5):
            store.put_list(c, box, "support_node", f"127.0.2.{i}", [support(9000 + i)], 10.0 + i)
    monkeypatch.setattr(store, "MAX_LISTS_ANSWER", 2)
    with db.engine.begin() as c:
        assert [e["server"] for e in store.all_lists(c)] == ["127.0.2.3", "127.0.2.4"]
    monkeypatch.setattr(store, "MAX_LISTS_ANSWER", 100)
    monkeypatch.setattr(store, "MAX_ANSWER_BYTES", 1)  # past the byte limit: still the newest one
    with db.engine.begin() as c:
        assert [e["server"] for e in store.all_lists(c)] == ["127.0.2.4"]


def test_monitor_latest_answers_the_newest_nodes_only(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    with db.engine.begin() as c:
        for port in (9000, 9001, 9002, 9003):
            store.add_monitor(c, "127.0.0.2", monitor(port), 100, 1000.0 + port)
        store.add_monitor(c, "127.0.0.2", monitor(9000), 100, 5000.0)  # 9000 again: the newest row
    monkeypatch.setattr(store, "MAX_MONITORS_ANSWER", 2)
    with db.engine.begin() as c:
        assert [(e["port"], e["at"]) for e in store.monitor_latest(c)] == [(9000, 5000.0), (9003, 10003.0)]
    monkeypatch.setattr(store, "MAX_MONITORS_ANSWER", 1000)
    monkeypatch.setattr(store, "MAX_ANSWER_BYTES", 250)  # 100 bytes a row: two rows fit
    with db.engine.begin() as c:
        assert [e["port"] for e in store.monitor_latest(c)] == [9000, 9003]
