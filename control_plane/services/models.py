"""ModelService: the org's models, mapped to upstream slug, base URL and credential."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import grpc

from control_plane import convert, egress, ids, validation
from control_plane.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from control_plane.interceptors import current_principal
from control_plane.services import Deps, mask_paths
from control_plane.services import model_deployments as md
from control_plane.store import changes
from control_plane.store.repositories import credentials, deployments, models, orgs, pages
from control_plane.store.tables import ModelDeploymentRow, ModelRow, utcnow
from odock.v1 import common_pb2, models_pb2, models_pb2_grpc, node_pb2

Ctx = grpc.aio.ServicerContext[Any, Any]
PRICING_FIELDS = (
    "input_per_mtok_micros", "output_per_mtok_micros", "cached_input_per_mtok_micros",
    "per_million_audio_seconds_micros", "per_million_characters_micros", "batch_price_percent",
)  # fmt: skip
# Optional prices: unset means "the default" (the input price; 50 percent), not 0.
_OPTIONAL_PRICES = ("cached_input_per_mtok_micros", "batch_price_percent")
_UNITS = {"per_million_audio_seconds_micros": "seconds of audio", "per_million_characters_micros": "characters"}
UPDATE_PATHS = (
    "family", "upstream_slug", "base_url", "timeout", "credential", "pricing",
    *(f"pricing.{f}" for f in PRICING_FIELDS), "enabled",
    "openai_compatible", "context_window", "max_output_tokens", "capabilities", "deployments", "fallbacks",
)  # fmt: skip
REGISTRY_PATHS = ("openai_compatible", "context_window", "max_output_tokens", "capabilities")


def _apply_pricing(row: ModelRow, pricing: common_pb2.Pricing, fields: tuple[str, ...]) -> None:
    for name in fields:
        value = getattr(pricing, name) if name not in _OPTIONAL_PRICES or convert.has_field(pricing, name) else None
        if name == "batch_price_percent":
            setattr(row, name, validation.percent(f"model.pricing.{name}", value))
        else:
            setattr(row, name, validation.price(f"model.pricing.{name}", value, _UNITS.get(name, "tokens")))


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


async def _output(session: Any, rows: Sequence[ModelRow]) -> list[models_pb2.Model]:
    """The models as the API shows them, each with its deployments (credentials by name)."""
    by_model = await deployments.of_models(session, [r.id for r in rows])
    cred_ids = {r.credential_id for r in rows} | {d.credential_id for ds in by_model.values() for d in ds}
    names = await credentials.names_by_id(session, cred_ids)
    out = []
    for row in rows:
        deps = by_model[row.id]
        if deps:
            shown = [convert.deployment_to_proto(d, names.get(d.credential_id, "")) for d in deps]
        else:  # a row without deployments (never after migration 0007): its own fields are the one
            spec = md.spec_of_model(row, names.get(row.credential_id, ""))
            shown = [models_pb2.Deployment(
                name=spec.name, base_url=spec.base_url, credential=spec.credential,
                upstream_slug=spec.upstream_slug, timeout=convert.duration_ms(spec.timeout_ms), weight=1,
            )]  # fmt: skip
        out.append(convert.model_to_proto(row, names.get(row.credential_id, ""), shown))
    return out


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
        family = validation.family("model.family", msg.family)
        if msg.deployments:
            specs = md.parse(msg.deployments)
            md.check_top_level(msg, specs[0])
        else:
            specs = [md.single(msg)]
        row = ModelRow(
            id=ids.new_id(ids.MODEL),
            org_id=org_id,
            name=name,
            family=family,
            enabled=msg.enabled if msg.HasField("enabled") else True,
            fallbacks=md.fallbacks(msg.fallbacks, name),
        )
        _apply_pricing(row, msg.pricing, PRICING_FIELDS)
        _apply_registry(row, msg, REGISTRY_PATHS)
        md.check_conventions(specs, family)
        # Before the transaction: resolving a name may take a while, and must not hold the database.
        await self._check_egress(specs, set())
        row.create_time = row.update_time = utcnow()
        conflict = f"model {name!r} already exists in org {org_id!r}"
        async with self._deps.write(conflict) as session:
            await orgs.require(session, org_id)
            if await models.get_by_name(session, org_id, name) is not None:
                raise AlreadyExists(conflict)
            specs = md.keep_passwords(specs, [], self._deps.keyring)
            creds = await md.credentials_for(session, org_id, specs, family)
            await md.check_fallbacks_exist(session, org_id, row.fallbacks or [])
            session.add(row)
            await deployments.replace(session, row, md.build_rows(specs, creds, self._deps.keyring))
            await changes.record_change(session, node_pb2.INVALIDATION_KIND_MODEL, org_id, model_name=name)
            (out,) = await _output(session, [row])
        self._deps.feed.poke()
        return out

    async def _check_egress(self, specs: Sequence[md.Spec], known: set[str]) -> None:
        await md.check_egress(specs, known, self._deps.settings.egress, self.resolve)

    async def GetModel(self, request: models_pb2.GetModelRequest, context: Ctx) -> models_pb2.Model:
        org_id = validation.required("org_id", request.org_id)
        current_principal().check_org(org_id)
        name = validation.required("name", request.name)
        async with self._deps.read() as session:
            row = await models.require(session, org_id, name)
            (out,) = await _output(session, [row])
        return out

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
            out = await _output(session, rows)
        return models_pb2.ListModelsResponse(models=out, next_page_token=token)

    async def UpdateModel(self, request: models_pb2.UpdateModelRequest, context: Ctx) -> models_pb2.Model:
        msg = request.model
        org_id = validation.required("model.org_id", msg.org_id)
        current_principal().check_org(org_id)
        name = validation.required("model.name", msg.name)
        paths = mask_paths(request.update_mask, UPDATE_PATHS)
        explicit = bool(request.update_mask.paths)
        # "deployments" replaces the whole list; an empty mask with no deployments given means
        # the top-level fields, as before deployments existed.
        given: list[md.Spec] | None = None
        if "deployments" in paths and (msg.deployments or explicit):
            given = md.parse(msg.deployments)
            if not explicit:
                md.check_top_level(msg, given[0])
        top = [] if given is not None else [p for p in md.TOP_LEVEL if p in paths]
        fallbacks = md.fallbacks(msg.fallbacks, name) if "fallbacks" in paths else None
        if given is not None or "base_url" in top:
            async with self._deps.read() as session:
                existing = await models.require(session, org_id, name)
                known = md.known_addresses(await deployments.of_model(session, existing.id))
            known.add(existing.base_url)  # an unchanged URL is not re-judged (the policy may have tightened)
            await self._check_egress(
                given or [md.Spec(name="", base_url=validation.base_url("model.base_url", msg.base_url),
                                  credential="", upstream_slug="", timeout_ms=0)], known,
            )  # fmt: skip
        async with self._deps.write() as session:
            row = await models.require(session, org_id, name)
            old_rows = await deployments.of_model(session, row.id)
            old_specs = await self._stored_specs(session, row, old_rows)
            before = (convert.model_to_proto(row, ""), list(row.fallbacks or ()))
            if "family" in paths:
                row.family = validation.family("model.family", msg.family)
            top_values = md.single_fields(msg, top)
            if "pricing" in paths:
                _apply_pricing(row, msg.pricing, PRICING_FIELDS)
            else:
                _apply_pricing(
                    row, msg.pricing, tuple(p[len("pricing.") :] for p in paths if p.startswith("pricing."))
                )
            if "enabled" in paths:
                row.enabled = msg.enabled if msg.HasField("enabled") else True
            _apply_registry(row, msg, (p for p in REGISTRY_PATHS if p in paths))
            new_specs: list[md.Spec] | None = None
            if given is not None:
                new_specs = md.keep_passwords(given, old_rows, self._deps.keyring)
            elif top:
                if len(old_specs) > 1:
                    raise InvalidArgument(
                        f"model.{top[0]}",
                        f"model {name!r} has {len(old_specs)} deployments; change them with the"
                        " deployments field (the whole list)",
                    )
                new_specs = [dataclasses.replace(old_specs[0], **top_values)]
            effective = new_specs or old_specs
            if new_specs is not None or "family" in paths:
                creds = await md.credentials_for(session, org_id, effective, row.family)
            if given is not None or "base_url" in top or "family" in paths:
                md.check_conventions(effective, row.family)
            if fallbacks is not None:
                await md.check_fallbacks_exist(session, org_id, fallbacks)
                row.fallbacks = fallbacks
            replaced = new_specs is not None and new_specs != old_specs
            if replaced and new_specs is not None:
                await deployments.replace(session, row, md.build_rows(new_specs, creds, self._deps.keyring))
            if replaced or (convert.model_to_proto(row, ""), list(row.fallbacks or ())) != before:
                row.update_time = utcnow()
                await changes.record_change(
                    session, node_pb2.INVALIDATION_KIND_MODEL, org_id, model_name=name
                )
            (out,) = await _output(session, [row])
        self._deps.feed.poke()
        return out

    async def _stored_specs(
        self, session: Any, row: ModelRow, rows: Sequence[ModelDeploymentRow]
    ) -> list[md.Spec]:
        names = await credentials.names_by_id(session, {r.credential_id for r in rows} | {row.credential_id})
        if not rows:
            return [md.spec_of_model(row, names.get(row.credential_id, ""))]
        only = len(rows) == 1
        return [
            md.spec_of_row(r, names.get(r.credential_id, ""), self._deps.keyring, only=only) for r in rows
        ]

    async def DeleteModel(
        self, request: models_pb2.DeleteModelRequest, context: Ctx
    ) -> models_pb2.DeleteModelResponse:
        org_id = validation.required("org_id", request.org_id)
        current_principal().check_org(org_id)
        name = validation.required("name", request.name)
        async with self._deps.write() as session:
            row = await models.require(session, org_id, name)
            users = [u for u in await deployments.models_naming_fallback(session, org_id, name) if u != name]
            if users:
                listed = ", ".join(repr(u) for u in users[:20]) + (" ..." if len(users) > 20 else "")
                raise FailedPrecondition(
                    f"model {name!r} is a fallback of models {listed}; remove it from their fallbacks first"
                )
            await session.delete(row)
            await changes.record_change(session, node_pb2.INVALIDATION_KIND_MODEL, org_id, model_name=name)
        self._deps.feed.poke()
        return models_pb2.DeleteModelResponse()
