"""The registry's tables (SQLAlchemy Core). The migrations in migrations/versions/ create exactly these; a change
here needs a new revision there (tests/unit/test_registry_db.py compares the two)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# One row per broadcast, keyed by its content id (the transport file's infohash, 40 hex). ``name`` is the
# registry name an engine can play by; a source re-registering its broadcast updates the row.
streams = sa.Table(
    "streams", metadata,
    sa.Column("content_id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("categories", sa.JSON, nullable=False),
    sa.Column("quality", sa.String(32), nullable=True),
    sa.Column("bitrate", sa.BigInteger, nullable=True),
    sa.Column("renditions", sa.JSON, nullable=True),
    sa.Column("transport", sa.LargeBinary, nullable=False),
    sa.Column("node_id", sa.String(36), nullable=True),
    sa.Column("registered_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)  # fmt: skip

# One row per node or engine. ``state`` is live, gone (missed heartbeats) or left (deregistered).
nodes = sa.Table(
    "nodes", metadata,
    sa.Column("node_id", sa.String(36), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("name", sa.String(64), nullable=True),
    sa.Column("address", sa.String(80), nullable=True),
    sa.Column("http", sa.String(200), nullable=True),
    sa.Column("capacity_bps", sa.BigInteger, nullable=True),
    sa.Column("version", sa.String(40), nullable=False),
    sa.Column("content_ids", sa.JSON, nullable=False),
    sa.Column("figures", sa.JSON, nullable=False),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("registered_at", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
    sa.Column("sampled_at", sa.Float, nullable=True),  # when its last heartbeat was kept as samples
    sa.Index("ix_nodes_state", "state"),
)  # fmt: skip

# Which node carries which broadcast: the index behind a stream's node counts and peers (``nodes.content_ids``
# keeps the list as the node sent it, for display).
node_streams = sa.Table(
    "node_streams", metadata,
    sa.Column("node_id", sa.String(36), primary_key=True),
    sa.Column("content_id", sa.String(40), primary_key=True),
    sa.Column("viewers", sa.Integer, nullable=True),  # an engine's player sessions of it (its last heartbeat)
    sa.Index("ix_node_streams_content_id", "content_id"),
)  # fmt: skip

# Heartbeat figures over time, for the dashboard's charts: per kept heartbeat one row of the node's own figures
# and one per content id it reported, pruned by age and by a row cap (registry/sweeper.py).
samples = sa.Table(
    "samples", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("node_id", sa.String(36), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # kept here so a chart outlives the node's row
    sa.Column("content_id", sa.String(40), nullable=True),  # NULL: the node's own figures (cpu, memory, totals)
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("figures", sa.JSON, nullable=False),
    sa.Index("ix_samples_at", "at"),
    sa.Index("ix_samples_node_at", "node_id", "at"),
)  # fmt: skip

# ---- Controller for the fleet (part K: registry/controller.py; revision 0002) ----

# The stream lists the fleet asks for (streaming-utils' source_node / support_node configs): one list per kind
# ("source_node" | "support_node") and server (a requesting server's IP address, or "default" for any other).
# Entries are kept without their ``metadata``: keys live in controller_keys, sealed.
controller_lists = sa.Table(
    "controller_lists", metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("server", sa.String(64), primary_key=True),
    sa.Column("entries", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)  # fmt: skip

# What update-metadata pushes, per stream name: the piece number to continue from and the .sauth, sealed with the
# registry's key file (registry/keys.py: AES-256-GCM; ``key_id`` names the key file that sealed it).
controller_keys = sa.Table(
    "controller_keys", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("key_id", sa.String(16), nullable=False),
    sa.Column("sealed", sa.LargeBinary, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)  # fmt: skip

# The monitoring receiver's time series: one row per node monitor pushed, pruned by age and by a row and byte cap.
controller_monitor = sa.Table(
    "controller_monitor", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("server", sa.String(64), nullable=False),
    sa.Column("port", sa.Integer, nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("content_id", sa.String(40), nullable=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Index("ix_controller_monitor_at", "at"),
    sa.Index("ix_controller_monitor_node_at", "server", "port", "at"),
)  # fmt: skip
