"""streams, nodes, which node carries which stream, and heartbeat samples

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "streams",
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
    )
    op.create_table(
        "nodes",
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
        sa.Column("sampled_at", sa.Float, nullable=True),
    )
    op.create_index("ix_nodes_state", "nodes", ["state"])
    op.create_table(
        "node_streams",
        sa.Column("node_id", sa.String(36), primary_key=True),
        sa.Column("content_id", sa.String(40), primary_key=True),
        sa.Column("viewers", sa.Integer, nullable=True),
    )
    op.create_index("ix_node_streams_content_id", "node_streams", ["content_id"])
    op.create_table(
        "samples",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("node_id", sa.String(36), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content_id", sa.String(40), nullable=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("figures", sa.JSON, nullable=False),
    )
    op.create_index("ix_samples_at", "samples", ["at"])
    op.create_index("ix_samples_node_at", "samples", ["node_id", "at"])


def downgrade() -> None:
    op.drop_table("samples")
    op.drop_table("node_streams")
    op.drop_table("nodes")
    op.drop_table("streams")
