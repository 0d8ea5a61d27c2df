"""Error mapping: races on unique names, internal errors without details."""

from __future__ import annotations

import asyncio

import grpc

from control_plane.errors import INTERNAL_MESSAGE, InvalidArgument, NotFound, status_of
from odock.v1 import orgs_pb2
from tests.control_plane.admin_env import AdminEnv


async def test_concurrent_creates_of_one_name_give_one_org_and_already_exists(cp: AdminEnv) -> None:
    calls = [
        cp.orgs.CreateOrg(orgs_pb2.CreateOrgRequest(org=orgs_pb2.Org(name="racy")), metadata=cp.su)
        for _ in range(6)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    ok = [r for r in results if isinstance(r, orgs_pb2.Org)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1 and len(failed) == 5
    for exc in failed:
        assert exc.code() == grpc.StatusCode.ALREADY_EXISTS, (exc.code(), exc.details())
        assert "racy" in (exc.details() or "") or "org already exists" in (exc.details() or "")


def test_status_mapping() -> None:
    assert status_of(NotFound("model 'x' not found"), "/m") == (
        grpc.StatusCode.NOT_FOUND,
        "model 'x' not found",
    )
    assert status_of(InvalidArgument("model.base_url", "scheme must be http or https"), "/m") == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "model.base_url: scheme must be http or https",
    )
    code, message = status_of(RuntimeError("secret detail\nline two"), "/odock.v1.OrgService/GetOrg")
    assert (code, message) == (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
