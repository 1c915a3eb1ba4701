"""the fleet's controller: stream lists, sealed broadcast keys, monitoring time series

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "controller_lists",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("server", sa.String(64), primary_key=True),
        sa.Column("entries", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "controller_keys",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "controller_monitor",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("server", sa.String(64), nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("content_id", sa.String(40), nullable=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
    )
    op.create_index("ix_controller_monitor_at", "controller_monitor", ["at"])
    op.create_index("ix_controller_monitor_node_at", "controller_monitor", ["server", "port", "at"])


def downgrade() -> None:
    op.drop_table("controller_monitor")
    op.drop_table("controller_keys")
    op.drop_table("controller_lists")
