"""Wiring only: engine, migrations, keyring, change feed, servicers, auth, health, reflection, TLS, metrics."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.ext.asyncio import AsyncEngine

from control_plane.changefeed import ChangeFeed
from control_plane.crypto import Keyring
from control_plane.dbcheck import LIVENESS_SERVICE, DatabaseCheck
from control_plane.interceptors import AuthInterceptor, MetricsInterceptor
from control_plane.metrics import ControlPlaneMetrics, service_methods
from control_plane.services import Deps
from control_plane.services.admin_tokens import AdminTokenServicer
from control_plane.services.credentials import CredentialServicer
from control_plane.services.keys import VirtualKeyServicer
from control_plane.services.models import ModelServicer
from control_plane.services.node import NodeServicer
from control_plane.services.orgs import OrgServicer
from control_plane.services.usage import UsageServicer
from control_plane.settings import Settings
from control_plane.store import db
from control_plane.store.background import BackgroundDatabase
from control_plane.usage.priority import GovernanceFirst
from control_plane.usage.retention import RetentionPolicy, RetentionTask
from odock.metricsserver import MetricsServer, serve_metrics
from odock.readyfile import write_ready_file
from odock.v1 import (
    admin_tokens_pb2,
    admin_tokens_pb2_grpc,
    credentials_pb2,
    credentials_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    orgs_pb2,
    orgs_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)

log = logging.getLogger("odock.control_plane")

REFLECTION_NAMES = ("grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection")

# Every odock.v1 service this server hosts, by full name.
SERVICE_NAMES: tuple[str, ...] = tuple(
    d.full_name
    for d in (
        orgs_pb2.DESCRIPTOR.services_by_name["OrgService"],
        credentials_pb2.DESCRIPTOR.services_by_name["CredentialService"],
        models_pb2.DESCRIPTOR.services_by_name["ModelService"],
        keys_pb2.DESCRIPTOR.services_by_name["VirtualKeyService"],
        admin_tokens_pb2.DESCRIPTOR.services_by_name["AdminTokenService"],
        node_pb2.DESCRIPTOR.services_by_name["NodeService"],
        usage_pb2.DESCRIPTOR.services_by_name["UsageService"],
    )
)


# Data planes ping every 10 s, also between calls, to notice a vanished replica
# (data_plane/governance/link.py); without this the server would answer such
# pings with GOAWAY "too_many_pings" after two of them.
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
    ("grpc.http2.max_ping_strikes", 0),
]


@dataclass
class RunningServer:
    """A started control plane; ``stop()`` shuts it down in order."""

    server: grpc.aio.Server
    address: str
    health: health.aio.HealthServicer
    feed: ChangeFeed
    engine: AsyncEngine
    background: BackgroundDatabase
    retention: RetentionTask
    metrics: ControlPlaneMetrics
    db_check: DatabaseCheck
    metrics_server: MetricsServer | None = None

    async def stop(self, grace: float | None) -> None:
        """Refuse new RPCs, let running ones finish within ``grace``, then close feed and engine."""
        await self.db_check.stop()
        await self.health.enter_graceful_shutdown()
        self.metrics.serving_changed(False)
        stopping = asyncio.ensure_future(self.server.stop(grace))
        # Ending the feed ends Watch streams now, so nodes move to another replica
        # instead of waiting out the grace period; unary RPCs still finish.
        await self.feed.stop()
        await stopping
        await self.retention.stop()
        await self.engine.dispose()
        await asyncio.to_thread(self.background.close)
        if self.metrics_server is not None:  # last: scrapes still work while draining
            await self.metrics_server.stop()


def _server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    pair = (settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())
    ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


def _bind(server: grpc.aio.Server, settings: Settings) -> str:
    creds = _server_credentials(settings)
    if creds is None:
        port = server.add_insecure_port(settings.listen)
    else:
        port = server.add_secure_port(settings.listen, creds)
    if port == 0:
        raise OSError(f"cannot listen on {settings.listen}")
    host = settings.listen.rpartition(":")[0]
    if host in ("0.0.0.0", "[::]", "::", ""):
        host = "127.0.0.1"
    return f"{host}:{port}"


async def start(settings: Settings) -> RunningServer:
    """Migrate (if enabled), open the database, start the feed and serve gRPC."""
    keyring = Keyring.from_spec(settings.keks_spec)
    if settings.migrate:
        await db.migrate(settings.database_url)
    engine = db.make_engine(settings.database_url)
    # Usage ingestion and pruning: own connections and worker threads (usage/priority.py).
    background = BackgroundDatabase.open(
        settings.database_url,
        settings.usage_ingest_concurrency + 1,
        idle_cpu=settings.usage_ingest_cpu_priority == "idle",
    )
    metrics = ControlPlaneMetrics()
    metrics.watch_engine(engine)
    try:
        sessionmaker = db.make_sessionmaker(engine)
        feed = ChangeFeed(sessionmaker, engine, settings)
        await feed.start()
    except BaseException:
        await engine.dispose()
        await asyncio.to_thread(background.close)
        raise
    metrics_server: MetricsServer | None = None
    try:
        metrics.watch_feed(feed)
        deps = Deps(sessionmaker=sessionmaker, settings=settings, keyring=keyring, feed=feed)
        # SQLite has one writer: a second ingest transaction would only queue for its lock.
        priority = GovernanceFirst(settings.usage_ingest_concurrency if background.is_postgres else 1)
        known = service_methods((*SERVICE_NAMES, health.SERVICE_NAME, *REFLECTION_NAMES))
        server = grpc.aio.server(
            interceptors=[MetricsInterceptor(metrics, known), AuthInterceptor(settings, sessionmaker)],
            options=KEEPALIVE_OPTIONS,
        )
        orgs_pb2_grpc.add_OrgServiceServicer_to_server(OrgServicer(deps), server)
        credentials_pb2_grpc.add_CredentialServiceServicer_to_server(CredentialServicer(deps), server)
        models_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(deps), server)
        keys_pb2_grpc.add_VirtualKeyServiceServicer_to_server(VirtualKeyServicer(deps), server)
        admin_tokens_pb2_grpc.add_AdminTokenServiceServicer_to_server(AdminTokenServicer(deps), server)
        node_pb2_grpc.add_NodeServiceServicer_to_server(
            NodeServicer(
                deps,
                feed,
                usage_observer=metrics,
                usage_store=background,
                priority=priority,
            ),
            server,
        )
        usage_pb2_grpc.add_UsageServiceServicer_to_server(UsageServicer(sessionmaker), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = _bind(server, settings)
        if settings.metrics_listen is not None:
            metrics_server = await serve_metrics(metrics.render, settings.metrics_listen)
        await server.start()
        await health_servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        db_check = DatabaseCheck(
            sessionmaker, health_servicer, ("", *SERVICE_NAMES), settings.db_check_seconds, metrics
        )
        await db_check.start()
        retention = RetentionTask(
            background,
            RetentionPolicy(settings.usage_retention_days, settings.usage_rollup_retention_days),
            priority,
            settings.usage_prune_seconds,
        )
        retention.start()
    except BaseException:
        await feed.stop()
        await engine.dispose()
        await asyncio.to_thread(background.close)
        if metrics_server is not None:
            await metrics_server.stop()
        raise
    return RunningServer(
        server=server, address=address, health=health_servicer, feed=feed, engine=engine,
        background=background, retention=retention, metrics=metrics, db_check=db_check, metrics_server=metrics_server,
    )  # fmt: skip



async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await start(settings)
    log.info("control plane serving on %s (%s)", running.address, "tls" if settings.tls else "plaintext")
    if running.metrics_server is not None:
        log.info("metrics on http://%s/metrics", running.metrics_server.address)
    try:
        if settings.ready_file is not None:
            shown = running.metrics_server.address if running.metrics_server is not None else None
            write_ready_file(settings.ready_file, "grpc", running.address, shown)
        await stop.wait()
        log.info("shutting down (grace %.1fs)", settings.grace_seconds)
    finally:
        await running.stop(settings.grace_seconds)
