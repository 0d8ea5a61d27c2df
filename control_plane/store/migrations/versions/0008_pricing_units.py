"""pricing units: per-second-of-audio and per-character prices, the batch price percent, and
the usage records' units and batch id (issue 15)

Revision ID: 0008_pricing_units
Revises: 0007
Create Date: 2026-12-06

models gains per_million_audio_seconds_micros and per_million_characters_micros (NOT NULL,
server default 0: existing models charge nothing for these units, as before) and
batch_price_percent (NULL: the default, 50). usage_records gains audio_milliseconds,
input_characters and batch_id, nullable without a default (no rewrite; NULL on older rows reads
as 0 / none). usage_rollups gains the sums audio_milliseconds and input_characters, NOT NULL
with server default 0 (a rollup's sums are added to, and NULL + n would stay NULL).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_pricing_units"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MODEL_PRICES = ("per_million_audio_seconds_micros", "per_million_characters_micros")
UNIT_SUMS = ("audio_milliseconds", "input_characters")


def upgrade() -> None:
    for name in MODEL_PRICES:
        op.add_column("models", sa.Column(name, sa.BigInteger(), nullable=False, server_default=sa.text("0")))
    op.add_column("models", sa.Column("batch_price_percent", sa.SmallInteger(), nullable=True))
    for name in UNIT_SUMS:
        op.add_column("usage_records", sa.Column(name, sa.BigInteger(), nullable=True))
    op.add_column("usage_records", sa.Column("batch_id", sa.String(length=128), nullable=True))
    for name in UNIT_SUMS:
        op.add_column("usage_rollups", sa.Column(name, sa.BigInteger(), nullable=False, server_default=sa.text("0")))


def downgrade() -> None:
    with op.batch_alter_table("usage_rollups") as batch:
        for name in reversed(UNIT_SUMS):
            batch.drop_column(name)
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("batch_id")
        for name in reversed(UNIT_SUMS):
            batch.drop_column(name)
    with op.batch_alter_table("models") as batch:
        batch.drop_column("batch_price_percent")
        for name in reversed(MODEL_PRICES):
            batch.drop_column(name)
