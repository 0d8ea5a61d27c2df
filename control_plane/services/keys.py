"""VirtualKeyService: keys apps send instead of provider keys. Only keyed hashes are stored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc

from control_plane import convert, ids, validation
from control_plane.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from control_plane.interceptors import current_principal
from control_plane.services import Deps, mask_paths
from control_plane.store import changes
from control_plane.store.repositories import keys, models, orgs, pages
from control_plane.store.tables import VirtualKeyRow, utcnow
from odock import keyformat
from odock.v1 import keys_pb2, keys_pb2_grpc, node_pb2

Ctx = grpc.aio.ServicerContext[Any, Any]
LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "budget_micros")
UPDATE_PATHS = (
    "name", "all_models", "models", "expire_time", "limits", *(f"limits.{f}" for f in LIMIT_FIELDS), "labels",
)  # fmt: skip
MAX_SCOPED_MODELS = 1000


def _apply_limits(row: VirtualKeyRow, msg: keys_pb2.VirtualKey, fields: tuple[str, ...]) -> None:
    for name in fields:
        value = getattr(msg.limits, name) if convert.has_field(msg.limits, name) else None
        setattr(row, name, validation.non_negative(f"key.limits.{name}", value))


def _expiry(msg: keys_pb2.VirtualKey, now: datetime) -> datetime | None:
    if not msg.HasField("expire_time"):
        return None
    when = convert.from_timestamp(msg.expire_time)
    if when <= now:
        raise InvalidArgument("key.expire_time", "must be in the future")
    return when


async def _check_scope(session: Any, org_id: str, all_models: bool, names: list[str]) -> list[str]:
    if all_models and names:
        raise InvalidArgument("key.models", "set either all_models or a list of models, not both")
    if not all_models and not names:
        raise InvalidArgument("key.models", "required: a list of model names, or set all_models")
    if len(names) > MAX_SCOPED_MODELS:
        raise InvalidArgument("key.models", f"at most {MAX_SCOPED_MODELS} models")
    for n in names:
        validation.model_name("key.models", n)
    missing = await models.missing_names(session, org_id, names)
    if missing:
        raise InvalidArgument("key.models", f"no model named {missing[0]!r} in org {org_id!r}")
    return list(dict.fromkeys(names))


def _new_secret(pepper: bytes) -> tuple[str, bytes]:
    secret = keyformat.generate(keyformat.VIRTUAL_KEY_PREFIX)
    return secret, keyformat.digest(pepper, secret)


class VirtualKeyServicer(keys_pb2_grpc.VirtualKeyServiceServicer):
    """Create, read, update, revoke and rotate virtual keys."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def CreateVirtualKey(
        self, request: keys_pb2.CreateVirtualKeyRequest, context: Ctx
    ) -> keys_pb2.CreateVirtualKeyResponse:
        msg = request.key
        org_id = validation.required("key.org_id", msg.org_id)
        current_principal().check_org(org_id)
        name = validation.name("key.name", msg.name) if msg.name else None
        now = utcnow()
        secret, digest = _new_secret(self._deps.settings.key_pepper)
        row = VirtualKeyRow(
            id=ids.new_id(ids.KEY), org_id=org_id, name=name, digest=digest, last4=secret[-4:],
            all_models=msg.all_models, expire_time=_expiry(msg, now),
            labels=validation.labels("key.labels", msg.labels), revoked=False, create_time=now, update_time=now,
        )  # fmt: skip
        _apply_limits(row, msg, LIMIT_FIELDS)
        conflict = f"virtual key {name!r} already exists in org {org_id!r}"
        async with self._deps.write(conflict) as session:
            await orgs.require(session, org_id)
            row.models = await _check_scope(session, org_id, msg.all_models, list(msg.models))
            if name is not None and await keys.get_by_name(session, org_id, name) is not None:
                raise AlreadyExists(conflict)
            session.add(row)
        return keys_pb2.CreateVirtualKeyResponse(key=convert.key_to_proto(row), secret=secret)

    async def GetVirtualKey(
        self, request: keys_pb2.GetVirtualKeyRequest, context: Ctx
    ) -> keys_pb2.VirtualKey:
        org_id = validation.required("org_id", request.org_id)
        current_principal().check_org(org_id)
        key_id = validation.required("id", request.id)
        async with self._deps.read() as session:
            row = await keys.require(session, org_id, key_id)
        return convert.key_to_proto(row)

    async def ListVirtualKeys(
        self, request: keys_pb2.ListVirtualKeysRequest, context: Ctx
    ) -> keys_pb2.ListVirtualKeysResponse:
        org_id = validation.required("org_id", request.org_id)
        current_principal().check_org(org_id)
        size = validation.page_size("page_size", request.page_size)
        scope = f"keys:{org_id}:{int(request.include_revoked)}"
        after = pages.decode("page_token", request.page_token, scope)
        async with self._deps.read() as session:
            await orgs.require(session, org_id)
            rows, token = await keys.list_page(session, org_id, request.include_revoked, after, size)
        now = utcnow()
        return keys_pb2.ListVirtualKeysResponse(
            keys=[convert.key_to_proto(r, now) for r in rows], next_page_token=token
        )

    async def UpdateVirtualKey(
        self, request: keys_pb2.UpdateVirtualKeyRequest, context: Ctx
    ) -> keys_pb2.VirtualKey:
        msg = request.key
        org_id = validation.required("key.org_id", msg.org_id)
        current_principal().check_org(org_id)
        key_id = validation.required("key.id", msg.id)
        paths = mask_paths(request.update_mask, UPDATE_PATHS)
        now = utcnow()
        conflict = f"virtual key {msg.name!r} already exists in org {org_id!r}"
        async with self._deps.write(conflict) as session:
            row = await keys.require(session, org_id, key_id)
            if row.revoked:
                raise FailedPrecondition(f"virtual key {key_id!r} is revoked")
            before = convert.key_to_proto(row, now)
            if "name" in paths and (msg.name or None) != row.name:
                name = validation.name("key.name", msg.name) if msg.name else None
                if name is not None and await keys.get_by_name(session, org_id, name) is not None:
                    raise AlreadyExists(conflict)
                row.name = name
            if "all_models" in paths or "models" in paths:
                names = list(msg.models) if "models" in paths else list(row.models)
                if "all_models" in paths:
                    all_models = msg.all_models
                    if all_models and "models" not in paths:
                        names = []
                else:  # a new explicit list replaces an all-models scope
                    all_models = row.all_models and not names
                row.all_models = all_models
                row.models = await _check_scope(session, org_id, all_models, names)
            if "expire_time" in paths:
                row.expire_time = _expiry(msg, now)
            if "limits" in paths:
                _apply_limits(row, msg, LIMIT_FIELDS)
            else:
                _apply_limits(row, msg, tuple(p.split(".", 1)[1] for p in paths if p.startswith("limits.")))
            if "labels" in paths:
                row.labels = validation.labels("key.labels", msg.labels)
            if convert.key_to_proto(row, now) != before:
                row.update_time = now
                await changes.record_change(session, node_pb2.INVALIDATION_KIND_KEY, org_id, key_id=key_id)
        self._deps.feed.poke()
        return convert.key_to_proto(row, now)

    async def RevokeVirtualKey(
        self, request: keys_pb2.RevokeVirtualKeyRequest, context: Ctx
    ) -> keys_pb2.VirtualKey:
        org_id = validation.required("org_id", request.org_id)
        current_principal().check_org(org_id)
        key_id = validation.required("id", request.id)
        now = utcnow()
        async with self._deps.write() as session:
            row = await keys.require(session, org_id, key_id)
            if not row.revoked:
                row.revoked, row.revoke_time, row.update_time = True, now, now
                row.previous_digest = row.previous_last4 = row.previous_expire_time = None
                await changes.record_change(session, node_pb2.INVALIDATION_KIND_KEY, org_id, key_id=key_id)
        self._deps.feed.poke()
        return convert.key_to_proto(row, now)

    async def RotateVirtualKey(
        self, request: keys_pb2.RotateVirtualKeyRequest, context: Ctx
    ) -> keys_pb2.CreateVirtualKeyResponse:
        org_id = validation.required("org_id", request.org_id)
        current_principal().check_org(org_id)
        key_id = validation.required("id", request.id)
        grace = validation.grace(
            "grace_period", request.grace_period if request.HasField("grace_period") else None
        )
        now = utcnow()
        secret, digest = _new_secret(self._deps.settings.key_pepper)
        async with self._deps.write() as session:
            row = await keys.require(session, org_id, key_id)
            if row.revoked:
                raise FailedPrecondition(f"virtual key {key_id!r} is revoked")
            if grace:
                row.previous_digest, row.previous_last4 = row.digest, row.last4
                row.previous_expire_time = now + grace
            else:
                row.previous_digest = row.previous_last4 = row.previous_expire_time = None
            row.digest, row.last4, row.update_time = digest, secret[-4:], now
            await changes.record_change(session, node_pb2.INVALIDATION_KIND_KEY, org_id, key_id=key_id)
        self._deps.feed.poke()
        return keys_pb2.CreateVirtualKeyResponse(key=convert.key_to_proto(row, now), secret=secret)
