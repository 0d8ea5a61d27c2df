"""odock.v1.NodeService: the data planes' read-only view of governance state.

Node-token authentication is enforced by the interceptor, not here, and so is
the mapping of the domain errors raised here onto gRPC statuses. Every
answer carries the change-log revision read at the start of the same
transaction, before the data: a change racing the read then has a higher
revision than the cached answer, so its invalidation is never lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc

from control_plane import convert
from control_plane.changefeed import ChangeFeed, FeedClosed
from control_plane.crypto import envelope
from control_plane.crypto.errors import CryptoError
from control_plane.errors import DataLoss, InvalidArgument, NotFound, Unavailable
from control_plane.limits import LeaseService
from control_plane.services import Deps
from control_plane.services import model_deployments as md
from control_plane.services.objects import ObjectsService
from control_plane.store import changes
from control_plane.store.background import BackgroundDatabase
from control_plane.store.repositories import orgs, routes
from control_plane.store.tables import CredentialRow
from control_plane.usage import UsageIngestor
from control_plane.usage.ingest import IngestObserver
from control_plane.usage.priority import GovernanceFirst
from odock import sealing
from odock.keyformat import DIGEST_SIZE
from odock.v1 import node_pb2, node_pb2_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    """Resolves keys and routes for data planes and streams invalidations to them."""

    def __init__(
        self,
        deps: Deps,
        feed: ChangeFeed,
        *,
        usage_observer: IngestObserver | None = None,
        usage_store: BackgroundDatabase | None = None,
        priority: GovernanceFirst | None = None,
    ) -> None:
        self._deps = deps
        self._feed = feed  # Watch subscribes to it; ``deps.feed`` is only poked
        settings = deps.settings
        # Governance RPCs go before usage ingestion (usage/priority.py); the server gives
        # ingestion its own engine and threads so its backlog never holds the loop or the pool.
        self._priority = priority or GovernanceFirst(settings.usage_ingest_concurrency)
        self._usage = UsageIngestor(usage_store or deps.sessionmaker, usage_observer, self._priority)
        self._leases = LeaseService(deps.sessionmaker, settings, feed)
        self._objects = ObjectsService(deps)

    async def ResolveKey(
        self, request: node_pb2.ResolveKeyRequest, context: Ctx
    ) -> node_pb2.ResolveKeyResponse:
        digest = request.key_digest
        if len(digest) != DIGEST_SIZE:
            raise InvalidArgument("key_digest", f"must be {DIGEST_SIZE} bytes (HMAC-SHA256)")
        now = datetime.now(UTC)
        async with self._priority.governance(), self._deps.read() as session, session.begin():
            revision = await changes.current_revision(session)
            expire_time: datetime | None = None
            key = await routes.key_by_digest(session, digest)
            if key is not None:
                expire_time = key.expire_time
            else:
                key = await routes.key_by_previous_digest(session, digest)
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
            org = await orgs.get(session, key.org_id)
            if org is None:  # deleted under us: the key goes with its org
                return self._rejection(node_pb2.KEY_REJECTION_UNKNOWN, revision)
            grant = convert.grant_to_proto(key, org, expire_time)
            return node_pb2.ResolveKeyResponse(grant=grant, revision=revision)

    @staticmethod
    def _rejection(reason: node_pb2.KeyRejection.ValueType, revision: int) -> node_pb2.ResolveKeyResponse:
        return node_pb2.ResolveKeyResponse(rejection=reason, revision=revision)

    async def ResolveRoute(self, request: node_pb2.ResolveRouteRequest, context: Ctx) -> node_pb2.Route:
        if not request.org_id:
            raise InvalidArgument("org_id", "required")
        if not request.model_name:
            raise InvalidArgument("model_name", "required")
        if len(request.node_public_key) != sealing.PUBLIC_KEY_SIZE:
            raise InvalidArgument(
                "node_public_key", f"must be a {sealing.PUBLIC_KEY_SIZE}-byte X25519 public key"
            )
        async with self._priority.governance(), self._deps.read() as session, session.begin():
            revision = await changes.current_revision(session)
            found = await routes.route(session, request.org_id, request.model_name)
            deployed = [] if found is None else await routes.deployments(session, found[0].id)
        if found is None:
            raise NotFound(f"model_name: no model {request.model_name!r} in org {request.org_id!r}")
        model, cred = found
        secrets: dict[str, bytes] = {}
        sealed = self._seal(request.node_public_key, cred, secrets)
        # Each deployment's credential is sealed on its own (associated data = its id), as the
        # top-level one; one that cannot be opened makes the whole route unusable, as before.
        shown = [
            convert.route_deployment_to_proto(
                row, self._seal(request.node_public_key, row_cred, secrets),
                md.stored_proxy(row, self._deps.keyring),
            )
            for row, row_cred in deployed
        ]  # fmt: skip
        return convert.route_to_proto(
            model, cred.id, sealed, revision, self._deps.settings.egress_allow, shown
        )

    def _seal(self, node_key: bytes, cred: CredentialRow, secrets: dict[str, bytes]) -> sealing.Sealed:
        """``cred``'s secret sealed to the node (decrypted once per call into ``secrets``)."""
        secret = secrets.get(cred.id)
        if secret is None:
            try:
                secret = envelope.decrypt(
                    self._deps.keyring,
                    envelope.Envelope(cred.kek_id, cred.wrapped_dek, cred.ciphertext),
                    cred.id,
                )
            except CryptoError as exc:
                # Never hand out an empty or wrong secret: the route is unusable until fixed.
                raise DataLoss(f"credential {cred.id}: cannot be decrypted: {exc}") from None
            secrets[cred.id] = secret
        try:
            return sealing.seal(node_key, secret, context=cred.id.encode())
        except ValueError:
            raise InvalidArgument("node_public_key", "not a valid X25519 public key") from None

    async def ListRoutes(
        self, request: node_pb2.ListRoutesRequest, context: Ctx
    ) -> node_pb2.ListRoutesResponse:
        if not request.org_id:
            raise InvalidArgument("org_id", "required")
        async with self._priority.governance(), self._deps.read() as session, session.begin():
            revision = await changes.current_revision(session)
            org = await orgs.get(session, request.org_id)
            models = await routes.list_routes(session, request.org_id)
        if org is None:
            raise NotFound(f"org_id: no org {request.org_id!r}")
        return node_pb2.ListRoutesResponse(
            routes=[convert.route_summary_to_proto(m) for m in models], revision=revision
        )

    async def Watch(self, request: node_pb2.WatchRequest, context: Ctx) -> AsyncIterator[node_pb2.WatchEvent]:
        if request.after_revision < 0:
            raise InvalidArgument("after_revision", "must be >= 0")
        try:
            async for event in self._feed.subscribe(request.after_revision):
                yield event
        except FeedClosed as exc:
            raise Unavailable(f"watch: {exc}; reconnect to another replica") from None

    async def ReportUsage(
        self, request_iterator: AsyncIterator[node_pb2.UsageBatch], context: Ctx
    ) -> AsyncIterator[node_pb2.UsageAck]:
        async for ack in self._usage.handle(request_iterator):
            yield ack

    async def AcquireLeases(
        self, request: node_pb2.AcquireLeasesRequest, context: Ctx
    ) -> node_pb2.AcquireLeasesResponse:
        async with self._priority.governance():
            return await self._leases.acquire(request)

    # Ownership of provider objects (services/objects.py).

    async def PutObject(self, request: node_pb2.PutObjectRequest, context: Ctx) -> node_pb2.ProviderObject:
        async with self._priority.governance():
            return await self._objects.put(request)

    async def GetObject(self, request: node_pb2.GetObjectRequest, context: Ctx) -> node_pb2.ProviderObject:
        async with self._priority.governance():
            return await self._objects.get(request)

    async def ListObjects(
        self, request: node_pb2.ListObjectsRequest, context: Ctx
    ) -> node_pb2.ListObjectsResponse:
        async with self._priority.governance():
            return await self._objects.list(request)

    async def DeleteObject(self, request: node_pb2.GetObjectRequest, context: Ctx) -> node_pb2.ProviderObject:
        async with self._priority.governance():
            return await self._objects.delete(request)

    async def ClaimBatchUsage(
        self, request: node_pb2.GetObjectRequest, context: Ctx
    ) -> node_pb2.ClaimBatchUsageResponse:
        async with self._priority.governance():
            return await self._objects.claim_batch_usage(request)
