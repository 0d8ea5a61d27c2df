"""provider_objects: files and batches created through the gateway, and who owns them (issue 15)

Revision ID: 0009_provider_objects
Revises: 0008_pricing_units
Create Date: 2026-12-06

One row per provider object (kind, provider id): the owning org (deleted with it), the key
that created it, the model and deployment holding it, its purpose (a batch: its endpoint),
the provider's created_at, its latest JSON snapshot and whether a batch's usage was recorded.
A new table: nothing existing is rewritten.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_provider_objects"
down_revision: str | None = "0008_pricing_units"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provider_objects",
        sa.Column("kind", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("object_id", sa.String(length=128), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("model_name", sa.String(length=256), nullable=False),
        sa.Column("deployment", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("snapshot", sa.LargeBinary(), nullable=False),
        sa.Column("usage_recorded", sa.Boolean(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name="fk_provider_objects_org_id_orgs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("kind", "object_id", name="pk_provider_objects"),
    )
    op.create_index(
        "ix_provider_objects_org_listing", "provider_objects", ["org_id", "kind", "created_at", "object_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_provider_objects_org_listing", table_name="provider_objects")
    op.drop_table("provider_objects")
