"""initial schema: orgs, credentials, models, virtual keys, admin tokens, change log

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, *, nullable: bool = False) -> sa.Column[object]:
    # tables.UTCDateTime stores through this type; the migration stays independent of the ORM.
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "orgs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("requests_per_minute", sa.BigInteger(), nullable=True),
        sa.Column("tokens_per_minute", sa.BigInteger(), nullable=True),
        sa.Column("monthly_token_quota", sa.BigInteger(), nullable=True),
        sa.Column("monthly_spend_cap_micros", sa.BigInteger(), nullable=True),
        sa.Column("outage_policy", sa.SmallInteger(), nullable=False),
        sa.Column("default_models", sa.JSON(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        _time("create_time"),
        _time("update_time"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orgs")),
        sa.UniqueConstraint("name", name=op.f("uq_orgs_name")),
    )

    op.create_table(
        "credentials",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("family", sa.SmallInteger(), nullable=False),
        sa.Column("last4", sa.String(length=4), nullable=False),
        sa.Column("kek_id", sa.String(length=64), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        _time("create_time"),
        _time("rotate_time", nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_credentials_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credentials")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_credentials_org_id_name")),
    )
    op.create_index(op.f("ix_credentials_org_id"), "credentials", ["org_id"])
    op.create_index(op.f("ix_credentials_kek_id"), "credentials", ["kek_id"])

    op.create_table(
        "models",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("family", sa.SmallInteger(), nullable=False),
        sa.Column("upstream_slug", sa.String(length=256), nullable=False),
        sa.Column("base_url", sa.String(length=2048), nullable=False),
        sa.Column("timeout_ms", sa.Integer(), nullable=False),
        sa.Column("credential_id", sa.String(length=40), nullable=False),
        sa.Column("input_per_mtok_micros", sa.BigInteger(), nullable=False),
        sa.Column("output_per_mtok_micros", sa.BigInteger(), nullable=False),
        sa.Column("cached_input_per_mtok_micros", sa.BigInteger(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _time("create_time"),
        _time("update_time"),
        sa.ForeignKeyConstraint(
            ["credential_id"],
            ["credentials.id"],
            name=op.f("fk_models_credential_id_credentials"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_models_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_models_org_id_name")),
    )
    op.create_index(op.f("ix_models_org_id"), "models", ["org_id"])
    op.create_index(op.f("ix_models_credential_id"), "models", ["credential_id"])

    op.create_table(
        "virtual_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=True),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("last4", sa.String(length=4), nullable=False),
        sa.Column("previous_digest", sa.LargeBinary(length=32), nullable=True),
        sa.Column("previous_last4", sa.String(length=4), nullable=True),
        _time("previous_expire_time", nullable=True),
        sa.Column("all_models", sa.Boolean(), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        _time("expire_time", nullable=True),
        sa.Column("requests_per_minute", sa.BigInteger(), nullable=True),
        sa.Column("tokens_per_minute", sa.BigInteger(), nullable=True),
        sa.Column("budget_micros", sa.BigInteger(), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        _time("revoke_time", nullable=True),
        _time("create_time"),
        _time("update_time"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_virtual_keys_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_virtual_keys")),
        sa.UniqueConstraint("digest", name=op.f("uq_virtual_keys_digest")),
        sa.UniqueConstraint("previous_digest", name=op.f("uq_virtual_keys_previous_digest")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_virtual_keys_org_id_name")),
    )
    op.create_index(op.f("ix_virtual_keys_org_id"), "virtual_keys", ["org_id"])

    op.create_table(
        "admin_tokens",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("last4", sa.String(length=4), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        _time("create_time"),
        _time("revoke_time", nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["orgs.id"], name=op.f("fk_admin_tokens_org_id_orgs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_tokens")),
        sa.UniqueConstraint("digest", name=op.f("uq_admin_tokens_digest")),
    )
    op.create_index(op.f("ix_admin_tokens_org_id"), "admin_tokens", ["org_id"])

    counter = op.create_table(
        "revision_counter",
        # A plain column: the single row is seeded below, never auto-numbered.
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_revision_counter")),
    )
    op.bulk_insert(counter, [{"id": 1, "value": 0}])

    op.create_table(
        "changes",
        sa.Column("revision", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=True),
        sa.Column("model_name", sa.String(length=256), nullable=True),
        sa.Column("credential_id", sa.String(length=40), nullable=True),
        _time("time"),
        sa.PrimaryKeyConstraint("revision", name=op.f("pk_changes")),
    )
    op.create_index("ix_changes_time", "changes", ["time"])


def downgrade() -> None:
    op.drop_table("changes")
    op.drop_table("revision_counter")
    op.drop_table("admin_tokens")
    op.drop_table("virtual_keys")
    op.drop_table("models")
    op.drop_table("credentials")
    op.drop_table("orgs")
