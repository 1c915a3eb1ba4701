"""The fleet controller's storage: stream lists, sealed broadcast keys, the monitoring time series.

Plain functions on a SQLAlchemy connection (run in a worker thread by ``Database.run``, one transaction each), so
they are tested without a server. The HTTP side is registry/controller.py.

- Lists: one per kind (``source_node`` | ``support_node``) and server (an IP address or ``default``). A server
  gets its own list when one is stored for it, else the ``default`` one. Entries are validated with the fleet's own
  checks (fleet/config.py) when they are written, so a fleet never fetches a list it would refuse.
- Keys: the ``.sauth`` of a stream, sealed (registry/keys.py), with the piece number to continue from. A push
  with another key for a stored stream is refused (a restore would start another broadcast); ``last_seq`` only
  rises for the same key. Metadata given inside a source entry goes to the same place and is stripped from it.
- Monitoring: one row per pushed node monitor; rows older than the retention go, and past the row or byte cap
  the oldest go (down to 90 % of the cap, so a full table is not pruned on every insert).
"""

from __future__ import annotations

import ipaddress
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarmcast.fleet.config import (
    ENGINE_VERSIONS,
    STREAM_UID,
    AppConfig,
    ConfigError,
    Controller,
    check_sources,
    check_supports,
)
from swarmcast.registry.keys import KeyBox
from swarmcast.registry.models import controller_keys, controller_lists, controller_monitor
from swarmcast.registry.validate import is_content_id

KINDS = ("source_node", "support_node")
DEFAULT_SERVER = "default"
MAX_KEY_BYTES = 16 * 1024  # as fleet/push.py and fleet/receiver.py
MAX_STREAMS_PER_POST = 10_000
MAX_SEQ = 2**62
MAX_SERIES_POINTS = 5000
MAX_LISTS = 1000  # rows of controller_lists (one per kind and server); a new one past it is refused (409)
MAX_KEYS = 10_000  # rows of controller_keys (one per stream name); a push adding past it is refused (409)
MAX_LISTS_ANSWER = 100  # GET /api/controller/lists: the newest-updated lists, at most this many ...
MAX_MONITORS_ANSWER = 1000  # GET /api/controller/monitors: the newest nodes' monitors, at most this many ...
MAX_ANSWER_BYTES = 8 * 1024 * 1024  # ... and, for both, no more JSON than this (always at least one)
PRUNE_TO = 0.9  # past a cap, prune down to this share of it
SERIES_FIGURES = ("connected_peers_count", "upload_speed", "download_speed", "last_piece", "uploaded", "downloaded")


class RefusedError(Exception):
    """A write the controller refuses: HTTP ``status`` with a one-line message (never holding a key)."""

    def __init__(self, status: int, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.problems = list(problems)


def server_name(value: str) -> str:
    """An IP address (normalized; an IPv4-mapped IPv6 address is its IPv4) or ``default``; ValueError otherwise."""
    if value == DEFAULT_SERVER:
        return value
    address = ipaddress.ip_address(value)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


# ---- stream lists ----

# The fleet's checks want an app config; the engine each entry names is the fleet server's business, so every
# version is given an executable that exists here (the interpreter) and only the entries themselves are checked.
_CHECK_APP = AppConfig(
    path=Path("registry"),
    engine_path=dict.fromkeys(ENGINE_VERSIONS, sys.executable),
    root=Path("/"), controller=Controller(None, None, None, None), dirs={}, trackers=(),
    provider_key=None, node_access_token=None, bind=None,
)  # fmt: skip


def check_list(kind: str, entries: object) -> list[dict[str, object]]:
    """The entries as the fleet would accept them (RefusedError 400 with every problem otherwise)."""
    try:
        if kind == "source_node":
            check_sources(entries, _CHECK_APP, origin=kind)
        else:
            check_supports(entries, _CHECK_APP, origin=kind)
    except ConfigError as error:
        problems = [p.removeprefix(f"{kind}: ") for p in error.problems]
        raise RefusedError(400, f"{kind}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1
                                                         else ""), problems) from None  # fmt: skip
    assert isinstance(entries, list)
    return [dict(entry) for entry in entries]


def _split_metadata(entries: list[dict[str, object]]) -> tuple[list[dict[str, object]], dict[str, tuple[int, str]]]:
    keys: dict[str, tuple[int, str]] = {}
    kept = []
    for entry in entries:
        meta = entry.pop("metadata", None)
        if isinstance(meta, dict):
            seq, key = meta.get("last_seq"), meta.get("private_key")
            if isinstance(seq, int) and isinstance(key, str):  # check_list checked both
                keys[str(entry["stream_uid"])] = (seq, key)
        kept.append(entry)
    return kept, keys


def put_list(conn: Connection, box: KeyBox, kind: str, server: str, entries: object, now: float) -> list[str]:
    """Store ``server``'s list of ``kind``; the names whose keys came with it (stored sealed, not in the list)."""
    checked, keys = _split_metadata(check_list(kind, entries))
    if keys:
        store_metadata(conn, box, keys, now)
    values = {"entries": checked, "updated_at": now}
    updated = conn.execute(sa.update(controller_lists).where(controller_lists.c.kind == kind,
                                                             controller_lists.c.server == server).values(values))
    if updated.rowcount == 0:
        stored = conn.execute(sa.select(sa.func.count()).select_from(controller_lists)).scalar_one()
        if stored >= MAX_LISTS:
            raise RefusedError(409, f"the registry holds {stored} lists, its limit: delete one "
                               "(DELETE /api/controller/lists/KIND/SERVER) or use the default list")  # fmt: skip
        conn.execute(sa.insert(controller_lists).values(kind=kind, server=server, **values))
    return sorted(keys)


def put_entry(conn: Connection, box: KeyBox, kind: str, server: str, port: int, entry: object,
              now: float) -> list[str]:  # fmt: skip
    """One entry of ``server``'s list, by its port: replaced, or added."""
    if not isinstance(entry, dict):
        raise RefusedError(400, f"{kind}: the entry is not a JSON object")
    if entry.get("port", port) != port:
        raise RefusedError(400, f"{kind}: the entry's port {entry.get('port')!r} is not {port} (the URL's)")
    current = stored_list(conn, kind, server) or []
    merged = [e for e in current if not (isinstance(e, dict) and e.get("port") == port)] + [{**entry, "port": port}]
    return put_list(conn, box, kind, server, merged, now)


def delete_entry(conn: Connection, box: KeyBox, kind: str, server: str, port: int, now: float) -> bool:
    current = stored_list(conn, kind, server)
    if current is None or not any(isinstance(e, dict) and e.get("port") == port for e in current):
        return False
    put_list(conn, box, kind, server, [e for e in current if not (isinstance(e, dict) and e.get("port") == port)],
             now)  # fmt: skip
    return True


def delete_list(conn: Connection, kind: str, server: str) -> bool:
    deleted = conn.execute(sa.delete(controller_lists).where(controller_lists.c.kind == kind,
                                                             controller_lists.c.server == server))  # fmt: skip
    return bool(deleted.rowcount)


def stored_list(conn: Connection, kind: str, server: str) -> list[dict[str, object]] | None:
    entries = conn.execute(sa.select(controller_lists.c.entries).where(
        controller_lists.c.kind == kind, controller_lists.c.server == server)).scalar()  # fmt: skip
    return list(entries) if isinstance(entries, list) else None


def pick_list(conn: Connection, kind: str, server: str) -> tuple[str, list[dict[str, object]]] | None:
    """The list a requesting ``server`` gets: its own, else the default one; None when neither is stored."""
    for name in (server, DEFAULT_SERVER):
        entries = stored_list(conn, kind, name)
        if entries is not None:
            return name, entries
    return None


def all_lists(conn: Connection) -> list[dict[str, object]]:
    """The newest-updated lists, at most ``MAX_LISTS_ANSWER`` of them and ``MAX_ANSWER_BYTES`` of entries, in
    kind and server order (one list by its kind and server is read whole: GET .../lists/KIND/SERVER)."""
    rows = conn.execute(sa.select(controller_lists).order_by(controller_lists.c.updated_at.desc())
                        .limit(MAX_LISTS_ANSWER))  # fmt: skip
    found: list[dict[str, object]] = []
    size = 0
    for r in rows:
        size += json_size(r.entries)
        if found and size > MAX_ANSWER_BYTES:
            break
        found.append({"kind": r.kind, "server": r.server, "entries": r.entries, "updated_at": r.updated_at})
    return sorted(found, key=lambda e: (str(e["kind"]), str(e["server"])))


# ---- keys ----


def key_name(text: str) -> str:
    """A stream name from a URL path (GET/DELETE /api/controller/keys/NAME): what ``STREAM_UID`` allows, else
    RefusedError 404 before the database or the log sees it (a NUL is a PostgreSQL error, a newline a forged
    log line)."""
    if not STREAM_UID.fullmatch(text):
        raise RefusedError(404, "no such stream name (names are letters, digits, '_', '.' and '-')")
    return text


def check_metadata(body: object) -> dict[str, tuple[int, str]]:
    """``{"<name>": {"last_seq": N, "private_key": "..."}}`` (update-metadata's push), checked."""
    if not isinstance(body, dict) or not body or len(body) > MAX_STREAMS_PER_POST:
        raise RefusedError(400, 'expected {"<name>": {"last_seq": N, "private_key": "..."}}, '
                           f"1..{MAX_STREAMS_PER_POST} streams")  # fmt: skip
    checked: dict[str, tuple[int, str]] = {}
    for name, entry in body.items():
        if not isinstance(name, str) or not STREAM_UID.fullmatch(name):
            raise RefusedError(400, f"{str(name)[:80]!r} is not a stream name")
        if not isinstance(entry, dict):
            raise RefusedError(400, f"{name}: not an object")
        seq, key = entry.get("last_seq"), entry.get("private_key")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < MAX_SEQ:
            raise RefusedError(400, f"{name}.last_seq: not a piece number")
        if not isinstance(key, str) or not key.strip() or len(key.encode()) > MAX_KEY_BYTES:
            raise RefusedError(400, f"{name}.private_key: missing, empty or over {MAX_KEY_BYTES} bytes")
        checked[name] = (seq, key)
    return checked


def store_metadata(conn: Connection, box: KeyBox, checked: Mapping[str, tuple[int, str]], now: float) -> None:
    """Seal and store every stream's key; all or nothing (RefusedError 409 when a stored stream's key differs)."""
    stored = open_keys(conn, box, list(checked))
    new = len(checked.keys() - stored.keys())
    if new:
        total = conn.execute(sa.select(sa.func.count()).select_from(controller_keys)).scalar_one()
        if total + new > MAX_KEYS:
            raise RefusedError(409, f"the registry holds {total} stream keys and this push adds {new}, past "
                               f"its limit of {MAX_KEYS}: delete unused ones (DELETE /api/controller/keys/NAME)")
    for name, (_, key) in checked.items():
        if name in stored and stored[name][1].strip() != key.strip():
            raise RefusedError(409, f"{name}: a different key is stored for this stream (restoring it would start "
                               "another broadcast); DELETE /api/controller/keys/NAME first to replace "
                               "it")  # fmt: skip
    for name, (pushed, key) in checked.items():
        seq = max(pushed, stored[name][0]) if name in stored else pushed  # piece numbers never go back
        values = {"last_seq": seq, "key_id": box.key_id, "sealed": box.seal(name, key.encode()), "updated_at": now}
        if name in stored:
            conn.execute(sa.update(controller_keys).where(controller_keys.c.name == name).values(values))
        else:
            conn.execute(sa.insert(controller_keys).values(name=name, **values))


def open_keys(conn: Connection, box: KeyBox, names: Sequence[str]) -> dict[str, tuple[int, str]]:
    """(last_seq, .sauth) of each stored stream among ``names``."""
    found: dict[str, tuple[int, str]] = {}
    for chunk in (names[i : i + 500] for i in range(0, len(names), 500)):
        rows = conn.execute(sa.select(controller_keys).where(controller_keys.c.name.in_(chunk)))
        for row in rows:
            found[row.name] = (int(row.last_seq), box.open(row.name, bytes(row.sealed)).decode("ascii", "replace"))
    return found


def list_keys(conn: Connection) -> list[dict[str, object]]:
    """What is stored, without any key material."""
    rows = conn.execute(sa.select(controller_keys.c.name, controller_keys.c.last_seq, controller_keys.c.key_id,
                                  controller_keys.c.updated_at).order_by(controller_keys.c.name))  # fmt: skip
    return [{"name": r.name, "last_seq": int(r.last_seq), "key_id": r.key_id, "updated_at": r.updated_at}
            for r in rows]  # fmt: skip


def delete_key(conn: Connection, name: str) -> bool:
    return bool(conn.execute(sa.delete(controller_keys).where(controller_keys.c.name == name)).rowcount)


def foreign_key_ids(conn: Connection, box: KeyBox) -> dict[str, int]:
    """Key ids other than ``box``'s that sealed stored keys, with how many each (a wrong --key-file at start)."""
    rows = conn.execute(sa.select(controller_keys.c.key_id, sa.func.count()).where(
        controller_keys.c.key_id != box.key_id).group_by(controller_keys.c.key_id))  # fmt: skip
    return {str(r[0]): int(r[1]) for r in rows}


def with_metadata(conn: Connection, box: KeyBox, entries: list[dict[str, object]]) -> list[dict[str, object]]:
    """Source entries, each with its stored ``metadata`` (what ``start-sources --get-remote-metadata`` restores)."""
    names = [str(e["stream_uid"]) for e in entries if isinstance(e.get("stream_uid"), str)]
    stored = open_keys(conn, box, names)
    return [{**e, "metadata": {"last_seq": stored[uid][0], "private_key": stored[uid][1]}}
            if isinstance(uid := e.get("stream_uid"), str) and uid in stored else e
            for e in entries]  # fmt: skip


# ---- monitoring ----


@dataclass(frozen=True)
class MonitorLimits:
    retention: float
    max_rows: int
    max_bytes: int


def check_monitor(body: object) -> tuple[int, str, str | None]:
    """(port, type, content id) of a pushed node monitor (monitor_nodes.py's body plus ``port`` and ``type``)."""
    if not isinstance(body, dict):
        raise RefusedError(400, "expected a JSON object (a node's monitor with port and type)")
    port = body.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise RefusedError(400, "port: missing or not a port")
    kind = body.get("type")
    if kind not in ("source", "support"):
        raise RefusedError(400, "type: not source or support")
    infohash = body.get("infohash")
    content_id = infohash.lower() if isinstance(infohash, str) and is_content_id(infohash) else None
    return port, str(kind), content_id


def add_monitor(conn: Connection, server: str, body: dict[str, object], size: int, now: float) -> None:
    port, kind, content_id = check_monitor(body)
    conn.execute(sa.insert(controller_monitor).values(server=server, port=port, type=kind, content_id=content_id,
                                                      at=now, size=size, body=body))  # fmt: skip


def monitor_totals(conn: Connection) -> tuple[int, int]:
    rows, size = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(controller_monitor.c.size),
                                                                         0))).one()  # fmt: skip
    return int(rows), int(size)


def prune_monitor(conn: Connection, limits: MonitorLimits, now: float) -> tuple[int, int]:
    """Age out, then cut to 90 % of the row and byte caps (oldest first); the (rows, bytes) left."""
    conn.execute(sa.delete(controller_monitor).where(controller_monitor.c.at < now - limits.retention))
    rows, size = monitor_totals(conn)
    if rows > limits.max_rows:
        keep = int(limits.max_rows * PRUNE_TO)
        cutoff = conn.execute(sa.select(controller_monitor.c.id).order_by(controller_monitor.c.id.desc())
                              .offset(keep).limit(1)).scalar()  # fmt: skip
        if cutoff is not None:
            conn.execute(sa.delete(controller_monitor).where(controller_monitor.c.id <= cutoff))
        rows, size = monitor_totals(conn)
    if size > limits.max_bytes:
        # The newest rows whose sizes add up to 90 % of the cap stay; the first row past that, and older, go.
        newest_first = sa.select(controller_monitor.c.id, sa.func.sum(controller_monitor.c.size).over(
            order_by=controller_monitor.c.id.desc()).label("acc")).subquery()  # fmt: skip
        cutoff = conn.execute(sa.select(sa.func.max(newest_first.c.id)).where(
            newest_first.c.acc > int(limits.max_bytes * PRUNE_TO))).scalar()  # fmt: skip
        if cutoff is not None:
            conn.execute(sa.delete(controller_monitor).where(controller_monitor.c.id <= cutoff))
        rows, size = monitor_totals(conn)
    return rows, size


def monitor_latest(conn: Connection) -> list[dict[str, object]]:
    newest = sa.select(sa.func.max(controller_monitor.c.id)).group_by(controller_monitor.c.server,
                                                                       controller_monitor.c.port)  # fmt: skip
    rows = conn.execute(sa.select(controller_monitor).where(controller_monitor.c.id.in_(newest))
                        .order_by(controller_monitor.c.id.desc()).limit(MAX_MONITORS_ANSWER))  # fmt: skip
    found: list[dict[str, object]] = []
    size = 0
    for r in rows:
        size += int(r.size)
        if found and size > MAX_ANSWER_BYTES:
            break
        found.append({"server": r.server, "port": r.port, "type": r.type, "content_id": r.content_id, "at": r.at,
                      "monitor": r.body})  # fmt: skip
    return sorted(found, key=lambda e: (str(e["server"]), int(e["port"])))  # type: ignore[call-overload]


def monitor_series(conn: Connection, server: str, port: int, since: float) -> dict[str, list[object]]:
    rows = list(conn.execute(sa.select(controller_monitor.c.at, controller_monitor.c.body).where(
        controller_monitor.c.server == server, controller_monitor.c.port == port, controller_monitor.c.at >= since)
        .order_by(controller_monitor.c.id.desc()).limit(MAX_SERIES_POINTS)))[::-1]  # fmt: skip
    series: dict[str, list[object]] = {"t": [round(r.at, 3) for r in rows]}
    for name in SERIES_FIGURES:
        series[name] = [_number(r.body.get(name)) if isinstance(r.body, dict) else None for r in rows]
    return series


def _number(value: object) -> float | int | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def json_size(body: object) -> int:
    return len(json.dumps(body, separators=(",", ":")).encode())
