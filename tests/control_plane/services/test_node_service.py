"""NodeService over real gRPC on loopback, against a migrated database.

The servicer runs in-process (no auth interceptor: node-token auth is the
interceptor's job, tested with it); rows are seeded directly, so these tests
pin down exactly what the node RPCs answer for each stored state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, timedelta

import grpc
import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import update

from control_plane import ids
from control_plane.store import changes
from control_plane.store.tables import CredentialRow, VirtualKeyRow
from odock import keyformat, sealing
from odock.v1 import common_pb2, node_pb2
from tests.control_plane.services.node_env import (
    PEPPER,
    Env,
    add_credential,
    add_key,
    add_model,
    add_org,
    now,
    open_env,
    resolve,
)


@pytest.fixture
async def env(migrated_db_url: str) -> AsyncIterator[Env]:
    async with open_env(migrated_db_url) as e:
        yield e


async def bump(env: Env, org_id: str, key_id: str) -> int:
    async with env.sm() as s, s.begin():
        return await changes.record_change(s, node_pb2.INVALIDATION_KIND_KEY, org_id, key_id=key_id)


async def test_grant_carries_key_org_and_effective_limits(env: Env) -> None:
    org_id = await add_org(
        env,
        "acme",
        tier="free",
        tokens_per_minute=777,
        outage_policy=common_pb2.OUTAGE_POLICY_FAIL_CLOSED,
        default_models={"/v1/images/generations": "dall-e"},
    )
    expiry = (now() + timedelta(days=3)).replace(microsecond=0)
    key_id, plain = await add_key(
        env, org_id, models=["gpt-4o", "claude"], expire_time=expiry, requests_per_minute=5, budget_micros=9
    )
    before = await bump(env, org_id, key_id)
    resp = await resolve(env, plain)
    assert resp.WhichOneof("result") == "grant"
    assert resp.revision == before
    g = resp.grant
    assert (g.org_id, g.org_name, g.key_id) == (org_id, "acme", key_id)
    assert not g.all_models and list(g.models) == ["gpt-4o", "claude"]
    assert g.expire_time.ToDatetime(UTC) == expiry
    assert g.key_limits.requests_per_minute == 5 and g.key_limits.budget_micros == 9
    assert not g.key_limits.HasField("tokens_per_minute")
    # free tier merged with the org's override of tokens/minute
    assert g.org_limits.tokens_per_minute == 777
    assert g.org_limits.monthly_token_quota == 100_000
    assert g.org_limits.requests_per_minute == 60
    assert g.outage_policy == common_pb2.OUTAGE_POLICY_FAIL_CLOSED
    assert dict(g.default_models) == {"/v1/images/generations": "dall-e"}

    enterprise = await add_org(env, "big", tier="enterprise")
    _, plain2 = await add_key(env, enterprise, all_models=True)
    g2 = (await resolve(env, plain2)).grant
    assert g2.all_models and not g2.HasField("expire_time")
    assert not g2.org_limits.HasField("monthly_token_quota")


async def test_rejections_unknown_revoked_expired(env: Env) -> None:
    org_id = await add_org(env, "acme")
    unknown = await resolve(env, keyformat.generate())
    assert unknown.rejection == node_pb2.KEY_REJECTION_UNKNOWN
    _, revoked = await add_key(env, org_id, all_models=True, revoked=True, revoke_time=now())
    assert (await resolve(env, revoked)).rejection == node_pb2.KEY_REJECTION_REVOKED
    _, expired = await add_key(env, org_id, all_models=True, expire_time=now() - timedelta(seconds=1))
    assert (await resolve(env, expired)).rejection == node_pb2.KEY_REJECTION_EXPIRED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.stub.ResolveKey(node_pb2.ResolveKeyRequest(key_digest=b"short"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "key_digest" in (err.value.details() or "")


async def test_rotation_grace_then_expired(env: Env) -> None:
    org_id = await add_org(env, "acme")
    key_id, old = await add_key(env, org_id, all_models=True)
    new = keyformat.generate()
    grace_end = (now() + timedelta(hours=1)).replace(microsecond=0)
    async with env.sm() as s, s.begin():
        await s.execute(
            update(VirtualKeyRow)
            .where(VirtualKeyRow.id == key_id)
            .values(
                previous_digest=keyformat.digest(PEPPER, old),
                previous_last4=old[-4:],
                previous_expire_time=grace_end,
                digest=keyformat.digest(PEPPER, new),
                last4=new[-4:],
            )
        )
    g_new = (await resolve(env, new)).grant
    assert g_new.key_id == key_id and not g_new.HasField("expire_time")
    g_old = (await resolve(env, old)).grant
    assert g_old.key_id == key_id and g_old.expire_time.ToDatetime(UTC) == grace_end

    # The key's own expiry, when earlier, bounds the grace.
    own = (now() + timedelta(minutes=5)).replace(microsecond=0)
    async with env.sm() as s, s.begin():
        await s.execute(update(VirtualKeyRow).where(VirtualKeyRow.id == key_id).values(expire_time=own))
    assert (await resolve(env, old)).grant.expire_time.ToDatetime(UTC) == own

    async with env.sm() as s, s.begin():
        await s.execute(
            update(VirtualKeyRow)
            .where(VirtualKeyRow.id == key_id)
            .values(previous_expire_time=now() - timedelta(seconds=1))
        )
    assert (await resolve(env, old)).rejection == node_pb2.KEY_REJECTION_EXPIRED
    assert (await resolve(env, new)).WhichOneof("result") == "grant"


async def test_route_seals_credential_to_the_node(env: Env) -> None:
    org_id = await add_org(env, "acme")
    cred_id = await add_credential(env, org_id, "sk-canary-route-0001")
    model_id = await add_model(
        env, org_id, "gpt-4o", "gpt-4o-2024-08-06", cred_id, cached_input_per_mtok_micros=1
    )
    node = sealing.NodeKeyPair()
    route = await env.stub.ResolveRoute(
        node_pb2.ResolveRouteRequest(org_id=org_id, model_name="gpt-4o", node_public_key=node.public_key)
    )
    assert (route.org_id, route.model_id, route.model_name) == (org_id, model_id, "gpt-4o")
    assert route.family == common_pb2.PROVIDER_FAMILY_OPENAI
    assert route.upstream_slug == "gpt-4o-2024-08-06"
    assert route.base_url == "https://api.openai.com/v1"
    assert route.timeout.ToMilliseconds() == 30_500
    assert (
        route.pricing.input_per_mtok_micros == 2_500_000
        and route.pricing.output_per_mtok_micros == 10_000_000
    )
    assert route.pricing.cached_input_per_mtok_micros == 1
    assert route.enabled and route.credential_id == cred_id
    async with env.sm() as s:
        assert route.revision == await changes.current_revision(s)
    sealed = sealing.Sealed(
        route.credential_secret.ephemeral_public_key,
        route.credential_secret.nonce,
        route.credential_secret.ciphertext,
    )
    assert b"sk-canary" not in route.SerializeToString()
    assert node.open(sealed, cred_id.encode()) == b"sk-canary-route-0001"
    with pytest.raises(InvalidTag):
        sealing.NodeKeyPair().open(sealed, cred_id.encode())
    with pytest.raises(InvalidTag):
        node.open(sealed, b"cred_other")


async def test_route_errors(env: Env) -> None:
    org_id = await add_org(env, "acme")
    node = sealing.NodeKeyPair()
    cases = [
        (
            node_pb2.ResolveRouteRequest(org_id=org_id, model_name="nope", node_public_key=node.public_key),
            grpc.StatusCode.NOT_FOUND,
            "nope",
        ),
        (
            node_pb2.ResolveRouteRequest(org_id=org_id, model_name="x", node_public_key=b"\x01" * 31),
            grpc.StatusCode.INVALID_ARGUMENT,
            "node_public_key",
        ),
        (
            node_pb2.ResolveRouteRequest(org_id=org_id, model_name="", node_public_key=node.public_key),
            grpc.StatusCode.INVALID_ARGUMENT,
            "model_name",
        ),
    ]
    for request, code, needle in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await env.stub.ResolveRoute(request)
        assert err.value.code() == code
        assert needle in (err.value.details() or "")


async def test_org_isolation_same_model_name(env: Env) -> None:
    a = await add_org(env, "org-a")
    b = await add_org(env, "org-b")
    cred_a = await add_credential(env, a, "sk-secret-aaaa")
    cred_b = await add_credential(env, b, "sk-secret-bbbb")
    await add_model(env, a, "chat", "slug-a", cred_a)
    await add_model(env, b, "chat", "slug-b", cred_b, enabled=False)
    await add_model(env, b, "only-b", "slug-b2", cred_b)
    node = sealing.NodeKeyPair()
    for org_id, slug, cred_id, secret in (
        (a, "slug-a", cred_a, b"sk-secret-aaaa"),
        (b, "slug-b", cred_b, b"sk-secret-bbbb"),
    ):
        route = await env.stub.ResolveRoute(
            node_pb2.ResolveRouteRequest(org_id=org_id, model_name="chat", node_public_key=node.public_key)
        )
        assert route.upstream_slug == slug and route.credential_id == cred_id
        s = route.credential_secret
        assert (
            node.open(sealing.Sealed(s.ephemeral_public_key, s.nonce, s.ciphertext), cred_id.encode())
            == secret
        )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.stub.ResolveRoute(
            node_pb2.ResolveRouteRequest(org_id=a, model_name="only-b", node_public_key=node.public_key)
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    listed_a = await env.stub.ListRoutes(node_pb2.ListRoutesRequest(org_id=a))
    listed_b = await env.stub.ListRoutes(node_pb2.ListRoutesRequest(org_id=b))
    assert [(r.model_name, r.enabled) for r in listed_a.routes] == [("chat", True)]
    assert [(r.model_name, r.enabled) for r in listed_b.routes] == [("chat", False), ("only-b", True)]
    assert all(
        r.family == common_pb2.PROVIDER_FAMILY_OPENAI and r.create_time.seconds > 0 for r in listed_b.routes
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.stub.ListRoutes(node_pb2.ListRoutesRequest(org_id=ids.new_id(ids.ORG)))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_tampered_credential_fails_loudly(env: Env) -> None:
    org_id = await add_org(env, "acme")
    cred_id = await add_credential(env, org_id, "sk-canary-tamper")
    await add_model(env, org_id, "m", "slug", cred_id)
    async with env.sm() as s:
        row = await s.get(CredentialRow, cred_id)
        assert row is not None
        flipped = bytearray(row.ciphertext)
    flipped[-1] ^= 0x01
    async with env.sm() as s, s.begin():
        await s.execute(
            update(CredentialRow).where(CredentialRow.id == cred_id).values(ciphertext=bytes(flipped))
        )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.stub.ResolveRoute(
            node_pb2.ResolveRouteRequest(
                org_id=org_id, model_name="m", node_public_key=sealing.NodeKeyPair().public_key
            )
        )
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert cred_id in (err.value.details() or "")


async def test_report_usage_acks_a_batch(env: Env) -> None:
    # ReportUsage delegates to control_plane.usage.UsageIngestor (tests/control_plane/usage covers it in depth).
    call = env.stub.ReportUsage()
    await call.write(node_pb2.UsageBatch(node_id="n1", sequence=7))
    ack = await call.read()
    await call.done_writing()
    assert isinstance(ack, node_pb2.UsageAck)
    assert (ack.sequence, ack.accepted, ack.duplicates, ack.rejected) == (7, 0, 0, 0)
