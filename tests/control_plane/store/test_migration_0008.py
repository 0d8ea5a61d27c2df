"""Migration 0008 (pricing units, usage units and batch id) on a database holding a model and usage,
both backends: the upgrade keeps them (the new prices 0, the batch percent unset, old records and
rollups reading 0 units) and the new columns then round-trip; the downgrade drops exactly them."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import inspect, text

from control_plane.store.db import _alembic_config, make_engine
from control_plane.usage import ingest_batch
from odock.v1 import common_pb2, models_pb2, usage_pb2
from tests.control_plane.admin_env import open_admin_env
from tests.control_plane.usage.env import batch, open_usage_env, record
from tests.support.postgres import db_url  # noqa: F401
from tests.support.secrets import keks_spec

T0 = datetime(2026, 3, 1, tzinfo=UTC)
NEW_COLUMNS = {
    "models": {"per_million_audio_seconds_micros", "per_million_characters_micros", "batch_price_percent"},
    "usage_records": {"audio_milliseconds", "input_characters", "batch_id"},
    "usage_rollups": {"audio_milliseconds", "input_characters"},
}


async def _columns(url: str) -> dict[str, set[str]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:

            def read(c: object) -> dict[str, set[str]]:
                insp = inspect(c)
                return {t: {col["name"] for col in insp.get_columns(t)} for t in NEW_COLUMNS}

            return await conn.run_sync(read)
    finally:
        await engine.dispose()


async def test_0008_keeps_models_and_usage_and_round_trips(db_url: str) -> None:  # noqa: F811
    cfg = _alembic_config(db_url)
    command.upgrade(cfg, "head")
    async with open_admin_env(db_url) as cp:
        keks = {"keks_spec": keks_spec(cp.secrets.keks), "kek_ids": tuple(cp.secrets.keks)}
        org = await cp.org("acme")
        await cp.credential(org.id)
        old = await cp.model(org.id, "gpt", pricing=common_pb2.Pricing(input_per_mtok_micros=3))
        priced = await cp.model(org.id, "tts", pricing=common_pb2.Pricing(per_million_characters_micros=9,
                                                                          batch_price_percent=30))  # fmt: skip
    command.downgrade(cfg, "0007")
    assert all(not (cols & NEW_COLUMNS[t]) for t, cols in (await _columns(db_url)).items())
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:  # usage written before 0008
            await conn.execute(text(
                "INSERT INTO usage_records (request_id, attempt, node_id, org_id, key_id, model_name, upstream_slug,"
                " family, endpoint, http_status, outcome, streamed, input_tokens, output_tokens, cached_input_tokens,"
                " reasoning_tokens, cost_picos, latency_us, upstream_latency_us, time_to_first_byte_us, time, flags,"
                " receive_time) VALUES ('old-1', 1, 'n', 'org_a', 'k', 'gpt', 's', 1, '/v1/chat/completions', 200,"
                " 1, false, 1, 2, 0, 0, 3, 4, 5, 0, :t, 0, :t)"
            ), {"t": T0})  # fmt: skip
            await conn.execute(text(
                "INSERT INTO usage_rollups (org_id, hour, key_id, model_name, outcome, requests, input_tokens,"
                " output_tokens, cached_input_tokens, reasoning_tokens, cost_picos)"
                " VALUES ('org_a', :h, 'k', 'gpt', 1, 1, 1, 2, 0, 0, 3)"
            ), {"h": int(T0.timestamp()) // 3600})  # fmt: skip
    finally:
        await engine.dispose()
    command.upgrade(cfg, "head")
    assert all(NEW_COLUMNS[t] <= cols for t, cols in (await _columns(db_url)).items())
    async with open_admin_env(db_url, **keks) as cp:
        got = await cp.models.GetModel(models_pb2.GetModelRequest(org_id=org.id, name="gpt"), metadata=cp.su)
        assert got == old and not got.pricing.HasField("batch_price_percent")
        got = await cp.models.GetModel(models_pb2.GetModelRequest(org_id=org.id, name="tts"), metadata=cp.su)
        # the downgrade dropped the unit prices: the model charges tokens only again
        assert got.pricing == common_pb2.Pricing() and priced.pricing.per_million_characters_micros == 9
    async with open_usage_env(db_url) as env:
        await ingest_batch(env.sessions, batch([record("org_a", request_id="new-1", model="gpt", when=T0,
                                                       key_id="k", audio_milliseconds=2_500,
                                                       batch_id="batch_1")]))  # fmt: skip
        page = await env.usage.ListUsageRecords(usage_pb2.ListUsageRecordsRequest(), metadata=env.su)
        got_units = {r.request_id: (r.audio_milliseconds, r.input_characters, r.batch_id) for r in page.records}
        assert got_units == {"old-1": (0, 0, ""), "new-1": (2_500, 0, "batch_1")}
        request = usage_pb2.GetUsageTotalsRequest(bucket=usage_pb2.USAGE_BUCKET_TOTAL)
        request.start_time.FromDatetime(T0)
        request.end_time.FromSeconds(int(T0.timestamp()) + 3600)
        (total,) = (await env.usage.GetUsageTotals(request, metadata=env.su)).totals
        assert (total.requests, total.cost_picos, total.audio_milliseconds) == (2, 1003, 2_500)
