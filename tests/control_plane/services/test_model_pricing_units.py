"""Issue 15's prices on ModelService (SQLite and PostgreSQL): per-second-of-audio and
per-character prices, bounded like the token prices, and the batch price percent (0..100,
unset: the default 50), stored, updated by field mask and handed to nodes in the route."""

from __future__ import annotations

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from odock import sealing
from odock.v1 import common_pb2, models_pb2, node_pb2
from tests.control_plane.admin_env import AdminEnv, expect

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def test_unit_prices_and_batch_percent_are_stored_and_reach_the_route(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    await cp.credential(org.id)
    pricing = common_pb2.Pricing(input_per_mtok_micros=2_500_000, per_million_audio_seconds_micros=100_000_000,
                                 per_million_characters_micros=15_000_000, batch_price_percent=40)  # fmt: skip
    model = await cp.model(org.id, "whisper", pricing=pricing)
    assert model.pricing == pricing
    got = await cp.models.GetModel(models_pb2.GetModelRequest(org_id=org.id, name="whisper"), metadata=cp.su)
    assert got.pricing == pricing
    route = await cp.node.ResolveRoute(
        node_pb2.ResolveRouteRequest(org_id=org.id, model_name="whisper",
                                     node_public_key=sealing.NodeKeyPair().public_key),
        metadata=cp.node_md,
    )  # fmt: skip
    assert route.pricing == pricing
    plain = await cp.model(org.id, "plain")
    assert not plain.pricing.HasField("batch_price_percent")  # unset: the default (50) applies
    assert (plain.pricing.per_million_audio_seconds_micros, plain.pricing.per_million_characters_micros) == (0, 0)
    free = await cp.model(org.id, "free-batch", pricing=common_pb2.Pricing(batch_price_percent=0))
    assert free.pricing.HasField("batch_price_percent") and free.pricing.batch_price_percent == 0


async def test_unit_prices_and_percent_are_validated(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    await cp.credential(org.id)
    cases = {
        "model.pricing.per_million_audio_seconds_micros": (
            common_pb2.Pricing(per_million_audio_seconds_micros=-1), "must not be negative"),
        "model.pricing.per_million_characters_micros": (
            common_pb2.Pricing(per_million_characters_micros=10**12 + 1), "per million characters"),
        "model.pricing.batch_price_percent": (common_pb2.Pricing(batch_price_percent=101), "from 0 to 100"),
    }  # fmt: skip
    for field, (pricing, reason) in cases.items():
        msg = await expect(INVALID, cp.model(org.id, "m", pricing=pricing))
        assert msg.startswith(field + ":") and reason in msg, msg
    audio_max = await cp.model(org.id, "max", pricing=common_pb2.Pricing(per_million_audio_seconds_micros=10**12,
                                                                           batch_price_percent=100))  # fmt: skip
    assert audio_max.pricing.per_million_audio_seconds_micros == 10**12


async def test_update_masks_reach_each_unit_price(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    await cp.credential(org.id)
    await cp.model(org.id, "tts", pricing=common_pb2.Pricing(per_million_characters_micros=15_000_000,
                                                              batch_price_percent=50))  # fmt: skip
    req = models_pb2.UpdateModelRequest(
        model=models_pb2.Model(org_id=org.id, name="tts", pricing=common_pb2.Pricing(
            per_million_audio_seconds_micros=7, per_million_characters_micros=999)),
        update_mask=FieldMask(paths=["pricing.per_million_audio_seconds_micros"]),
    )  # fmt: skip
    updated = await cp.models.UpdateModel(req, metadata=cp.su)
    assert updated.pricing.per_million_audio_seconds_micros == 7
    assert updated.pricing.per_million_characters_micros == 15_000_000  # not in the mask: kept
    assert updated.pricing.batch_price_percent == 50
    req = models_pb2.UpdateModelRequest(
        model=models_pb2.Model(org_id=org.id, name="tts"),
        update_mask=FieldMask(paths=["pricing.batch_price_percent"]),
    )
    updated = await cp.models.UpdateModel(req, metadata=cp.su)
    assert not updated.pricing.HasField("batch_price_percent")  # cleared: back to the default
    msg = await expect(INVALID, cp.models.UpdateModel(models_pb2.UpdateModelRequest(
        model=models_pb2.Model(org_id=org.id, name="tts", pricing=common_pb2.Pricing(batch_price_percent=500)),
        update_mask=FieldMask(paths=["pricing"])), metadata=cp.su))  # fmt: skip
    assert msg.startswith("model.pricing.batch_price_percent:")
