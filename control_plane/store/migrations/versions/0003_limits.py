"""limits: per-window lease counters and live leases

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "limit_counters",
        sa.Column("scope_id", sa.String(length=40), nullable=False),
        sa.Column("metric", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("window", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("settled", sa.BigInteger(), nullable=False),
        sa.Column("outstanding", sa.BigInteger(), nullable=False),
        sa.Column("exhausted", sa.Boolean(), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope_id", "metric", "window", name=op.f("pk_limit_counters")),
    )
    op.create_index("ix_limit_counters_window_end", "limit_counters", ["window_end"])
    op.create_table(
        "limit_leases",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("node_id", sa.String(length=128), nullable=False),
        sa.Column("scope_id", sa.String(length=40), nullable=False),
        sa.Column("metric", sa.SmallInteger(), nullable=False),
        sa.Column("window", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_limit_leases")),
    )
    op.create_index("ix_limit_leases_expire_time", "limit_leases", ["expire_time"])


def downgrade() -> None:
    op.drop_index("ix_limit_leases_expire_time", table_name="limit_leases")
    op.drop_table("limit_leases")
    op.drop_index("ix_limit_counters_window_end", table_name="limit_counters")
    op.drop_table("limit_counters")
