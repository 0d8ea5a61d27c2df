"""Prometheus metrics of the data plane, correct with one worker or N.

Every metric is named ``odock_dp_*`` and has bounded labels: the family
(4 values), the endpoint's stable name from ``providers.ENDPOINTS``, HTTP status
codes, outcomes, and fixed enums (cache tables, RPC methods, limit codes); no
key, org, node or request ids.

One worker serves its own registry on ``ODOCK_DP_METRICS_LISTEN``. With
``--workers N`` the supervisor owns a fresh multi-process directory
(``PROMETHEUS_MULTIPROC_DIR`` in the workers' environment): each worker writes
its values there and the supervisor serves the merged view; counters and
histograms are summed across workers (dead ones included), gauges use the
``live*`` modes and a dead worker's gauges are dropped when it is reaped.

Request metrics are recorded as each request ends, through label children
looked up once per (family, endpoint, status, outcome). State kept elsewhere
(the requests in flight, the control-plane link, the cache, the usage shipper
and spool, the limiter's counters) is copied into gauges and counters by
:meth:`DataPlaneMetrics.refresh`, run every ``REFRESH_SECONDS`` by the worker
and once more before a scrape of a single worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from data_plane import deployment_metrics
from data_plane.details import write_worker_status
from data_plane.providers import FAMILY_NAMES
from data_plane.usage import meter as usage_meter
from data_plane.usage.wal import DROP_REASONS

if TYPE_CHECKING:
    from data_plane.state import NodeState
    from data_plane.usage.shipper import Shipper

log = logging.getLogger("odock.data_plane.metrics")

REFRESH_SECONDS = 1.0
# One upstream attempt of the attempt loop: (model, deployment, outcome, seconds) (data_plane/deployment_metrics.py).
record_attempt = deployment_metrics.record_attempt
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# The gateway's own time: sub-millisecond when all is well, so the low end is fine-grained.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
FIRST_BYTE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
COMMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 10.0)
CACHE_TABLES = ("key", "route", "models")
CACHE_RESULTS = ("hit", "miss", "stale", "unavailable")
OUTCOMES = {0: "unspecified", 1: "complete", 2: "partial", 3: "cancelled", 4: "error"}
# Label children cached for the request path; statuses are bounded, but a bound costs nothing.
MAX_CACHED_CHILDREN = 1024


def family_label(family: int) -> str:
    """The family's label value."""
    return FAMILY_NAMES.get(family, "unknown")


class _Mirror:
    """Turns cumulative counts kept elsewhere into Prometheus counter increments."""

    def __init__(self) -> None:
        self._seen: dict[Hashable, float] = {}

    def sync(self, key: Hashable, value: float, inc: Callable[[float], None]) -> None:
        delta = value - self._seen.get(key, 0.0)
        if delta > 0:
            inc(delta)
            self._seen[key] = value


class DataPlaneMetrics:
    """The metrics of one data-plane worker (multi-process: values go to the shared directory)."""

    def __init__(self, *, multiprocess: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess = multiprocess
        reg = self.registry
        if not multiprocess:  # per-process collectors make no sense merged
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
        self.requests = Counter(
            "odock_dp_requests", "Requests to native endpoints, by family, endpoint, HTTP status and outcome.",
            ["family", "endpoint", "code", "outcome"], registry=reg,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "odock_dp_request_seconds", "Total time of a request in the gateway (streams: until they end).",
            ["family", "endpoint"], buckets=LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.overhead_seconds = Histogram(
            "odock_dp_overhead_seconds", "Gateway overhead: total time minus time spent waiting on upstream.",
            ["family"], buckets=OVERHEAD_BUCKETS, registry=reg,
        )  # fmt: skip
        self.upstream_first_byte = Histogram(
            "odock_dp_upstream_first_byte_seconds", "From sending a request upstream to its response headers.",
            ["family"], buckets=FIRST_BYTE_BUCKETS, registry=reg,
        )  # fmt: skip
        self.tokens = Counter(
            "odock_dp_tokens", "Tokens reported by providers: kind=input|output|cached_input.",
            ["family", "kind"], registry=reg,
        )  # fmt: skip
        self.in_flight = Gauge(
            "odock_dp_requests_in_flight", "Native-endpoint requests being handled now.",
            registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip
        self.workers = Gauge(
            "odock_dp_workers", "Worker processes serving.", registry=reg, multiprocess_mode="livesum"
        )
        self.ready = Gauge(
            "odock_dp_ready", "1 when every worker is ready (connected, or within the staleness budget).",
            registry=reg, multiprocess_mode="livemin",
        )  # fmt: skip
        self.cp_connected = Gauge(
            "odock_dp_control_plane_connected", "1 when every worker's watch stream is connected.",
            registry=reg, multiprocess_mode="livemin",
        )  # fmt: skip
        self.cp_staleness = Gauge(
            "odock_dp_control_plane_staleness_seconds",
            "Seconds since the last event from the control plane (never connected: since start); worst worker.",
            registry=reg, multiprocess_mode="livemax",
        )  # fmt: skip
        self.cp_reconnects = Counter(
            "odock_dp_control_plane_reconnects", "Watch streams re-established.", registry=reg
        )
        self.cp_rpcs = Counter(
            "odock_dp_control_plane_rpcs", "NodeService calls made, by method.", ["method"], registry=reg
        )
        self.cache_lookups = Counter(
            "odock_dp_governance_cache_lookups",
            "Governance cache lookups: result=hit|miss|stale (served past its freshness)|unavailable.",
            ["table", "result"], registry=reg,
        )  # fmt: skip
        self.cache_entries = Gauge(
            "odock_dp_governance_cache_entries", "Entries in the governance caches.", ["table"],
            registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip
        self.cache_flushes = Counter(
            "odock_dp_governance_cache_flushes", "Whole-cache flushes (revision gaps, resets).", registry=reg
        )
        self.usage_queue = Gauge(
            "odock_dp_usage_queue_records", "Usage records in memory, not yet sent.",
            registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip
        self.usage_inflight = Gauge(
            "odock_dp_usage_inflight_batches", "Usage batches sent and not yet acknowledged.",
            registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip
        self.usage_stream_up = Gauge(
            "odock_dp_usage_stream_connected", "1 when every worker's usage stream is acknowledging.",
            registry=reg, multiprocess_mode="livemin",
        )  # fmt: skip
        self.usage_records = Counter(
            "odock_dp_usage_records",
            "Usage records: result=submitted|accepted|duplicate|rejected|dropped.",
            ["result"], registry=reg,
        )  # fmt: skip
        self.usage_meter_failures = Counter(
            "odock_dp_usage_meter_failures",
            "Usage records whose building or submission failed (logged; a minimal record is kept).",
            registry=reg,
        )
        self.spool_bytes = Gauge(
            "odock_dp_usage_spool_bytes", "Bytes of the usage spool directory (shared by the workers).",
            registry=reg, multiprocess_mode="livemax",
        )  # fmt: skip
        self.spool_records = Gauge(
            "odock_dp_usage_spool_records", "Usage records held in the spool, not yet acknowledged.",
            registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip
        self.usage_dropped = Counter(
            "odock_dp_usage_dropped_records",
            "Usage records lost, by reason: spool_full|disk_error|memory_full|corrupt|shutdown (docs/usage.md).",
            ["reason"], registry=reg,
        )  # fmt: skip
        self.usage_not_durable = Counter(
            "odock_dp_usage_not_durable_records",
            "Usage records the spool could not take when committed (kept in memory until delivered).",
            registry=reg,
        )  # fmt: skip
        self.spool_errors = Counter(
            "odock_dp_usage_spool_errors", "Failed usage spool writes and reads, by errno name or short_write.",
            ["reason"], registry=reg,
        )  # fmt: skip
        self.usage_task_restarts = Counter(
            "odock_dp_usage_task_restarts", "Usage background tasks restarted after a failure.",
            ["task"], registry=reg,
        )  # fmt: skip
        self.usage_commit_wait = Histogram(
            "odock_dp_usage_commit_wait_seconds",
            "From a usage record's submission to its group commit (fdatasync); the oldest record of each commit.",
            buckets=COMMIT_BUCKETS, registry=reg,
        )  # fmt: skip
        self.limit_rejections = Counter(
            "odock_dp_limit_rejections", "Requests refused by org/key limits, by error code.",
            ["code"], registry=reg,
        )  # fmt: skip
        self.limit_degraded = Counter(
            "odock_dp_limit_degraded_admissions",
            "Requests admitted while the control plane was away (fail-open): source=lease (from leases "
            "held) or local (on a local limit, docs/limits.md).",
            ["source"], registry=reg,
        )  # fmt: skip
        self.deployments = deployment_metrics.DeploymentSeries(reg)  # odock_dp_deployment_*
        self._mirror = _Mirror()
        self._started = time.monotonic()
        self._children: dict[tuple[int, str, int, int], _RequestSeries] = {}
        self.in_flight_now = 0  # kept by the request path; the gauge gets it on refresh
        for table in CACHE_TABLES:
            for result in CACHE_RESULTS:
                self.cache_lookups.labels(table, result)
        for result in ("submitted", "accepted", "duplicate", "rejected", "dropped"):
            self.usage_records.labels(result)
        for reason in DROP_REASONS:
            self.usage_dropped.labels(reason)
        for source in ("lease", "local"):
            self.limit_degraded.labels(source)

    # -- per request --------------------------------------------------------

    def request_done(
        self, family: int, endpoint: str, status: int, outcome: int, total: float, overhead: float,
        upstream_first_byte: float | None, input_tokens: int = 0, output_tokens: int = 0, cached_tokens: int = 0,
    ) -> None:  # fmt: skip
        """Record one finished native-endpoint request (times in seconds).

        Tallied in plain numbers and moved into the registry by :meth:`refresh` (each scrape, and
        every ``REFRESH_SECONDS`` in a worker), as the deployment series are: the seven locked
        updates per request this replaces were a percent of a request's CPU (issue 16).
        """
        key = (family, endpoint, status, outcome)
        c = self._children.get(key)
        if c is None:
            c = self._children_for(key)
        c.requests += 1
        c.seconds(total)
        c.overhead(overhead)
        if upstream_first_byte is not None:
            c.first_byte(upstream_first_byte)
        c.input_tokens += input_tokens
        c.output_tokens += output_tokens
        c.cached_tokens += cached_tokens

    def _children_for(self, key: tuple[int, str, int, int]) -> _RequestSeries:
        family_code, endpoint, status, outcome = key
        if len(self._children) >= MAX_CACHED_CHILDREN:  # bounded whatever statuses come along
            self.flush_requests()
            self._children.clear()
        family = family_label(family_code)
        c = _RequestSeries(
            requests=self.requests.labels(
                family, endpoint, str(status), OUTCOMES.get(outcome, "unspecified")
            ),
            seconds=_Observer(self.request_seconds.labels(family, endpoint)),
            overhead=_Observer(self.overhead_seconds.labels(family)),
            first_byte=_Observer(self.upstream_first_byte.labels(family)),
            input_tokens=self.tokens.labels(family, "input"),
            output_tokens=self.tokens.labels(family, "output"),
            cached_tokens=self.tokens.labels(family, "cached_input"),
        )
        self._children[key] = c
        return c

    def flush_requests(self) -> None:
        """Move the requests tallied so far into the registry (``refresh`` does, first)."""
        for series in self._children.values():
            series.flush()

    # -- state kept elsewhere -------------------------------------------------

    def refresh(self, node: NodeState) -> None:
        """Copy the requests tallied since the last call, and the node's link, cache, usage and limits
        state, into the metrics."""
        self.flush_requests()
        now = time.monotonic()
        link = node.link
        self.workers.set(1)
        self.in_flight.set(self.in_flight_now)
        self.ready.set(1 if node.ready() else 0)
        self.cp_connected.set(1 if link.connected else 0)
        staleness = link.staleness(now)
        self.cp_staleness.set(staleness if staleness is not None else now - self._started)
        mirror = self._mirror
        mirror.sync("reconnects", link.reconnects, self.cp_reconnects.inc)
        mirror.sync("flushes", link.flushes, self.cache_flushes.inc)
        for method, count in dict(node.client.calls).items():
            mirror.sync(("rpc", method), count, self.cp_rpcs.labels(method).inc)
        for (table, result), count in dict(node.cache.lookups).items():
            mirror.sync(("cache", table, result), count, self.cache_lookups.labels(table, result).inc)
        for table, size in node.cache.sizes().items():
            self.cache_entries.labels(table).set(size)
        shipper = node.shipper
        usage = shipper.status()  # lists the spool directory: a few entries, cheap enough each second
        self.usage_queue.set(usage["queued_records"])
        self.usage_inflight.set(usage["inflight_batches"])
        self.usage_stream_up.set(1 if usage["stream"] == "connected" else 0)
        self.spool_records.set(usage["spooled_records"])
        self.spool_bytes.set(usage["spool_bytes"])
        for result, key in (("submitted", "records"), ("accepted", "accepted"), ("duplicate", "duplicates"),
                            ("rejected", "rejected"), ("dropped", "dropped_records")):  # fmt: skip
            mirror.sync(("usage", result), usage[key], self.usage_records.labels(result).inc)
        self._refresh_usage_failures(shipper, usage)
        mirror.sync("meter_failures", usage_meter.FAILURES.count, self.usage_meter_failures.inc)
        if node.limiter is not None:
            limiter = node.limiter
            for code, count in dict(limiter.refused).items():
                mirror.sync(("refused", code), count, self.limit_rejections.labels(code).inc)
            local = limiter.degraded_local
            mirror.sync("degraded", limiter.degraded_admissions - local, self.limit_degraded.labels("lease").inc)
            mirror.sync("degraded_local", local, self.limit_degraded.labels("local").inc)
        self.deployments.refresh(getattr(node, "health", None))  # NodeState.health: routing.Health
        if node.settings.metrics_dir is not None:  # a supervisor's worker: it serves the details
            write_worker_status(node.settings.metrics_dir, node.status())

    def _refresh_usage_failures(self, shipper: Shipper, usage: dict[str, Any]) -> None:
        mirror = self._mirror
        for reason, count in usage["dropped"].items():
            mirror.sync(("usage_dropped", reason), count, self.usage_dropped.labels(reason).inc)
        for reason, count in usage["spool_errors"].items():
            mirror.sync(("spool_error", reason), count, self.spool_errors.labels(reason).inc)
        for task, count in usage["task_restarts"].items():
            mirror.sync(("usage_restart", task), count, self.usage_task_restarts.labels(task).inc)
        mirror.sync("usage_not_durable", usage["not_durable_records"], self.usage_not_durable.inc)
        waits = shipper.journal.commit_waits
        observe = self.usage_commit_wait.observe
        while waits:
            observe(waits.popleft())

    async def refresh_forever(self, node: NodeState, period: float = REFRESH_SECONDS) -> None:
        """Refresh every ``period`` seconds until cancelled."""
        while True:
            try:
                self.refresh(node)
            except Exception:  # a metrics bug must never take the worker down
                log.exception("metrics refresh failed")
            await asyncio.sleep(period)

    def render(self) -> bytes:
        """This worker's registry in the Prometheus text format (single-process mode)."""
        return generate_latest(self.registry)


METRICS: web.AppKey[DataPlaneMetrics] = web.AppKey("odock_metrics", DataPlaneMetrics)


class _Observer:
    """A labelled histogram child's observations since the last flush, bucketed by a bisect.

    The same values change the same way as ``Histogram.observe`` would (the sum, then the first
    bucket whose bound is >= the amount; NaN in none), through the child's own value objects at
    :meth:`flush`, so multi-process mode is unchanged.
    """

    __slots__ = ("_bounds", "_buckets", "_counts", "_sum", "_total")

    def __init__(self, child: Histogram) -> None:
        self._bounds: list[float] = list(child._upper_bounds)
        self._buckets: list[Any] = child._buckets
        self._sum: Any = child._sum
        self._counts = [0] * len(self._bounds)
        self._total = 0.0

    def __call__(self, amount: float) -> None:
        self._total += amount
        if amount <= self._bounds[-1]:  # the last bound is +Inf: false only for NaN
            self._counts[bisect_left(self._bounds, amount)] += 1

    def flush(self) -> None:
        counts = self._counts
        for i, n in enumerate(counts):
            if n:
                self._buckets[i].inc(n)
                counts[i] = 0
        if self._total:
            self._sum.inc(self._total)
            self._total = 0.0


class _RequestSeries:
    """The labelled series one (family, endpoint, status, outcome) updates, looked up once, with
    what was tallied for them since the last flush."""

    __slots__ = ("_counters", "cached_tokens", "first_byte", "input_tokens", "output_tokens", "overhead",
                 "requests", "seconds")  # fmt: skip

    def __init__(self, *, requests: Counter, seconds: _Observer, overhead: _Observer, first_byte: _Observer,
                 input_tokens: Counter, output_tokens: Counter, cached_tokens: Counter) -> None:  # fmt: skip
        self._counters = (requests, input_tokens, output_tokens, cached_tokens)
        self.requests = self.input_tokens = self.output_tokens = self.cached_tokens = 0
        self.seconds, self.overhead, self.first_byte = seconds, overhead, first_byte

    def flush(self) -> None:
        requests, input_tokens, output_tokens, cached_tokens = self._counters
        for counter, tally in ((requests, self.requests), (input_tokens, self.input_tokens),
                               (output_tokens, self.output_tokens), (cached_tokens, self.cached_tokens)):  # fmt: skip
            if tally:
                counter.inc(tally)
        self.requests = self.input_tokens = self.output_tokens = self.cached_tokens = 0
        self.seconds.flush()
        self.overhead.flush()
        self.first_byte.flush()


def multiprocess_registry(directory: Path) -> CollectorRegistry:
    """A registry merging every worker's values from ``directory``."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry
