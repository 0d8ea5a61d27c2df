"""usage: raw usage records (idempotent on request id) and hourly rollups

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str) -> sa.Column[object]:
    # tables.UTCDateTime stores through this type; the migration stays independent of the ORM.
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def _count(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.BigInteger(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.String(length=128), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("model_name", sa.String(length=256), nullable=False),
        sa.Column("upstream_slug", sa.String(length=256), nullable=False),
        sa.Column("family", sa.SmallInteger(), nullable=False),
        sa.Column("endpoint", sa.String(length=128), nullable=False),
        sa.Column("http_status", sa.SmallInteger(), nullable=False),
        sa.Column("outcome", sa.SmallInteger(), nullable=False),
        sa.Column("streamed", sa.Boolean(), nullable=False),
        _count("input_tokens"),
        _count("output_tokens"),
        _count("cached_input_tokens"),
        _count("reasoning_tokens"),
        _count("cost_picos"),
        _count("latency_us"),
        _count("upstream_latency_us"),
        _count("time_to_first_byte_us"),
        _time("time"),
        sa.Column("flags", sa.BigInteger(), nullable=False),
        _time("receive_time"),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_usage_records")),
    )
    op.create_index("ix_usage_records_org_id_time", "usage_records", ["org_id", "time"])

    op.create_table(
        "usage_rollups",
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("hour", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("model_name", sa.String(length=256), nullable=False),
        sa.Column("outcome", sa.SmallInteger(), autoincrement=False, nullable=False),
        _count("requests"),
        _count("input_tokens"),
        _count("output_tokens"),
        _count("cached_input_tokens"),
        _count("reasoning_tokens"),
        _count("cost_picos"),
        sa.PrimaryKeyConstraint(
            "org_id", "hour", "key_id", "model_name", "outcome", name=op.f("pk_usage_rollups")
        ),
    )


def downgrade() -> None:
    op.drop_table("usage_rollups")
    op.drop_index("ix_usage_records_org_id_time", table_name="usage_records")
    op.drop_table("usage_records")
