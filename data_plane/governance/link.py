"""The data plane's whole link to the control plane: one gRPC channel to NodeService (node-token auth,
optional TLS/mTLS) carrying key and route lookups, lease calls, the watch stream and the usage stream."""

from __future__ import annotations

import json
from collections import Counter

import grpc
from cryptography.exceptions import InvalidTag
from google.protobuf import duration_pb2
from google.protobuf.message import Message

from data_plane.governance.domain import (
    ControlPlaneUnavailable,
    Deployment,
    GrantLimits,
    KeyGrant,
    KeyRejected,
    ModelSummary,
    Pricing,
    Route,
    RouteUnusable,
)
from data_plane.settings import Settings
from data_plane.upstream.network import Network
from odock import sealing
from odock.egress import policy_of
from odock.v1 import common_pb2, models_pb2, node_pb2, node_pb2_grpc

_REJECTIONS = {
    node_pb2.KEY_REJECTION_REVOKED: "revoked",
    node_pb2.KEY_REJECTION_EXPIRED: "expired",
}


# Connection attempts to an absent control plane: 50 ms after the first failure, growing
# (x1.6, +-20% jitter) to at most 1 s apart, so a node is connected again within about a
# second of the control plane answering, however long the outage (watch.py waits for it).
RECONNECT_FIRST_MS = 50
RECONNECT_CAP_MS = 1000
# How long one connection attempt may take (TCP + TLS handshake) before it counts as failed.
CONNECT_TIMEOUT_MS = 5000
# HTTP/2 pings on an idle connection: a control plane that vanished without a FIN or RST (a
# node or pod gone) is noticed within KEEPALIVE + TIMEOUT, before the watch's idle timeout.
KEEPALIVE_MS = 10_000
KEEPALIVE_TIMEOUT_MS = 5_000


# Several replicas (``ipv4:a:p,b:p``, or ``dns:///name:p`` resolving to several addresses): a
# connection to each, unary calls spread over the ready ones, a new stream on any ready one;
# when one goes away its calls and streams move to the others at once. DNS names are looked up
# again after a connection fails, at most once a second (gRPC's default is every 30 s).
SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
DNS_MIN_RERESOLVE_MS = 1000


def channel_options() -> list[tuple[str, int | str]]:
    """The control-plane channel's options (also right for ``ipv4:a:p,b:p`` and ``dns:///`` targets)."""
    return [
        ("grpc.service_config", SERVICE_CONFIG),
        ("grpc.dns_min_time_between_resolutions_ms", DNS_MIN_RERESOLVE_MS),
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_FIRST_MS),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_CAP_MS),
        ("grpc.min_reconnect_backoff_ms", CONNECT_TIMEOUT_MS),
        ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.enable_retries", 0),
    ]


def _channel(settings: Settings) -> grpc.aio.Channel:
    options = channel_options()
    if not settings.cp_tls:
        return grpc.aio.insecure_channel(settings.cp_address, options=options)
    assert settings.cp_tls_ca_file is not None
    cert = settings.cp_tls_cert_file.read_bytes() if settings.cp_tls_cert_file else None
    key = settings.cp_tls_key_file.read_bytes() if settings.cp_tls_key_file else None
    creds = grpc.ssl_channel_credentials(settings.cp_tls_ca_file.read_bytes(), key, cert)
    return grpc.aio.secure_channel(settings.cp_address, creds, options=options)


def grant_from_proto(grant: node_pb2.Grant) -> KeyGrant:
    """The cached form of a proto Grant."""
    expire_at = None
    if grant.HasField("expire_time"):
        expire_at = grant.expire_time.seconds + grant.expire_time.nanos / 1e9
    return KeyGrant(
        org_id=grant.org_id,
        org_name=grant.org_name,
        key_id=grant.key_id,
        all_models=grant.all_models,
        models=frozenset(grant.models),
        expire_at=expire_at,
        default_models=dict(grant.default_models),
        fail_closed=grant.outage_policy == common_pb2.OUTAGE_POLICY_FAIL_CLOSED,
        limits=_limits(grant),
    )


# ModelCapabilities field names: the capability names of data_plane.providers.translator.
CAPABILITY_FIELDS = ("tools", "vision", "json_output", "streaming")


def capabilities_of(msg: models_pb2.ModelCapabilities) -> frozenset[str]:
    """The names of the capabilities set in ``msg``."""
    return frozenset(name for name in CAPABILITY_FIELDS if getattr(msg, name))


# OpenAI's Batch API costs half its synchronous prices.
DEFAULT_BATCH_PERCENT = 50


def pricing_of(msg: common_pb2.Pricing) -> Pricing:
    """A model's prices from the wire; an unset batch percent is OpenAI's Batch API discount (50)."""
    return Pricing(
        input_per_mtok_micros=msg.input_per_mtok_micros,
        output_per_mtok_micros=msg.output_per_mtok_micros,
        cached_input_per_mtok_micros=_opt(msg, "cached_input_per_mtok_micros"),
        per_million_audio_seconds_micros=msg.per_million_audio_seconds_micros,
        per_million_characters_micros=msg.per_million_characters_micros,
        batch_price_percent=(
            min(msg.batch_price_percent, 100) if msg.HasField("batch_price_percent") else DEFAULT_BATCH_PERCENT
        ),
    )


def _seconds(duration: duration_pb2.Duration) -> float:
    """A proto Duration in seconds; unset (zero) means the default 60 s."""
    return (duration.seconds + duration.nanos / 1e9) or 60.0


def _opt(message: Message, name: str) -> int | None:
    return int(getattr(message, name)) if message.HasField(name) else None


def _limits(grant: node_pb2.Grant) -> GrantLimits:
    key, org = grant.key_limits, grant.org_limits
    return GrantLimits(
        key_requests_per_minute=_opt(key, "requests_per_minute"),
        key_tokens_per_minute=_opt(key, "tokens_per_minute"),
        key_budget_micros=_opt(key, "budget_micros"),
        org_requests_per_minute=_opt(org, "requests_per_minute"),
        org_tokens_per_minute=_opt(org, "tokens_per_minute"),
        org_monthly_token_quota=_opt(org, "monthly_token_quota"),
        org_monthly_spend_cap_micros=_opt(org, "monthly_spend_cap_micros"),
    )


class ControlPlaneLink:
    """Typed calls to NodeService (lookups, leases, watch, usage); every failure other than a definite
    answer is ControlPlaneUnavailable."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._channel = _channel(settings)
        self._stub = node_pb2_grpc.NodeServiceStub(self._channel)
        # Batches go up already encoded (the journal encodes each record once, when it is made):
        # the generated stub would want a message and encode all of it again on the event loop.
        self._report_usage: grpc.aio.StreamStreamMultiCallable[bytes, node_pb2.UsageAck] = self._channel.stream_stream(
            "/odock.v1.NodeService/ReportUsage",
            request_serializer=None,
            response_deserializer=node_pb2.UsageAck.FromString,
        )
        self._metadata = (("authorization", f"Bearer {settings.node_token}"),)
        self._keys = sealing.NodeKeyPair()
        self.calls: Counter[str] = Counter()

    async def close(self) -> None:
        """Close the channel (cancels any open watch)."""
        await self._channel.close()

    @property
    def stub(self) -> node_pb2_grpc.NodeServiceAsyncStub:
        """The NodeService stub on this link's channel (``objects/grpc_ledger.py`` calls through it)."""
        return self._stub

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata every NodeService call carries (the node token)."""
        return self._metadata

    async def resolve_key(self, digest: bytes) -> tuple[KeyGrant, int]:
        """The grant for a key digest; raises KeyRejected or ControlPlaneUnavailable."""
        self.calls["ResolveKey"] += 1
        try:
            resp = await self._stub.ResolveKey(
                node_pb2.ResolveKeyRequest(key_digest=digest, node_id=self._settings.node_id),
                metadata=self._metadata,
                timeout=self._settings.timeouts.control_plane_rpc,
            )
        except grpc.aio.AioRpcError as exc:
            raise ControlPlaneUnavailable(f"ResolveKey: {exc.code().name}") from None
        if resp.WhichOneof("result") == "grant":
            return grant_from_proto(resp.grant), resp.revision
        raise KeyRejected(_REJECTIONS.get(resp.rejection, "unknown"))

    async def resolve_route(self, org_id: str, model_name: str) -> tuple[Route | None, int]:
        """The route of (org, model), None when the org has no such model."""
        self.calls["ResolveRoute"] += 1
        try:
            resp = await self._stub.ResolveRoute(
                node_pb2.ResolveRouteRequest(
                    org_id=org_id,
                    model_name=model_name,
                    node_public_key=self._keys.public_key,
                    node_id=self._settings.node_id,
                ),
                metadata=self._metadata,
                timeout=self._settings.timeouts.control_plane_rpc,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None, -1
            if exc.code() in (grpc.StatusCode.DATA_LOSS, grpc.StatusCode.FAILED_PRECONDITION):
                raise RouteUnusable(f"ResolveRoute: {exc.code().name}") from None
            raise ControlPlaneUnavailable(f"ResolveRoute: {exc.code().name}") from None
        secret = self._open(resp.credential_secret, resp.credential_id)
        deployments = tuple(self._deployment(d) for d in resp.deployments)
        route = Route(
            org_id=resp.org_id,
            model_id=resp.model_id,
            model_name=resp.model_name,
            family=int(resp.family),
            upstream_slug=resp.upstream_slug,
            base_url=resp.base_url,
            timeout=_seconds(resp.timeout),
            enabled=resp.enabled,
            credential_id=resp.credential_id,
            secret=secret,
            pricing=pricing_of(resp.pricing),
            egress=policy_of(resp.egress_allow),  # parsed once per distinct list
            openai_compatible=resp.openai_compatible,
            context_window=resp.context_window,
            max_output_tokens=resp.max_output_tokens,
            capabilities=capabilities_of(resp.capabilities),
            deployments=deployments,
            fallbacks=tuple(resp.fallbacks),
        )
        return route, resp.revision

    def _open(self, sealed: common_pb2.SealedSecret, credential_id: str) -> bytes:
        """A credential sealed to this node (associated data: its id); RouteUnusable when it does not open."""
        try:
            return self._keys.open(
                sealing.Sealed(sealed.ephemeral_public_key, sealed.nonce, sealed.ciphertext),
                credential_id.encode(),
            )
        except (InvalidTag, ValueError):
            raise RouteUnusable("the sealed credential does not open with this node's key") from None

    def _deployment(self, dep: node_pb2.RouteDeployment) -> Deployment:
        network = Network(dep.proxy_url, dep.ca_bundle) if dep.proxy_url or dep.ca_bundle else None
        return Deployment(
            name=dep.name,
            base_url=dep.base_url,
            upstream_slug=dep.upstream_slug,
            timeout=_seconds(dep.timeout),
            credential_id=dep.credential_id,
            secret=self._open(dep.credential_secret, dep.credential_id),
            weight=dep.weight,
            priority=dep.priority,
            network=network,
        )

    async def list_routes(self, org_id: str) -> tuple[list[ModelSummary], int]:
        """Every model of an org."""
        self.calls["ListRoutes"] += 1
        try:
            resp = await self._stub.ListRoutes(
                node_pb2.ListRoutesRequest(org_id=org_id),
                metadata=self._metadata,
                timeout=self._settings.timeouts.control_plane_rpc,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return [], -1
            raise ControlPlaneUnavailable(f"ListRoutes: {exc.code().name}") from None
        return [
            ModelSummary(
                name=r.model_name,
                family=int(r.family),
                enabled=r.enabled,
                created=r.create_time.seconds,
                openai_compatible=r.openai_compatible,
                context_window=r.context_window,
                capabilities=capabilities_of(r.capabilities),
            )
            for r in resp.routes
        ], resp.revision

    async def acquire_leases(
        self, asks: list[node_pb2.LeaseAsk], returns: list[node_pb2.LeaseReturn]
    ) -> list[node_pb2.LeaseGrant]:
        """Settle ``returns`` and get one grant per ask (index-aligned); raises ControlPlaneUnavailable."""
        self.calls["AcquireLeases"] += 1
        try:
            resp = await self._stub.AcquireLeases(
                node_pb2.AcquireLeasesRequest(node_id=self._settings.node_id, asks=asks, returns=returns),
                metadata=self._metadata,
                timeout=self._settings.timeouts.control_plane_rpc,
            )
        except grpc.aio.AioRpcError as exc:
            raise ControlPlaneUnavailable(f"AcquireLeases: {exc.code().name}") from None
        if len(resp.grants) != len(asks):
            raise ControlPlaneUnavailable("AcquireLeases: answer does not match the asks")
        return list(resp.grants)

    def watch(self) -> grpc.aio.UnaryStreamCall[node_pb2.WatchRequest, node_pb2.WatchEvent]:
        """Open the invalidation stream from now on (the caller flushes on its first event)."""
        self.calls["Watch"] += 1
        # Wait-for-ready: while the control plane is away the stream waits for the channel to
        # connect (instead of failing at once), and starts the moment it does.
        return self._stub.Watch(
            node_pb2.WatchRequest(after_revision=0, node_id=self._settings.node_id),
            metadata=self._metadata,
            wait_for_ready=True,
        )

    def report_usage(self) -> grpc.aio.StreamStreamCall[bytes, node_pb2.UsageAck]:
        """Open the usage stream: encoded UsageBatch messages up, acknowledgements down (the shipper
        drives it)."""
        self.calls["ReportUsage"] += 1
        return self._report_usage(metadata=self._metadata)
