"""usage: the client's request id and the error code on usage records

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

Both columns are nullable without a default, so adding them rewrites no rows
(SQLite and PostgreSQL only change the catalog). The client request id index is
partial (rows that have one); the time index serves listings across orgs.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HAS_CLIENT_ID = sa.text("client_request_id IS NOT NULL")


def upgrade() -> None:
    op.add_column("usage_records", sa.Column("client_request_id", sa.String(length=128), nullable=True))
    op.add_column("usage_records", sa.Column("error_code", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_usage_records_client_request_id",
        "usage_records",
        ["client_request_id"],
        sqlite_where=_HAS_CLIENT_ID,
        postgresql_where=_HAS_CLIENT_ID,
    )
    op.create_index("ix_usage_records_time", "usage_records", ["time"])


def downgrade() -> None:
    op.drop_index("ix_usage_records_time", table_name="usage_records")
    op.drop_index("ix_usage_records_client_request_id", table_name="usage_records")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("error_code")
        batch.drop_column("client_request_id")
