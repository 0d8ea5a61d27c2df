"""odock.v1.NodeService: the data planes' read-only view of governance state.

Node-token authentication is enforced by the interceptor, not here. Every
answer carries the change-log revision read at the start of the same
transaction, before the data: a change racing the read then has a higher
revision than the cached answer, so its invalidation is never lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, NoReturn

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from odock import sealing
from odock.keyformat import DIGEST_SIZE
from odock.v1 import common_pb2, node_pb2, node_pb2_grpc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane import tiers
from control_plane.changefeed import ChangeFeed, FeedClosed
from control_plane.crypto import envelope
from control_plane.crypto.errors import CryptoError
from control_plane.crypto.keyring import Keyring
from control_plane.errors import DomainError
from control_plane.limits import LeaseService
from control_plane.settings import Settings
from control_plane.store import changes
from control_plane.store.background import BackgroundDatabase
from control_plane.store.tables import CredentialRow, ModelRow, OrgRow, VirtualKeyRow
from control_plane.usage import UsageIngestor
from control_plane.usage.ingest import IngestObserver
from control_plane.usage.priority import GovernanceFirst


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, message: str
) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable: abort raises")


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def _now() -> datetime:
    return datetime.now(UTC)


def _org_limits(org: OrgRow) -> common_pb2.Limits:
    overrides = tiers.LimitSet(
        requests_per_minute=org.requests_per_minute,
        tokens_per_minute=org.tokens_per_minute,
        monthly_token_quota=org.monthly_token_quota,
        monthly_spend_cap_micros=org.monthly_spend_cap_micros,
    )
    merged = tiers.effective_limits(org.tier, overrides)
    limits = common_pb2.Limits()
    for name in tiers.LIMIT_FIELDS:
        value = getattr(merged, name)
        if value is not None:
            setattr(limits, name, value)
    return limits


def _key_limits(row: VirtualKeyRow) -> common_pb2.KeyLimits:
    limits = common_pb2.KeyLimits()
    if row.requests_per_minute is not None:
        limits.requests_per_minute = row.requests_per_minute
    if row.tokens_per_minute is not None:
        limits.tokens_per_minute = row.tokens_per_minute
    if row.budget_micros is not None:
        limits.budget_micros = row.budget_micros
    return limits


def _grant(key: VirtualKeyRow, org: OrgRow, expire_time: datetime | None) -> node_pb2.Grant:
    grant = node_pb2.Grant(
        org_id=org.id,
        org_name=org.name,
        key_id=key.id,
        all_models=key.all_models,
        models=list(key.models or []),
        key_limits=_key_limits(key),
        org_limits=_org_limits(org),
        outage_policy=common_pb2.OutagePolicy.ValueType(org.outage_policy),
        default_models={str(k): str(v) for k, v in (org.default_models or {}).items()},
    )
    if expire_time is not None:
        grant.expire_time.CopyFrom(_ts(expire_time))
    return grant


def _pricing(model: ModelRow) -> common_pb2.Pricing:
    pricing = common_pb2.Pricing(
        input_per_mtok_micros=model.input_per_mtok_micros,
        output_per_mtok_micros=model.output_per_mtok_micros,
    )
    if model.cached_input_per_mtok_micros is not None:
        pricing.cached_input_per_mtok_micros = model.cached_input_per_mtok_micros
    return pricing


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    """Resolves keys and routes for data planes and streams invalidations to them."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        feed: ChangeFeed,
        *,
        usage_observer: IngestObserver | None = None,
        usage_store: BackgroundDatabase | None = None,
        priority: GovernanceFirst | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._keyring = Keyring.from_spec(settings.keks_spec)
        self._egress_allow = settings.egress_allow
        self._feed = feed
        # Governance RPCs go before usage ingestion (usage/priority.py); the server gives
        # ingestion its own engine and threads so its backlog never holds the loop or the pool.
        self._priority = priority or GovernanceFirst(settings.usage_ingest_concurrency)
        self._usage = UsageIngestor(usage_store or sessionmaker, usage_observer, self._priority)
        self._leases = LeaseService(sessionmaker, settings, feed)

    async def ResolveKey(
        self,
        request: node_pb2.ResolveKeyRequest,
        context: grpc.aio.ServicerContext[node_pb2.ResolveKeyRequest, node_pb2.ResolveKeyResponse],
    ) -> node_pb2.ResolveKeyResponse:
        digest = request.key_digest
        if len(digest) != DIGEST_SIZE:
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"key_digest: must be {DIGEST_SIZE} bytes (HMAC-SHA256)",
            )
        now = _now()
        async with self._priority.governance(), self._sessionmaker() as session, session.begin():
            revision = await changes.current_revision(session)
            expire_time: datetime | None = None
            key = await session.scalar(select(VirtualKeyRow).where(VirtualKeyRow.digest == digest))
            if key is not None:
                expire_time = key.expire_time
            else:
                key = await session.scalar(
                    select(VirtualKeyRow).where(VirtualKeyRow.previous_digest == digest)
                )
                if key is None:
                    return self._rejection(node_pb2.KEY_REJECTION_UNKNOWN, revision)
                grace_end = key.previous_expire_time
                if grace_end is None or grace_end <= now:
                    return self._rejection(node_pb2.KEY_REJECTION_EXPIRED, revision)
                expire_time = grace_end if key.expire_time is None else min(grace_end, key.expire_time)
            if key.revoked:
                return self._rejection(node_pb2.KEY_REJECTION_REVOKED, revision)
            if expire_time is not None and expire_time <= now:
                return self._rejection(node_pb2.KEY_REJECTION_EXPIRED, revision)
            org = await session.get(OrgRow, key.org_id)
            if org is None:  # deleted under us: the key goes with its org
                return self._rejection(node_pb2.KEY_REJECTION_UNKNOWN, revision)
            return node_pb2.ResolveKeyResponse(grant=_grant(key, org, expire_time), revision=revision)

    @staticmethod
    def _rejection(reason: node_pb2.KeyRejection.ValueType, revision: int) -> node_pb2.ResolveKeyResponse:
        return node_pb2.ResolveKeyResponse(rejection=reason, revision=revision)

    async def ResolveRoute(
        self,
        request: node_pb2.ResolveRouteRequest,
        context: grpc.aio.ServicerContext[node_pb2.ResolveRouteRequest, node_pb2.Route],
    ) -> node_pb2.Route:
        if not request.org_id:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "org_id: required")
        if not request.model_name:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "model_name: required")
        if len(request.node_public_key) != sealing.PUBLIC_KEY_SIZE:
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"node_public_key: must be a {sealing.PUBLIC_KEY_SIZE}-byte X25519 public key",
            )
        async with self._priority.governance(), self._sessionmaker() as session, session.begin():
            revision = await changes.current_revision(session)
            found = (
                await session.execute(
                    select(ModelRow, CredentialRow)
                    .join(CredentialRow, CredentialRow.id == ModelRow.credential_id)
                    .where(ModelRow.org_id == request.org_id, ModelRow.name == request.model_name)
                )
            ).first()
        if found is None:
            await _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"model_name: no model {request.model_name!r} in org {request.org_id!r}",
            )
        model, cred = found[0], found[1]
        try:
            secret = envelope.decrypt(
                self._keyring, envelope.Envelope(cred.kek_id, cred.wrapped_dek, cred.ciphertext), cred.id
            )
        except CryptoError as exc:
            # Never hand out an empty or wrong secret: the route is unusable until fixed.
            await _abort(
                context, grpc.StatusCode.DATA_LOSS, f"credential {cred.id}: cannot be decrypted: {exc}"
            )
        try:
            sealed = sealing.seal(request.node_public_key, secret, context=cred.id.encode())
        except ValueError:
            await _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "node_public_key: not a valid X25519 public key"
            )
        return node_pb2.Route(
            org_id=model.org_id,
            model_id=model.id,
            model_name=model.name,
            family=common_pb2.ProviderFamily.ValueType(model.family),
            upstream_slug=model.upstream_slug,
            base_url=model.base_url,
            timeout=Duration(seconds=model.timeout_ms // 1000, nanos=(model.timeout_ms % 1000) * 1_000_000),
            pricing=_pricing(model),
            enabled=model.enabled,
            credential_id=cred.id,
            credential_secret=common_pb2.SealedSecret(
                ephemeral_public_key=sealed.ephemeral_public_key,
                nonce=sealed.nonce,
                ciphertext=sealed.ciphertext,
            ),
            revision=revision,
            egress_allow=self._egress_allow,  # the node checks its connections against it
        )

    async def ListRoutes(
        self,
        request: node_pb2.ListRoutesRequest,
        context: grpc.aio.ServicerContext[node_pb2.ListRoutesRequest, node_pb2.ListRoutesResponse],
    ) -> node_pb2.ListRoutesResponse:
        if not request.org_id:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "org_id: required")
        async with self._priority.governance(), self._sessionmaker() as session, session.begin():
            revision = await changes.current_revision(session)
            org = await session.get(OrgRow, request.org_id)
            models = (
                await session.scalars(
                    select(ModelRow).where(ModelRow.org_id == request.org_id).order_by(ModelRow.name)
                )
            ).all()
        if org is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"org_id: no org {request.org_id!r}")
        return node_pb2.ListRoutesResponse(
            routes=[
                node_pb2.RouteSummary(
                    model_name=m.name,
                    family=common_pb2.ProviderFamily.ValueType(m.family),
                    enabled=m.enabled,
                    create_time=_ts(m.create_time),
                )
                for m in models
            ],
            revision=revision,
        )

    async def Watch(
        self,
        request: node_pb2.WatchRequest,
        context: grpc.aio.ServicerContext[node_pb2.WatchRequest, node_pb2.WatchEvent],
    ) -> AsyncIterator[node_pb2.WatchEvent]:
        if request.after_revision < 0:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "after_revision: must be >= 0")
        try:
            async for event in self._feed.subscribe(request.after_revision):
                yield event
        except FeedClosed as exc:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, f"watch: {exc}; reconnect to another replica")

    async def ReportUsage(
        self,
        request_iterator: AsyncIterator[node_pb2.UsageBatch],
        context: grpc.aio.ServicerContext[node_pb2.UsageBatch, node_pb2.UsageAck],
    ) -> AsyncIterator[node_pb2.UsageAck]:
        async for ack in self._usage.handle(request_iterator):
            yield ack

    async def AcquireLeases(
        self,
        request: node_pb2.AcquireLeasesRequest,
        context: grpc.aio.ServicerContext[node_pb2.AcquireLeasesRequest, node_pb2.AcquireLeasesResponse],
    ) -> node_pb2.AcquireLeasesResponse:
        try:
            async with self._priority.governance():
                response: node_pb2.AcquireLeasesResponse = await self._leases.acquire(request)
        except DomainError as exc:
            await _abort(context, exc.code, exc.message)
        return response
