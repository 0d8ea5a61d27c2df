"""models: deployments and fallbacks; usage records name the deployment (issue 14)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

A model's upstreams move to model_deployments (position 0 first); each existing
model becomes one deployment named "default" made of its own upstream fields,
which the models table keeps as a mirror of the first deployment. models gains
fallbacks (a JSON list, NULL: none). Usage records gain deployment,
upstream_attempts and requested_model, nullable without a default (no rewrite).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USAGE_COLUMNS = ("deployment", "upstream_attempts", "requested_model")


def upgrade() -> None:
    op.create_table(
        "model_deployments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("model_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("base_url", sa.String(length=2048), nullable=False),
        sa.Column("credential_id", sa.String(length=40), nullable=False),
        sa.Column("upstream_slug", sa.String(length=256), nullable=False),
        sa.Column("timeout_ms", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("proxy_url", sa.String(length=2048), nullable=False),
        sa.Column("proxy_kek_id", sa.String(length=64), nullable=True),
        sa.Column("proxy_wrapped_dek", sa.LargeBinary(), nullable=True),
        sa.Column("proxy_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("ca_bundle", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_model_deployments_model_id_models", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["credential_id"],
            ["credentials.id"],
            name="fk_model_deployments_credential_id_credentials",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_model_deployments"),
        sa.UniqueConstraint("model_id", "name", name="uq_model_deployments_model_id_name"),
        sa.UniqueConstraint("model_id", "position", name="uq_model_deployments_model_id_position"),
    )
    op.create_index("ix_model_deployments_model_id", "model_deployments", ["model_id"])
    op.create_index("ix_model_deployments_credential_id", "model_deployments", ["credential_id"])
    # Every model so far is one deployment: "dpl_" + the model id's random part keeps ids unique.
    op.execute(
        "INSERT INTO model_deployments (id, model_id, position, name, base_url, credential_id,"
        " upstream_slug, timeout_ms, weight, priority, proxy_url, ca_bundle)"
        " SELECT 'dpl_' || substr(id, 5), id, 0, 'default', base_url, credential_id,"
        " upstream_slug, timeout_ms, 1, 0, '', '' FROM models"
    )
    op.add_column("models", sa.Column("fallbacks", sa.JSON(), nullable=True))
    op.add_column("usage_records", sa.Column("deployment", sa.String(length=64), nullable=True))
    op.add_column("usage_records", sa.Column("upstream_attempts", sa.SmallInteger(), nullable=True))
    op.add_column("usage_records", sa.Column("requested_model", sa.String(length=256), nullable=True))


def downgrade() -> None:
    # The models table holds the first deployment's fields already; the others are lost.
    with op.batch_alter_table("usage_records") as batch:
        for name in reversed(USAGE_COLUMNS):
            batch.drop_column(name)
    with op.batch_alter_table("models") as batch:
        batch.drop_column("fallbacks")
    op.drop_index("ix_model_deployments_credential_id", table_name="model_deployments")
    op.drop_index("ix_model_deployments_model_id", table_name="model_deployments")
    op.drop_table("model_deployments")
