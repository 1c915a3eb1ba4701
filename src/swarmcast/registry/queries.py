"""The registry's reads and writes, each a plain function of an open SQLAlchemy ``Connection`` (run them with
``await state.db.run(lambda c: queries.fn(c, ...))``: one transaction per call, committed when it returns).

How this works. Nothing here validates: api.py (through validate.py) turns requests into the frozen records
below first, so every value that reaches a query is already checked and bounded. Time is an argument (``now``,
unix seconds), as everywhere in swarmcast, so the tests drive it. A node's streams live twice: ``nodes.content_ids``
(the list as the node sent it, for display) and ``node_streams`` (one row per pair, the index that a stream's
node counts, viewers and peers are read from); both are written in the same transaction.

Every list is capped (``MAX_*`` below) so no query reads or returns an unbounded number of rows; the caps on
what may be stored (live nodes, streams) are checked on write and refused with ``RegistryFull``.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarmcast.registry.models import node_streams, nodes, samples, streams

ROLES = ("source", "support", "start", "engine", "broadcaster")
PEER_ROLES = ("start", "support", "source")  # peer candidates, most useful to a newcomer first
ON_AIR_ROLES = ("source", "broadcaster")  # a stream is live while one of these carries it
LIVE, GONE, LEFT = "live", "gone", "left"
STATES = (LIVE, GONE, LEFT)

MAX_LIVE_NODES = 10_000  # live nodes at once; a registration past it is refused (RegistryFull)
MAX_NODE_ROWS = 20_000  # rows of nodes in any state; the oldest gone/left ones make room first
MAX_STREAMS = 10_000  # streams stored; a new one past it is refused
MAX_LISTED = 1_000  # rows in one answer of GET /api/streams or /api/nodes
MAX_STREAM_NODES = 500  # nodes listed on one stream's answer
MAX_PEERS = 64  # peer candidates in one answer of /api/streams/<id>/peers


class RegistryFull(Exception):  # noqa: N818 - a refusal, not a bug
    """A cap on stored rows was reached; the message is one line for the client."""


class StreamConflict(Exception):  # noqa: N818
    """The stream's name belongs to another broadcast that is on the air."""


class UnknownNode(Exception):  # noqa: N818
    """A stream named a node_id the registry does not know."""


@dataclass(frozen=True)
class NodeInfo:
    """A validated ``POST /api/nodes`` body."""

    role: str
    address: str | None  # "host:port" it accepts peers on, None for an engine that does not listen
    http: str | None  # "http://host:port" of its web interface
    capacity_bps: int | None
    version: str
    content_ids: tuple[str, ...]  # 40 lowercase hex each, no repeats
    name: str | None


# A stream's own figures in a heartbeat (validate.py checks them); a node carrying one stream may send them at
# the top level of its figures instead of under "streams" (a source or support node serves one broadcast).
STREAM_FIGURES = frozenset({"peers", "upload_bps", "download_bps", "viewers", "delay_s", "startup_s", "stalls"})


@dataclass(frozen=True)
class Heartbeat:
    """A validated heartbeat: the node's streams now (None: unchanged) and its figures."""

    content_ids: tuple[str, ...] | None
    figures: dict[str, Any]  # node-wide figures (numbers), without "streams"
    stream_figures: dict[str, dict[str, Any]] | None  # per content id; None when the node sent no "streams"


@dataclass(frozen=True)
class StreamInfo:
    """A validated ``POST /api/streams`` body; ``transport`` parses and its SHA-1 is ``content_id``."""

    content_id: str
    name: str
    title: str
    categories: tuple[str, ...]
    quality: str | None
    bitrate: int | None
    renditions: list[Any] | None
    transport: bytes
    node_id: str | None


# ---------------------------------------------------------------------------------------------------- nodes


def register_node(conn: Connection, info: NodeInfo, now: float) -> str:
    """A new node row (state live); returns its node_id. RegistryFull at the caps."""
    live = conn.execute(sa.select(sa.func.count()).select_from(nodes).where(nodes.c.state == LIVE)).scalar_one()
    if live >= MAX_LIVE_NODES:
        raise RegistryFull(f"the registry has {live} live nodes, its limit")
    total = conn.execute(sa.select(sa.func.count()).select_from(nodes)).scalar_one()
    if total >= MAX_NODE_ROWS:
        _delete_nodes(conn, _oldest_not_live(conn, total - MAX_NODE_ROWS + 1))
    node_id = str(uuid.uuid4())
    conn.execute(nodes.insert().values(
        node_id=node_id, role=info.role, name=info.name, address=info.address, http=info.http,
        capacity_bps=info.capacity_bps, version=info.version, content_ids=list(info.content_ids), figures={},
        state=LIVE, registered_at=now, last_seen=now, sampled_at=None,
    ))  # fmt: skip
    _set_node_streams(conn, node_id, info.content_ids, {})
    return node_id


def heartbeat(conn: Connection, node_id: str, beat: Heartbeat, now: float, sample_interval: float) -> bool:
    """Record a heartbeat: the node is live again (also after "gone"), its streams and figures replaced. Its
    figures are kept as samples at most once per ``sample_interval`` seconds, so a node that beats faster
    cannot grow the samples table faster. False when the node is unknown or has left (it registers again)."""
    row = conn.execute(
        sa.select(nodes.c.state, nodes.c.role, nodes.c.sampled_at, nodes.c.content_ids)
        .where(nodes.c.node_id == node_id)
    ).one_or_none()  # fmt: skip
    if row is None or row.state == LEFT:
        return False
    ids = beat.content_ids if beat.content_ids is not None else tuple(row.content_ids)
    if beat.stream_figures is not None:
        per_stream = {cid: f for cid, f in beat.stream_figures.items() if cid in ids}  # others are dropped
    elif len(ids) == 1:
        per_stream = {ids[0]: {key: beat.figures[key] for key in STREAM_FIGURES & beat.figures.keys()}}
    else:
        per_stream = {}
    keep = row.sampled_at is None or now - row.sampled_at >= sample_interval
    figures = dict(beat.figures)
    if per_stream:
        figures["streams"] = per_stream
    # "not left" again in the UPDATE: on PostgreSQL (READ COMMITTED) a DELETE /api/nodes/<id> may commit
    # "left" between the SELECT above and here, and the UPDATE re-reads the row it waited for. Without it, an
    # in-flight heartbeat would bring a cleanly stopped node back to live.
    updated = conn.execute(nodes.update().where(nodes.c.node_id == node_id, nodes.c.state != LEFT).values(
        state=LIVE, last_seen=now, content_ids=list(ids), figures=figures,
        sampled_at=now if keep else row.sampled_at,
    ))  # fmt: skip
    if updated.rowcount == 0:
        return False
    _set_node_streams(conn, node_id, ids, per_stream)
    if keep:
        rows: list[dict[str, Any]] = [
            {"node_id": node_id, "role": row.role, "content_id": None, "at": now, "figures": beat.figures}
        ]
        rows += [
            {"node_id": node_id, "role": row.role, "content_id": cid, "at": now, "figures": per_stream[cid]}
            for cid in ids if cid in per_stream
        ]  # fmt: skip
        conn.execute(samples.insert(), rows)
    return True


def deregister(conn: Connection, node_id: str, now: float) -> bool:
    """A clean stop: state "left" at once. False when the node is unknown."""
    done = conn.execute(nodes.update().where(nodes.c.node_id == node_id).values(state=LEFT, last_seen=now))
    return done.rowcount > 0


def mark_gone(conn: Connection, now: float, timeout: float) -> int:
    """Live nodes silent for ``timeout`` seconds become "gone"; returns how many."""
    done = conn.execute(
        nodes.update().where(nodes.c.state == LIVE, nodes.c.last_seen < now - timeout).values(state=GONE)
    )
    return int(done.rowcount)


def list_nodes(conn: Connection, *, role: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
    # Live nodes first, then the most recently seen: past the cap, what is dropped is the long gone.
    live_first = sa.case((nodes.c.state == LIVE, 0), else_=1)
    query = sa.select(nodes).order_by(live_first, nodes.c.last_seen.desc(), nodes.c.node_id).limit(MAX_LISTED)
    if role is not None:
        query = query.where(nodes.c.role == role)
    if state is not None:
        query = query.where(nodes.c.state == state)
    return [node_dict(row) for row in conn.execute(query)]


def get_node(conn: Connection, node_id: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(nodes).where(nodes.c.node_id == node_id)).one_or_none()
    return None if row is None else node_dict(row)


def node_dict(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "node_id": row.node_id, "role": row.role, "name": row.name, "address": row.address, "http": row.http,
        "capacity_bps": row.capacity_bps, "version": row.version, "state": row.state,
        "registered_at": row.registered_at, "last_seen": row.last_seen, "content_ids": list(row.content_ids),
        "figures": row.figures,
    }  # fmt: skip


def count_nodes(conn: Connection) -> dict[tuple[str, str], int]:
    """Rows of nodes by (role, state): the registry's /metrics."""
    query = sa.select(nodes.c.role, nodes.c.state, sa.func.count()).group_by(nodes.c.role, nodes.c.state)
    return {(role, state): int(n) for role, state, n in conn.execute(query)}


def _set_node_streams(
    conn: Connection, node_id: str, content_ids: tuple[str, ...], stream_figures: dict[str, dict[str, Any]]
) -> None:
    conn.execute(node_streams.delete().where(node_streams.c.node_id == node_id))
    if content_ids:
        conn.execute(node_streams.insert(), [
            {"node_id": node_id, "content_id": cid, "viewers": _viewers(stream_figures.get(cid))}
            for cid in content_ids
        ])  # fmt: skip


def _viewers(figures: dict[str, Any] | None) -> int | None:
    value = None if figures is None else figures.get("viewers")
    return value if isinstance(value, int) else None


def _oldest_not_live(conn: Connection, count: int) -> list[str]:
    query = (sa.select(nodes.c.node_id).where(nodes.c.state != LIVE).order_by(nodes.c.last_seen).limit(count))
    return list(conn.execute(query).scalars())


def _delete_nodes(conn: Connection, node_ids: list[str]) -> None:
    for start in range(0, len(node_ids), 500):  # bound the size of one IN (...)
        chunk = node_ids[start:start + 500]
        conn.execute(node_streams.delete().where(node_streams.c.node_id.in_(chunk)))
        conn.execute(nodes.delete().where(nodes.c.node_id.in_(chunk)))


def prune(conn: Connection, now: float, retention: float, max_samples: int) -> tuple[int, int]:
    """Samples older than ``retention`` s or past the newest ``max_samples`` rows, and nodes gone or left for
    ``retention`` s, are deleted. Returns (samples, nodes) deleted."""
    deleted = conn.execute(samples.delete().where(samples.c.at < now - retention)).rowcount
    # Ids grow with time, so the newest max_samples rows are those above the max_samples-th largest id.
    cut = conn.execute(
        sa.select(samples.c.id).order_by(samples.c.id.desc()).offset(max_samples).limit(1)
    ).scalar_one_or_none()
    if cut is not None:
        deleted += conn.execute(samples.delete().where(samples.c.id <= cut)).rowcount
    old = list(conn.execute(
        sa.select(nodes.c.node_id).where(nodes.c.state != LIVE, nodes.c.last_seen < now - retention)
        .limit(MAX_NODE_ROWS)
    ).scalars())  # fmt: skip
    _delete_nodes(conn, old)
    return int(deleted), len(old)


# -------------------------------------------------------------------------------------------------- streams


def upsert_stream(conn: Connection, info: StreamInfo, now: float) -> bool:
    """Register a broadcast or update it (same content id); True when it is new. A name held by another
    broadcast moves to this one only when that one is off the air (StreamConflict otherwise): a broadcaster
    that restarts a channel with a new key keeps its name, nobody takes a name that is playing."""
    holder = conn.execute(sa.select(streams.c.content_id).where(streams.c.name == info.name)).scalar_one_or_none()
    if holder is not None and holder != info.content_id:
        if _on_air(conn, [holder]).get(holder, False):
            raise StreamConflict(f"name {info.name!r} belongs to the live stream {holder}")
        conn.execute(streams.delete().where(streams.c.content_id == holder))
    if info.node_id is not None:
        known = conn.execute(sa.select(nodes.c.node_id).where(nodes.c.node_id == info.node_id)).one_or_none()
        if known is None:
            raise UnknownNode(f"node_id {info.node_id} is not registered")
    values = {
        "name": info.name, "title": info.title, "categories": list(info.categories), "quality": info.quality,
        "bitrate": info.bitrate, "renditions": info.renditions, "transport": info.transport,
        "node_id": info.node_id, "updated_at": now,
    }  # fmt: skip
    exists = conn.execute(
        sa.select(streams.c.content_id).where(streams.c.content_id == info.content_id)
    ).one_or_none()
    if exists is None:
        count = conn.execute(sa.select(sa.func.count()).select_from(streams)).scalar_one()
        if count >= MAX_STREAMS:
            raise RegistryFull(f"the registry holds {count} streams, its limit")
        conn.execute(streams.insert().values(content_id=info.content_id, registered_at=now, **values))
    else:
        conn.execute(streams.update().where(streams.c.content_id == info.content_id).values(**values))
    if info.node_id is not None:
        # The registering source carries the stream from now on, before its first heartbeat says so.
        pair = sa.and_(node_streams.c.node_id == info.node_id, node_streams.c.content_id == info.content_id)
        if conn.execute(sa.select(node_streams.c.node_id).where(pair)).one_or_none() is None:
            conn.execute(node_streams.insert().values(node_id=info.node_id, content_id=info.content_id))
            _append_content_id(conn, info.node_id, info.content_id)
    return exists is None


def _append_content_id(conn: Connection, node_id: str, content_id: str) -> None:
    current = conn.execute(sa.select(nodes.c.content_ids).where(nodes.c.node_id == node_id)).scalar_one()
    if content_id not in current:
        conn.execute(nodes.update().where(nodes.c.node_id == node_id).values(content_ids=[*current, content_id]))


def list_streams(conn: Connection) -> list[dict[str, Any]]:
    rows = list(conn.execute(sa.select(streams).order_by(streams.c.name).limit(MAX_LISTED)))
    return _with_live_figures(conn, rows)


def find_stream(conn: Connection, key: str) -> str | None:
    """The content id of the stream named by its content id (40 hex) or its registry name; None if unknown."""
    # A registry name is never 40 hex digits (validate.py), so the key matches one column at most: no content id
    # check of its own here (validate.is_content_id is the registry's one).
    where = sa.or_(streams.c.content_id == key.lower(), streams.c.name == key)
    found: str | None = conn.execute(sa.select(streams.c.content_id).where(where)).scalar_one_or_none()
    return found


def get_stream(conn: Connection, key: str) -> dict[str, Any] | None:
    """The stream as in the list, but ``nodes`` lists every node that carries it (live ones first, at most
    ``MAX_STREAM_NODES``) and the counts move to ``node_counts``."""
    content_id = find_stream(conn, key)
    if content_id is None:
        return None
    row = conn.execute(sa.select(streams).where(streams.c.content_id == content_id)).one()
    stream = _with_live_figures(conn, [row])[0]
    live_first = sa.case((nodes.c.state == LIVE, 0), else_=1)
    query = (
        sa.select(nodes).join(node_streams, node_streams.c.node_id == nodes.c.node_id)
        .where(node_streams.c.content_id == content_id)
        .order_by(live_first, nodes.c.role, nodes.c.registered_at).limit(MAX_STREAM_NODES)
    )  # fmt: skip
    # The list's "nodes" (counts of live nodes by role) stays as "node_counts"; "nodes" lists them here.
    stream["node_counts"] = stream["nodes"]
    stream["nodes"] = [node_dict(n) for n in conn.execute(query)]
    return stream


def get_transport(conn: Connection, key: str) -> bytes | None:
    content_id = find_stream(conn, key)
    if content_id is None:
        return None
    data: bytes = conn.execute(sa.select(streams.c.transport).where(streams.c.content_id == content_id)).scalar_one()
    return bytes(data)


def stream_peers(conn: Connection, key: str, limit: int = MAX_PEERS) -> list[dict[str, str]] | None:
    """Live start, support and source nodes of the stream that accept peers: start nodes first, each role in a
    random order so that engines spread over them. None when the stream is unknown."""
    content_id = find_stream(conn, key)
    if content_id is None:
        return None
    query = (
        sa.select(nodes.c.role, nodes.c.address).join(node_streams, node_streams.c.node_id == nodes.c.node_id)
        .where(node_streams.c.content_id == content_id, nodes.c.state == LIVE, nodes.c.role.in_(PEER_ROLES),
               nodes.c.address.is_not(None))
        .limit(MAX_STREAM_NODES)
    )  # fmt: skip
    by_role: dict[str, list[str]] = {role: [] for role in PEER_ROLES}
    for role, address in conn.execute(query):
        by_role[role].append(address)
    peers: list[dict[str, str]] = []
    for role in PEER_ROLES:
        random.shuffle(by_role[role])
        peers += [{"role": role, "address": address} for address in by_role[role]]
    return peers[:limit]


def count_streams(conn: Connection) -> tuple[int, int]:
    """(streams stored, streams live): the registry's /metrics."""
    total = conn.execute(sa.select(sa.func.count()).select_from(streams)).scalar_one()
    ids = list(conn.execute(sa.select(streams.c.content_id).limit(MAX_STREAMS)).scalars())
    return int(total), sum(_on_air(conn, ids).values())


def _with_live_figures(conn: Connection, rows: list[sa.Row[Any]]) -> list[dict[str, Any]]:
    ids = [row.content_id for row in rows]
    counts: dict[str, dict[str, int]] = {cid: dict.fromkeys(ROLES, 0) for cid in ids}
    viewers: dict[str, int] = dict.fromkeys(ids, 0)
    for chunk in _chunks(ids):
        query = (
            sa.select(node_streams.c.content_id, nodes.c.role, sa.func.count(),
                      sa.func.sum(sa.func.coalesce(node_streams.c.viewers, 1)))
            .join(nodes, nodes.c.node_id == node_streams.c.node_id)
            .where(nodes.c.state == LIVE, node_streams.c.content_id.in_(chunk))
            .group_by(node_streams.c.content_id, nodes.c.role)
        )  # fmt: skip
        for cid, role, count, watching in conn.execute(query):
            counts[cid][role] = int(count)
            if role == "engine":
                # An engine counts its player sessions; one that does not say counts as one viewer.
                viewers[cid] = int(watching or 0)
    return [
        {
            "content_id": row.content_id, "name": row.name, "title": row.title, "categories": list(row.categories),
            "quality": row.quality, "bitrate": row.bitrate, "renditions": row.renditions,
            "live": any(counts[row.content_id][role] for role in ON_AIR_ROLES), "viewers": viewers[row.content_id],
            "nodes": counts[row.content_id], "registered_at": row.registered_at, "updated_at": row.updated_at,
        }
        for row in rows
    ]


def _on_air(conn: Connection, content_ids: list[str]) -> dict[str, bool]:
    live: dict[str, bool] = dict.fromkeys(content_ids, False)
    for chunk in _chunks(content_ids):
        query = (
            sa.select(node_streams.c.content_id).distinct()
            .join(nodes, nodes.c.node_id == node_streams.c.node_id)
            .where(nodes.c.state == LIVE, nodes.c.role.in_(ON_AIR_ROLES), node_streams.c.content_id.in_(chunk))
        )  # fmt: skip
        for cid in conn.execute(query).scalars():
            live[cid] = True
    return live


def _chunks(items: list[str], size: int = 500) -> list[list[str]]:
    return [items[start:start + size] for start in range(0, len(items), size)]

