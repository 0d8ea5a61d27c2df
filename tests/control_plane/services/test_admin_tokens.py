"""AdminTokenService over real gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
from sqlalchemy import select

from control_plane.store.db import make_engine
from control_plane.store.tables import AdminTokenRow
from odock import keyformat
from odock.v1 import admin_tokens_pb2, models_pb2, orgs_pb2
from tests.control_plane.admin_env import AdminEnv, bearer, expect


async def test_create_list_revoke(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    resp = await cp.tokens.CreateAdminToken(
        admin_tokens_pb2.CreateAdminTokenRequest(org_id=org.id, name="ops"), metadata=cp.su
    )
    secret, token = resp.secret, resp.token
    assert keyformat.is_well_formed(secret, keyformat.ADMIN_TOKEN_PREFIX)
    assert token.id.startswith("tok_") and token.display == f"odka-…{secret[-4:]}" and not token.revoked
    engine = make_engine(cp.db_url)
    try:
        async with engine.connect() as conn:
            digest = (await conn.execute(select(AdminTokenRow.digest))).scalar_one()
    finally:
        await engine.dispose()
    assert bytes(digest) == keyformat.digest(cp.secrets.pepper, secret)
    listed = await cp.tokens.ListAdminTokens(
        admin_tokens_pb2.ListAdminTokensRequest(org_id=org.id), metadata=cp.su
    )
    assert list(listed.tokens) == [token] and secret not in str(listed)

    md = bearer(secret)
    assert (await cp.orgs.GetOrg(orgs_pb2.GetOrgRequest(id=org.id), metadata=md)).name == "acme"
    # an org admin can manage its own org's tokens
    second = await cp.tokens.CreateAdminToken(
        admin_tokens_pb2.CreateAdminTokenRequest(org_id=org.id, name="ci"), metadata=md
    )
    revoked = await cp.tokens.RevokeAdminToken(
        admin_tokens_pb2.RevokeAdminTokenRequest(org_id=org.id, id=token.id), metadata=bearer(second.secret)
    )
    assert revoked.revoked and revoked.HasField("revoke_time")
    await expect(
        grpc.StatusCode.UNAUTHENTICATED, cp.orgs.GetOrg(orgs_pb2.GetOrgRequest(id=org.id), metadata=md)
    )
    listed = await cp.tokens.ListAdminTokens(
        admin_tokens_pb2.ListAdminTokensRequest(org_id=org.id), metadata=cp.su
    )
    assert [t.revoked for t in listed.tokens] == [True, False]


async def test_errors(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    msg = await expect(grpc.StatusCode.INVALID_ARGUMENT, cp.tokens.CreateAdminToken(
        admin_tokens_pb2.CreateAdminTokenRequest(org_id=org.id, name="Bad!"), metadata=cp.su))  # fmt: skip
    assert msg.startswith("name:")
    msg = await expect(grpc.StatusCode.INVALID_ARGUMENT, cp.tokens.CreateAdminToken(
        admin_tokens_pb2.CreateAdminTokenRequest(name="x"), metadata=cp.su))  # fmt: skip
    assert msg == "org_id: required"
    await expect(grpc.StatusCode.NOT_FOUND, cp.tokens.CreateAdminToken(
        admin_tokens_pb2.CreateAdminTokenRequest(org_id="org_missing", name="x"), metadata=cp.su))  # fmt: skip
    await expect(grpc.StatusCode.NOT_FOUND, cp.tokens.ListAdminTokens(
        admin_tokens_pb2.ListAdminTokensRequest(org_id="org_missing"), metadata=cp.su))  # fmt: skip
    await expect(grpc.StatusCode.NOT_FOUND, cp.tokens.RevokeAdminToken(
        admin_tokens_pb2.RevokeAdminTokenRequest(org_id=org.id, id="tok_missing"), metadata=cp.su))  # fmt: skip


async def test_deleting_the_org_ends_its_tokens(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    md = bearer(await cp.org_token(org.id))
    await cp.orgs.DeleteOrg(orgs_pb2.DeleteOrgRequest(id=org.id), metadata=cp.su)
    await expect(grpc.StatusCode.UNAUTHENTICATED,
                 cp.models.ListModels(models_pb2.ListModelsRequest(org_id=org.id), metadata=md))  # fmt: skip
