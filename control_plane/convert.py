"""Rows <-> proto messages: the only bridge. Never emits digests or stored ciphertext
(a route's secret arrives here already sealed to the asking node)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from control_plane.store.tables import (
    AdminTokenRow,
    CredentialRow,
    ModelDeploymentRow,
    ModelRow,
    OrgRow,
    VirtualKeyRow,
)
from control_plane.tiers import LIMIT_FIELDS, LimitSet, Tier, effective_limits
from odock import keyformat, sealing
from odock.v1 import admin_tokens_pb2, common_pb2, credentials_pb2, keys_pb2, models_pb2, node_pb2, orgs_pb2


def has_field(msg: Message, name: str) -> bool:
    """``msg.HasField(name)`` for a field name known only at run time."""
    return msg.HasField(name)


def timestamp(value: datetime) -> Timestamp:
    """A proto Timestamp for an aware datetime."""
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def from_timestamp(value: Timestamp) -> datetime:
    """An aware UTC datetime for a proto Timestamp."""
    return value.ToDatetime(tzinfo=UTC)


def duration_ms(ms: int) -> Duration:
    """A proto Duration of ``ms`` milliseconds."""
    d = Duration()
    d.FromTimedelta(timedelta(milliseconds=ms))
    return d


def limits_to_proto(limits: LimitSet) -> common_pb2.Limits:
    """LimitSet -> Limits (unset stays unset)."""
    msg = common_pb2.Limits()
    for name in LIMIT_FIELDS:
        value = getattr(limits, name)
        if value is not None:
            setattr(msg, name, value)
    return msg


def org_overrides(row: OrgRow) -> LimitSet:
    """The org's per-org limit overrides."""
    return LimitSet(**{name: getattr(row, name) for name in LIMIT_FIELDS})


def tier_to_proto(tier: Tier) -> orgs_pb2.Tier:
    """A built-in tier."""
    return orgs_pb2.Tier(name=tier.name, limits=limits_to_proto(tier.limits), description=tier.description)


def org_to_proto(row: OrgRow) -> orgs_pb2.Org:
    """An org with its overrides and effective limits."""
    overrides = org_overrides(row)
    return orgs_pb2.Org(
        id=row.id,
        name=row.name,
        tier=row.tier,
        limits=limits_to_proto(overrides),
        effective_limits=limits_to_proto(effective_limits(row.tier, overrides)),
        outage_policy=row.outage_policy,  # type: ignore[arg-type]
        default_models={str(k): str(v) for k, v in row.default_models.items()},
        labels={str(k): str(v) for k, v in row.labels.items()},
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )


def credential_to_proto(row: CredentialRow) -> credentials_pb2.Credential:
    """Name, family, last 4, KEK id and times; never the wrapped key or ciphertext."""
    msg = credentials_pb2.Credential(
        id=row.id,
        org_id=row.org_id,
        name=row.name,
        family=row.family,  # type: ignore[arg-type]
        last4=row.last4,
        kek_id=row.kek_id,
        create_time=timestamp(row.create_time),
    )
    if row.rotate_time is not None:
        msg.rotate_time.CopyFrom(timestamp(row.rotate_time))
    return msg


def pricing_to_proto(row: ModelRow) -> common_pb2.Pricing:
    """The model's prices (the cached-input price and the batch percent only when set)."""
    pricing = common_pb2.Pricing(
        input_per_mtok_micros=row.input_per_mtok_micros,
        output_per_mtok_micros=row.output_per_mtok_micros,
        per_million_audio_seconds_micros=row.per_million_audio_seconds_micros or 0,
        per_million_characters_micros=row.per_million_characters_micros or 0,
    )
    if row.cached_input_per_mtok_micros is not None:
        pricing.cached_input_per_mtok_micros = row.cached_input_per_mtok_micros
    if row.batch_price_percent is not None:
        pricing.batch_price_percent = row.batch_price_percent
    return pricing


# ModelCapabilities field names, in field order: what the models.capabilities column lists.
CAPABILITIES = ("tools", "vision", "json_output", "streaming")


def capabilities_to_proto(stored: str) -> models_pb2.ModelCapabilities:
    """The stored comma-separated capability names -> ModelCapabilities."""
    names = set(stored.split(","))
    return models_pb2.ModelCapabilities(**{name: name in names for name in CAPABILITIES})


def capabilities_from_proto(msg: models_pb2.ModelCapabilities) -> str:
    """ModelCapabilities -> the stored form (the true ones, comma-separated, in field order)."""
    return ",".join(name for name in CAPABILITIES if getattr(msg, name))


def deployment_to_proto(row: ModelDeploymentRow, credential_name: str) -> models_pb2.Deployment:
    """A deployment as admins see it: its credential by name, a proxy password masked (as stored)."""
    return models_pb2.Deployment(
        name=row.name, base_url=row.base_url, credential=credential_name, upstream_slug=row.upstream_slug,
        timeout=duration_ms(row.timeout_ms), weight=row.weight, priority=row.priority,
        proxy_url=row.proxy_url, ca_bundle=row.ca_bundle,
    )  # fmt: skip


def model_to_proto(
    row: ModelRow, credential_name: str, deployments: Sequence[models_pb2.Deployment] = ()
) -> models_pb2.Model:
    """A model, naming its credential, with its deployments and fallbacks."""
    pricing = pricing_to_proto(row)
    return models_pb2.Model(
        deployments=deployments,
        fallbacks=list(row.fallbacks or ()),
        id=row.id,
        org_id=row.org_id,
        name=row.name,
        family=row.family,  # type: ignore[arg-type]
        upstream_slug=row.upstream_slug,
        base_url=row.base_url,
        timeout=duration_ms(row.timeout_ms),
        credential=credential_name,
        pricing=pricing,
        enabled=row.enabled,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        openai_compatible=row.openai_compatible,
        context_window=row.context_window,
        max_output_tokens=row.max_output_tokens,
        capabilities=capabilities_to_proto(row.capabilities),
    )


def key_limits_to_proto(row: VirtualKeyRow) -> common_pb2.KeyLimits:
    """The key's own limits (unset stays unset)."""
    msg = common_pb2.KeyLimits()
    for name in ("requests_per_minute", "tokens_per_minute", "budget_micros"):
        value = getattr(row, name)
        if value is not None:
            setattr(msg, name, value)
    return msg


def key_to_proto(row: VirtualKeyRow, now: datetime | None = None) -> keys_pb2.VirtualKey:
    """A virtual key as listings show it: prefix + last 4, never the digest."""
    now = now or datetime.now(UTC)
    msg = keys_pb2.VirtualKey(
        id=row.id,
        org_id=row.org_id,
        name=row.name or "",
        display=f"{keyformat.VIRTUAL_KEY_PREFIX}…{row.last4}",
        all_models=row.all_models,
        models=list(row.models),
        limits=key_limits_to_proto(row),
        labels={str(k): str(v) for k, v in row.labels.items()},
        revoked=row.revoked,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )
    if row.expire_time is not None:
        msg.expire_time.CopyFrom(timestamp(row.expire_time))
    if row.revoke_time is not None:
        msg.revoke_time.CopyFrom(timestamp(row.revoke_time))
    if row.previous_expire_time is not None and row.previous_expire_time > now and row.previous_last4:
        msg.previous_secret_expire_time.CopyFrom(timestamp(row.previous_expire_time))
        msg.previous_display = f"{keyformat.VIRTUAL_KEY_PREFIX}…{row.previous_last4}"
    return msg


def token_to_proto(row: AdminTokenRow) -> admin_tokens_pb2.AdminToken:
    """An org admin token as listings show it: prefix + last 4, never the digest."""
    msg = admin_tokens_pb2.AdminToken(
        id=row.id,
        org_id=row.org_id,
        name=row.name,
        display=f"{keyformat.ADMIN_TOKEN_PREFIX}…{row.last4}",
        revoked=row.revoked,
        create_time=timestamp(row.create_time),
    )
    if row.revoke_time is not None:
        msg.revoke_time.CopyFrom(timestamp(row.revoke_time))
    return msg


# -- the data planes' view (NodeService) ---------------------------------------


def grant_to_proto(key: VirtualKeyRow, org: OrgRow, expire_time: datetime | None) -> node_pb2.Grant:
    """What a node needs to admit a key: its scope, its and its org's effective limits, the org's policies."""
    grant = node_pb2.Grant(
        org_id=org.id,
        org_name=org.name,
        key_id=key.id,
        all_models=key.all_models,
        models=list(key.models or []),
        key_limits=key_limits_to_proto(key),
        org_limits=limits_to_proto(effective_limits(org.tier, org_overrides(org))),
        outage_policy=common_pb2.OutagePolicy.ValueType(org.outage_policy),
        default_models={str(k): str(v) for k, v in (org.default_models or {}).items()},
    )
    if expire_time is not None:
        grant.expire_time.CopyFrom(timestamp(expire_time))
    return grant


def route_to_proto(
    model: ModelRow,
    credential_id: str,
    sealed: sealing.Sealed,
    revision: int,
    egress_allow: Iterable[str],
    deployments: Sequence[node_pb2.RouteDeployment] = (),
) -> node_pb2.Route:
    """A model's route for one node, its credentials sealed to that node."""
    return node_pb2.Route(
        deployments=deployments,
        fallbacks=list(model.fallbacks or ()),
        org_id=model.org_id,
        model_id=model.id,
        model_name=model.name,
        family=common_pb2.ProviderFamily.ValueType(model.family),
        upstream_slug=model.upstream_slug,
        base_url=model.base_url,
        timeout=duration_ms(model.timeout_ms),
        pricing=pricing_to_proto(model),
        enabled=model.enabled,
        credential_id=credential_id,
        credential_secret=sealed_to_proto(sealed),
        revision=revision,
        egress_allow=egress_allow,  # the node checks its connections against it
        openai_compatible=model.openai_compatible,
        context_window=model.context_window,
        max_output_tokens=model.max_output_tokens,
        capabilities=capabilities_to_proto(model.capabilities),
    )


def sealed_to_proto(sealed: sealing.Sealed) -> common_pb2.SealedSecret:
    """A secret sealed to a node."""
    return common_pb2.SealedSecret(
        ephemeral_public_key=sealed.ephemeral_public_key, nonce=sealed.nonce, ciphertext=sealed.ciphertext
    )


def route_deployment_to_proto(
    row: ModelDeploymentRow, sealed: sealing.Sealed, proxy_url: str
) -> node_pb2.RouteDeployment:
    """One deployment of a route: its credential sealed to the node, its proxy URL with the password."""
    return node_pb2.RouteDeployment(
        name=row.name, base_url=row.base_url, upstream_slug=row.upstream_slug,
        timeout=duration_ms(row.timeout_ms), credential_id=row.credential_id,
        credential_secret=sealed_to_proto(sealed), weight=row.weight, priority=row.priority,
        proxy_url=proxy_url, ca_bundle=row.ca_bundle,
    )  # fmt: skip


def route_summary_to_proto(model: ModelRow) -> node_pb2.RouteSummary:
    """A model as a node's listing shows it."""
    return node_pb2.RouteSummary(
        model_name=model.name,
        family=common_pb2.ProviderFamily.ValueType(model.family),
        enabled=model.enabled,
        create_time=timestamp(model.create_time),
        openai_compatible=model.openai_compatible,
        context_window=model.context_window,
        capabilities=capabilities_to_proto(model.capabilities),
    )
