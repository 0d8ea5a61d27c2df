"""OrgService: organisations, their tiers and limits."""

from __future__ import annotations

from typing import Any

import grpc

from control_plane import convert, ids, validation
from control_plane.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from control_plane.interceptors import current_principal
from control_plane.services import Deps, mask_paths
from control_plane.store import changes
from control_plane.store.repositories import orgs, pages
from control_plane.store.tables import OrgRow, utcnow
from control_plane.tiers import DEFAULT_TIER, LIMIT_FIELDS, TIERS
from odock.v1 import node_pb2, orgs_pb2, orgs_pb2_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]
ORG_ADMIN_FORBIDDEN = ("tier", "limits")
UPDATE_PATHS = (
    "name", "tier", "limits", *(f"limits.{f}" for f in LIMIT_FIELDS), "outage_policy", "default_models", "labels",
)  # fmt: skip


def _tier(field: str, value: str) -> str:
    tier = value or DEFAULT_TIER
    if tier not in TIERS:
        raise InvalidArgument(field, f"unknown tier {tier!r} (known: {', '.join(TIERS)})")
    return tier


def _apply_limits(row: OrgRow, msg: orgs_pb2.Org, fields: tuple[str, ...]) -> None:
    for name in fields:
        value = getattr(msg.limits, name) if convert.has_field(msg.limits, name) else None
        setattr(row, name, validation.non_negative(f"org.limits.{name}", value))


class OrgServicer(orgs_pb2_grpc.OrgServiceServicer):
    """Create, read, update and delete orgs; list the built-in tiers."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def CreateOrg(self, request: orgs_pb2.CreateOrgRequest, context: Ctx) -> orgs_pb2.Org:
        current_principal().require_super()
        msg = request.org
        name = validation.name("org.name", msg.name)
        row = OrgRow(
            id=ids.new_id(ids.ORG),
            name=name,
            tier=_tier("org.tier", msg.tier),
            outage_policy=validation.outage_policy("org.outage_policy", msg.outage_policy),
            default_models=validation.default_models("org.default_models", msg.default_models),
            labels=validation.labels("org.labels", msg.labels),
        )
        _apply_limits(row, msg, LIMIT_FIELDS)
        row.create_time = row.update_time = utcnow()
        conflict = f"org {name!r} already exists"
        async with self._deps.write(conflict) as session:
            if await orgs.get_by_name(session, name) is not None:
                raise AlreadyExists(conflict)
            session.add(row)
        return convert.org_to_proto(row)

    async def GetOrg(self, request: orgs_pb2.GetOrgRequest, context: Ctx) -> orgs_pb2.Org:
        principal = current_principal()
        if bool(request.id) == bool(request.name):
            raise InvalidArgument("id", "set exactly one of id or name")
        async with self._deps.read() as session:
            row = await (
                orgs.get(session, request.id) if request.id else orgs.get_by_name(session, request.name)
            )
        if row is None:
            if not principal.is_super:  # do not reveal other orgs' existence to org admins
                principal.check_org(request.id or "")
            raise NotFound(f"org {request.id or request.name!r} not found")
        principal.check_org(row.id)
        return convert.org_to_proto(row)

    async def ListOrgs(self, request: orgs_pb2.ListOrgsRequest, context: Ctx) -> orgs_pb2.ListOrgsResponse:
        current_principal().require_super()
        size = validation.page_size("page_size", request.page_size)
        after = pages.decode("page_token", request.page_token, "orgs")
        async with self._deps.read() as session:
            rows, token = await orgs.list_page(session, after, size)
        return orgs_pb2.ListOrgsResponse(orgs=[convert.org_to_proto(r) for r in rows], next_page_token=token)

    async def UpdateOrg(self, request: orgs_pb2.UpdateOrgRequest, context: Ctx) -> orgs_pb2.Org:
        principal = current_principal()
        msg = request.org
        org_id = validation.required("org.id", msg.id)
        principal.check_org(org_id)
        paths = mask_paths(request.update_mask, UPDATE_PATHS)
        conflict = f"org {msg.name!r} already exists"
        async with self._deps.write(conflict) as session:
            row = await orgs.require(session, org_id, for_update=True)
            before = convert.org_to_proto(row)
            if "name" in paths and msg.name != row.name:
                name = validation.name("org.name", msg.name)
                if await orgs.get_by_name(session, name) is not None:
                    raise AlreadyExists(conflict)
                row.name = name
            if "tier" in paths:
                row.tier = _tier("org.tier", msg.tier)
            if "limits" in paths:
                _apply_limits(row, msg, LIMIT_FIELDS)
            else:
                _apply_limits(row, msg, tuple(p.split(".", 1)[1] for p in paths if p.startswith("limits.")))
            if "outage_policy" in paths:
                row.outage_policy = validation.outage_policy("org.outage_policy", msg.outage_policy)
            if "default_models" in paths:
                row.default_models = validation.default_models("org.default_models", msg.default_models)
            if "labels" in paths:
                row.labels = validation.labels("org.labels", msg.labels)
            after = convert.org_to_proto(row)
            if not principal.is_super and (before.tier != after.tier or before.limits != after.limits):
                raise PermissionDenied("org admins cannot change the org's tier or limits")
            if after != before:
                row.update_time = utcnow()
                await changes.record_change(session, node_pb2.INVALIDATION_KIND_ORG, org_id)
        self._deps.feed.poke()
        return convert.org_to_proto(row)

    async def DeleteOrg(self, request: orgs_pb2.DeleteOrgRequest, context: Ctx) -> orgs_pb2.DeleteOrgResponse:
        current_principal().require_super()
        org_id = validation.required("id", request.id)
        async with self._deps.write() as session:
            row = await orgs.require(session, org_id, for_update=True)
            if not request.force:
                owned = {k: v for k, v in (await orgs.owned_counts(session, org_id)).items() if v}
                if owned:
                    what = ", ".join(f"{n} {k}" for k, n in owned.items())
                    raise FailedPrecondition(
                        f"org {row.name!r} still owns {what}; delete them first or set force"
                    )
            await orgs.delete_with_owned(session, org_id)
            await changes.record_change(session, node_pb2.INVALIDATION_KIND_ORG, org_id)
        self._deps.feed.poke()
        return orgs_pb2.DeleteOrgResponse()

    async def ListTiers(self, request: orgs_pb2.ListTiersRequest, context: Ctx) -> orgs_pb2.ListTiersResponse:
        current_principal()
        return orgs_pb2.ListTiersResponse(tiers=[convert.tier_to_proto(t) for t in TIERS.values()])
