"""AdminTokenService: org-scoped admin tokens, returned once and stored as keyed hashes."""

from __future__ import annotations

from typing import Any

import grpc

from control_plane import convert, ids, validation
from control_plane.interceptors import current_principal
from control_plane.services import Deps
from control_plane.store.repositories import admin_tokens, orgs
from control_plane.store.tables import AdminTokenRow, utcnow
from odock import keyformat
from odock.v1 import admin_tokens_pb2, admin_tokens_pb2_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]


class AdminTokenServicer(admin_tokens_pb2_grpc.AdminTokenServiceServicer):
    """Create, list and revoke org admin tokens."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def CreateAdminToken(
        self, request: admin_tokens_pb2.CreateAdminTokenRequest, context: Ctx
    ) -> admin_tokens_pb2.CreateAdminTokenResponse:
        org_id = validation.required("org_id", request.org_id)
        current_principal().check_org(org_id)
        name = validation.name("name", request.name)
        secret = keyformat.generate(keyformat.ADMIN_TOKEN_PREFIX)
        row = AdminTokenRow(
            id=ids.new_id(ids.ADMIN_TOKEN), org_id=org_id, name=name,
            digest=keyformat.digest(self._deps.settings.key_pepper, secret), last4=secret[-4:],
            revoked=False, create_time=utcnow(),
        )  # fmt: skip
        async with self._deps.write() as session:
            await orgs.require(session, org_id)
            session.add(row)
        return admin_tokens_pb2.CreateAdminTokenResponse(token=convert.token_to_proto(row), secret=secret)

    async def ListAdminTokens(
        self, request: admin_tokens_pb2.ListAdminTokensRequest, context: Ctx
    ) -> admin_tokens_pb2.ListAdminTokensResponse:
        org_id = validation.required("org_id", request.org_id)
        current_principal().check_org(org_id)
        async with self._deps.read() as session:
            await orgs.require(session, org_id)
            rows = await admin_tokens.list_for_org(session, org_id)
        return admin_tokens_pb2.ListAdminTokensResponse(tokens=[convert.token_to_proto(r) for r in rows])

    async def RevokeAdminToken(
        self, request: admin_tokens_pb2.RevokeAdminTokenRequest, context: Ctx
    ) -> admin_tokens_pb2.AdminToken:
        org_id = validation.required("org_id", request.org_id)
        current_principal().check_org(org_id)
        token_id = validation.required("id", request.id)
        async with self._deps.write() as session:
            row = await admin_tokens.require(session, org_id, token_id)
            if not row.revoked:
                row.revoked, row.revoke_time = True, utcnow()
        return convert.token_to_proto(row)
