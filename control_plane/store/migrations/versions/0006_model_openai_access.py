"""models: OpenAI-format access and the registry fields (issue 13)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

A model gains openai_compatible (serve an anthropic- or gemini-family model
through POST /v1/chat/completions, translated), context_window,
max_output_tokens and capabilities (tools, vision, json_output, streaming).
Server defaults give the existing rows what a model created without them
gets: not OpenAI-compatible, 0 (unknown / gateway default), no capabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("openai_compatible", "context_window", "max_output_tokens", "capabilities")


def upgrade() -> None:
    op.add_column(
        "models",
        sa.Column("openai_compatible", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column(
        "models", sa.Column("context_window", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
    )
    op.add_column(
        "models", sa.Column("max_output_tokens", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
    )
    op.add_column(
        "models", sa.Column("capabilities", sa.String(128), server_default=sa.text("''"), nullable=False)
    )


def downgrade() -> None:
    # SQLite drops columns by copying the table (batch mode); PostgreSQL alters it in place.
    with op.batch_alter_table("models") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
