"""Prometheus metrics of one control-plane process, and the HTTP listener serving them.

Every metric lives in the process's own registry (no module-level state), is
named ``odock_cp_*`` and has bounded labels: gRPC service and method names
come from the descriptors of the services this server hosts (anything else is
``unknown``), codes from ``grpc.StatusCode``; no node, org, key or request ids.
Values that already exist elsewhere (the change feed's revision and
subscribers) are read at scrape time instead of being mirrored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Protocol

from google.protobuf import descriptor_pool
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import event, exc
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine

from odock.v1 import node_pb2

log = logging.getLogger("odock.control_plane.metrics")

UNKNOWN = "unknown"
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The label value of each NodeService stream a connected data plane holds open.
NODE_STREAM_KINDS = {
    "/odock.v1.NodeService/Watch": "watch",
    "/odock.v1.NodeService/ReportUsage": "usage",
}
_DB_ERROR_KINDS = frozenset(
    {
        "OperationalError",
        "IntegrityError",
        "InterfaceError",
        "ProgrammingError",
        "DataError",
        "InternalError",
        "NotSupportedError",
        "DatabaseError",
        "TimeoutError",
    }
)


def service_methods(service_names: Iterable[str]) -> frozenset[str]:
    """Every ``/package.Service/Method`` path of the named services (from the descriptor pool)."""
    pool = descriptor_pool.Default()
    paths: set[str] = set()
    for name in service_names:
        try:
            service = pool.FindServiceByName(name)
        except KeyError:
            continue
        paths |= {f"/{service.full_name}/{m.name}" for m in service.methods}
    return frozenset(paths)


class FeedView(Protocol):
    """What the metrics read from the change feed at scrape time."""

    @property
    def latest_revision(self) -> int: ...

    @property
    def subscriber_count(self) -> int: ...

    @property
    def last_read(self) -> float | None: ...


class _FeedCollector(Collector):
    def __init__(self, feed: FeedView, metrics: ControlPlaneMetrics) -> None:
        self._feed = feed
        self._metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        feed = self._feed
        yield GaugeMetricFamily(
            "odock_cp_watch_subscribers", "Watch streams subscribed to this replica's change feed.",
            value=feed.subscriber_count,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "odock_cp_changefeed_revision", "Newest change-log revision this replica's feed has fanned out.",
            value=feed.latest_revision,
        )  # fmt: skip
        db_revision = self._metrics.database_revision
        lag = max(0, db_revision - feed.latest_revision) if db_revision is not None else 0
        yield GaugeMetricFamily(
            "odock_cp_changefeed_lag_revisions",
            "Revisions in the database (at the last health check) not yet fanned out by the feed.",
            value=lag,
        )
        last = feed.last_read
        yield GaugeMetricFamily(
            "odock_cp_changefeed_last_read_age_seconds",
            "Seconds since the feed last read the change log successfully.",
            value=time.monotonic() - last if last is not None else float("nan"),
        )


class ControlPlaneMetrics:
    """The metrics of one control-plane process, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        rpc = ["grpc_service", "grpc_method"]
        self.rpc_handled = Counter(
            "odock_cp_grpc_server_handled", "RPCs completed, by method and status code.",
            [*rpc, "grpc_code"], registry=reg,
        )  # fmt: skip
        self.rpc_seconds = Histogram(
            "odock_cp_grpc_server_handling_seconds", "RPC duration (streams: until they end), by method.",
            rpc, buckets=RPC_BUCKETS, registry=reg,
        )  # fmt: skip
        self.rpc_in_flight = Gauge(
            "odock_cp_grpc_server_in_flight", "RPCs being handled now, by method.", rpc, registry=reg
        )
        self.node_streams = Gauge(
            "odock_cp_node_streams",
            "Open NodeService streams (connected data planes): kind=watch|usage.",
            ["kind"], registry=reg,
        )  # fmt: skip
        self.usage_batches = Counter(
            "odock_cp_usage_batches",
            "Usage batches received: result=stored|failed.",
            ["result"],
            registry=reg,
        )
        self.usage_records = Counter(
            "odock_cp_usage_records", "Usage records received: result=accepted|duplicate|rejected.",
            ["result"], registry=reg,
        )  # fmt: skip
        self.db_errors = Counter(
            "odock_cp_database_errors",
            "Errors raised by the database driver, by kind.",
            ["kind"],
            registry=reg,
        )
        self.db_checks = Counter(
            "odock_cp_database_checks", "Periodic database health checks: result=ok|failed.",
            ["result"], registry=reg,
        )  # fmt: skip
        self.db_up = Gauge("odock_cp_database_up", "1 when the last database check succeeded.", registry=reg)
        self.serving = Gauge(
            "odock_cp_serving", "1 while gRPC health reports SERVING (database reachable, not draining).",
            registry=reg,
        )  # fmt: skip
        self.database_revision: int | None = None
        for kind in NODE_STREAM_KINDS.values():
            self.node_streams.labels(kind)
        for result in ("stored", "failed"):
            self.usage_batches.labels(result)
        for result in ("accepted", "duplicate", "rejected"):
            self.usage_records.labels(result)
        for result in ("ok", "failed"):
            self.db_checks.labels(result)

    # -- sources ----------------------------------------------------------

    def watch_feed(self, feed: FeedView) -> None:
        """Export the feed's revision, lag and subscribers, read at scrape time."""
        self.registry.register(_FeedCollector(feed, self))

    def watch_engine(self, engine: AsyncEngine) -> None:
        """Count every error the engine's driver raises (connect, query, commit)."""

        def on_error(context: ExceptionContext) -> None:
            name = type(context.sqlalchemy_exception).__name__
            if isinstance(context.sqlalchemy_exception, exc.TimeoutError):
                name = "TimeoutError"
            self.db_errors.labels(name if name in _DB_ERROR_KINDS else "other").inc()

        event.listen(engine.sync_engine, "handle_error", on_error)

    # -- observers (called by the ingest and the database check) ----------

    def batch_stored(self, ack: node_pb2.UsageAck) -> None:
        """A usage batch committed (and acked)."""
        self.usage_batches.labels("stored").inc()
        self.usage_records.labels("accepted").inc(ack.accepted)
        self.usage_records.labels("duplicate").inc(ack.duplicates)
        self.usage_records.labels("rejected").inc(ack.rejected)

    def batch_failed(self) -> None:
        """A usage batch could not be stored (the stream failed)."""
        self.usage_batches.labels("failed").inc()

    def database_checked(self, ok: bool, revision: int | None) -> None:
        """One periodic database check finished."""
        self.db_checks.labels("ok" if ok else "failed").inc()
        self.db_up.set(1 if ok else 0)
        if revision is not None:
            self.database_revision = revision

    def serving_changed(self, serving: bool) -> None:
        """gRPC health flipped."""
        self.serving.set(1 if serving else 0)

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
