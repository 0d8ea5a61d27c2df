"""ModelService: the org's models, mapped to upstream slug, base URL and credential."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from control_plane import convert, egress, ids, validation
from control_plane.errors import AlreadyExists, InvalidArgument, NotFound
from control_plane.interceptors import current_principal
from control_plane.services import Deps, mask_paths
from control_plane.store import changes
from control_plane.store.repositories import credentials, models, orgs, pages
from control_plane.store.tables import CredentialRow, ModelRow, utcnow
from odock.v1 import common_pb2, models_pb2, models_pb2_grpc, node_pb2

Ctx = grpc.aio.ServicerContext[Any, Any]
PRICING_FIELDS = ("input_per_mtok_micros", "output_per_mtok_micros", "cached_input_per_mtok_micros")
UPDATE_PATHS = (
    "family", "upstream_slug", "base_url", "timeout", "credential", "pricing",
    *(f"pricing.{f}" for f in PRICING_FIELDS), "enabled",
    "openai_compatible", "context_window", "max_output_tokens", "capabilities",
)  # fmt: skip
REGISTRY_PATHS = ("openai_compatible", "context_window", "max_output_tokens", "capabilities")


def _family_name(value: int) -> str:
    return common_pb2.ProviderFamily.Name(value).removeprefix("PROVIDER_FAMILY_").lower()  # type: ignore[arg-type]


def _apply_pricing(row: ModelRow, pricing: common_pb2.Pricing, fields: tuple[str, ...]) -> None:
    for name in fields:
        if name == "cached_input_per_mtok_micros":
            value = pricing.cached_input_per_mtok_micros if convert.has_field(pricing, name) else None
        else:
            value = getattr(pricing, name)
        setattr(row, name, validation.price(f"model.pricing.{name}", value))


def _apply_registry(row: ModelRow, msg: models_pb2.Model, paths: Iterable[str]) -> None:
    """The registry fields named in ``paths`` (issue 13), validated, onto ``row``."""
    for path in paths:
        if path == "openai_compatible":
            row.openai_compatible = msg.openai_compatible if msg.HasField("openai_compatible") else False
        elif path == "context_window":
            row.context_window = validation.token_count(
                "model.context_window", msg.context_window, validation.MAX_CONTEXT_WINDOW
            )
        elif path == "max_output_tokens":
            row.max_output_tokens = validation.token_count(
                "model.max_output_tokens", msg.max_output_tokens, validation.MAX_OUTPUT_TOKENS
            )
        elif path == "capabilities":
            row.capabilities = convert.capabilities_from_proto(msg.capabilities)


async def _credential(session: Any, org_id: str, name: str, family: int) -> CredentialRow:
    validation.required("model.credential", name)
    cred = await credentials.get_by_name(session, org_id, name)
    if cred is None:
        raise InvalidArgument("model.credential", f"no credential named {name!r} in org {org_id!r}")
    if cred.family != family:
        raise InvalidArgument(
            "model.credential",
            f"credential {name!r} is for {_family_name(cred.family)}, the model is {_family_name(family)}",
        )
    return cred


class ModelServicer(models_pb2_grpc.ModelServiceServicer):
    """Create, read, update and delete models."""

    # How the egress check resolves host names (tests substitute their own).
    resolve: egress.Resolver = staticmethod(egress.system_resolve)

    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def CreateModel(self, request: models_pb2.CreateModelRequest, context: Ctx) -> models_pb2.Model:
        msg = request.model
        org_id = validation.required("model.org_id", msg.org_id)
        current_principal().check_org(org_id)
        name = validation.model_name("model.name", msg.name)
        row = ModelRow(
            id=ids.new_id(ids.MODEL),
            org_id=org_id,
            name=name,
            family=validation.family("model.family", msg.family),
            upstream_slug=validation.slug("model.upstream_slug", msg.upstream_slug),
            base_url=validation.base_url("model.base_url", msg.base_url),
            timeout_ms=validation.timeout_ms(
                "model.timeout", msg.timeout if msg.HasField("timeout") else None
            ),
            enabled=msg.enabled if msg.HasField("enabled") else True,
        )
        _apply_pricing(row, msg.pricing, PRICING_FIELDS)
        _apply_registry(row, msg, REGISTRY_PATHS)
        validation.base_url_convention("model.base_url", row.base_url, row.family)
        # Before the transaction: resolving a name may take a while, and must not hold the database.
        await self._check_egress(row.base_url)
        row.create_time = row.update_time = utcnow()
        conflict = f"model {name!r} already exists in org {org_id!r}"
        async with self._deps.write(conflict) as session:
            await orgs.require(session, org_id)
            if await models.get_by_name(session, org_id, name) is not None:
                raise AlreadyExists(conflict)
            cred = await _credential(session, org_id, msg.credential, row.family)
            row.credential_id = cred.id
            session.add(row)
            await changes.record_change(session, node_pb2.INVALIDATION_KIND_MODEL, org_id, model_name=name)
        self._deps.feed.poke()
        return convert.model_to_proto(row, cred.name)

    async def _check_egress(self, url: str) -> None:
        await egress.check_base_url("model.base_url", url, self._deps.settings.egress, resolve=self.resolve)

    async def GetModel(self, request: models_pb2.GetModelRequest, context: Ctx) -> models_pb2.Model:
        org_id = validation.required("org_id", request.org_id)
        current_principal().check_org(org_id)
        name = validation.required("name", request.name)
        async with self._deps.read() as session:
            row = await models.require(session, org_id, name)
            names = await credentials.names_by_id(session, {row.credential_id})
        return convert.model_to_proto(row, names.get(row.credential_id, ""))

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: Ctx
    ) -> models_pb2.ListModelsResponse:
        org_id = validation.required("org_id", request.org_id)
        current_principal().check_org(org_id)
        size = validation.page_size("page_size", request.page_size)
        after = pages.decode("page_token", request.page_token, f"models:{org_id}")
        async with self._deps.read() as session:
            await orgs.require(session, org_id)
            rows, token = await models.list_page(session, org_id, after, size)
            names = await credentials.names_by_id(session, {r.credential_id for r in rows})
        return models_pb2.ListModelsResponse(
            models=[convert.model_to_proto(r, names.get(r.credential_id, "")) for r in rows],
            next_page_token=token,
        )

    async def UpdateModel(self, request: models_pb2.UpdateModelRequest, context: Ctx) -> models_pb2.Model:
        msg = request.model
        org_id = validation.required("model.org_id", msg.org_id)
        current_principal().check_org(org_id)
        name = validation.required("model.name", msg.name)
        paths = mask_paths(request.update_mask, UPDATE_PATHS)
        if "base_url" in paths:
            async with self._deps.read() as session:
                existing = await models.require(session, org_id, name)
            new_url = validation.base_url("model.base_url", msg.base_url)
            if (
                existing.base_url != new_url
            ):  # an unchanged URL is not re-judged (the policy may have tightened)
                await self._check_egress(new_url)
        async with self._deps.write() as session:
            row = await models.require(session, org_id, name)
            before = convert.model_to_proto(row, "")
            before_credential = row.credential_id
            if "family" in paths:
                row.family = validation.family("model.family", msg.family)
            if "upstream_slug" in paths:
                row.upstream_slug = validation.slug("model.upstream_slug", msg.upstream_slug)
            if "base_url" in paths:
                row.base_url = validation.base_url("model.base_url", msg.base_url)
            if "timeout" in paths:
                row.timeout_ms = validation.timeout_ms(
                    "model.timeout", msg.timeout if msg.HasField("timeout") else None
                )
            if "pricing" in paths:
                _apply_pricing(row, msg.pricing, PRICING_FIELDS)
            else:
                _apply_pricing(
                    row, msg.pricing, tuple(p[len("pricing.") :] for p in paths if p.startswith("pricing."))
                )
            if "enabled" in paths:
                row.enabled = msg.enabled if msg.HasField("enabled") else True
            _apply_registry(row, msg, (p for p in REGISTRY_PATHS if p in paths))
            if "credential" in paths:
                cred = await _credential(session, org_id, msg.credential, row.family)
                row.credential_id = cred.id
            else:
                current = await session.get(CredentialRow, row.credential_id)
                if current is None:
                    raise NotFound(f"credential of model {name!r} not found")
                cred = current
                if "family" in paths:
                    await _credential(session, org_id, cred.name, row.family)
            if "base_url" in paths or "family" in paths:
                validation.base_url_convention("model.base_url", row.base_url, row.family)
            if convert.model_to_proto(row, "") != before or row.credential_id != before_credential:
                row.update_time = utcnow()
                await changes.record_change(
                    session, node_pb2.INVALIDATION_KIND_MODEL, org_id, model_name=name
                )
        self._deps.feed.poke()
        return convert.model_to_proto(row, cred.name)

    async def DeleteModel(
        self, request: models_pb2.DeleteModelRequest, context: Ctx
    ) -> models_pb2.DeleteModelResponse:
        org_id = validation.required("org_id", request.org_id)
        current_principal().check_org(org_id)
        name = validation.required("name", request.name)
        async with self._deps.write() as session:
            row = await models.require(session, org_id, name)
            await session.delete(row)
            await changes.record_change(session, node_pb2.INVALIDATION_KIND_MODEL, org_id, model_name=name)
        self._deps.feed.poke()
        return models_pb2.DeleteModelResponse()
