"""Migration 0006 (a model's OpenAI access and registry fields) on a database holding models,
both backends: the downgrade keeps the models (minus the new columns), the upgrade gives the
rows that predate it the defaults a model created without the fields gets."""

from __future__ import annotations

from alembic import command
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import inspect

from control_plane.store.db import _alembic_config, make_engine
from odock.v1 import models_pb2
from tests.control_plane.admin_env import ANTHROPIC, open_admin_env
from tests.support.postgres import db_url  # noqa: F401

NEW_COLUMNS = {"openai_compatible", "context_window", "max_output_tokens", "capabilities"}


async def _model_columns(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            columns = await conn.run_sync(lambda c: inspect(c).get_columns("models"))
    finally:
        await engine.dispose()
    return {c["name"] for c in columns}


async def test_0006_round_trips_a_database_with_models(db_url: str) -> None:  # noqa: F811
    cfg = _alembic_config(db_url)
    command.upgrade(cfg, "head")
    async with open_admin_env(db_url) as cp:
        org = await cp.org("acme")
        await cp.credential(org.id, "claude", family=ANTHROPIC)
        caps = models_pb2.ModelCapabilities(tools=True)
        before = await cp.model(
            org.id, "sonnet", "claude", family=ANTHROPIC, base_url="https://api.anthropic.com",
            upstream_slug="claude-sonnet-4-5", openai_compatible=True, context_window=200_000,
            max_output_tokens=8192, capabilities=caps,
        )  # fmt: skip
        await cp.credential(org.id)
        await cp.model(org.id, "gpt")
    command.downgrade(cfg, "0005")
    assert NEW_COLUMNS.isdisjoint(await _model_columns(db_url))
    command.upgrade(cfg, "head")
    assert NEW_COLUMNS <= await _model_columns(db_url)
    async with open_admin_env(db_url) as cp:
        listed = await cp.models.ListModels(models_pb2.ListModelsRequest(org_id=org.id), metadata=cp.su)
        by_name = {m.name: m for m in listed.models}
        assert set(by_name) == {"sonnet", "gpt"}
        after = by_name["sonnet"]
        # every other field survived; the new ones are back to their defaults
        kept = ("id", "family", "upstream_slug", "base_url", "timeout", "credential", "pricing", "enabled")
        for name in kept:
            assert getattr(after, name) == getattr(before, name), name
        assert after.HasField("openai_compatible") and after.openai_compatible is False
        assert (after.context_window, after.max_output_tokens) == (0, 0)
        assert after.capabilities == models_pb2.ModelCapabilities()
        # and the columns work again
        updated = await cp.models.UpdateModel(
            models_pb2.UpdateModelRequest(
                model=models_pb2.Model(
                    org_id=org.id, name="sonnet", openai_compatible=True, capabilities=caps
                ),
                update_mask=FieldMask(paths=["openai_compatible", "capabilities"]),
            ),
            metadata=cp.su,
        )
        assert updated.openai_compatible is True and updated.capabilities == caps
