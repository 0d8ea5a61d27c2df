"""usage: index the rollups by hour, for retention pruning

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

The retention task (control_plane/usage/retention.py) deletes rollups older
than a cutoff hour in bounded batches; without this index each batch would
scan the table (the primary key leads with org_id), holding SQLite's write
lock meanwhile. Rollups are updated in place (the hour never changes), so the
index costs one entry per new (org, hour, key, model, outcome).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_usage_rollups_hour", "usage_rollups", ["hour"])


def downgrade() -> None:
    op.drop_index("ix_usage_rollups_hour", table_name="usage_rollups")
