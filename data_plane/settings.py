"""The data plane's frozen settings, built from the environment in one place.

Every secret ``X`` may instead be given as ``X_FILE``. Bad or missing values
raise :class:`SettingsError` with a one-line message naming the variable and
never echoing a secret. Defaults are documented in docs/errors.md (timeouts)
and docs/architecture.md (the rest).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from odock import envconfig
from odock.envconfig import EnvReader as _Env
from odock.envconfig import parse_address, parse_pepper

if TYPE_CHECKING:
    from data_plane.upstream.proxy import EnvironmentProxies

# Raised for every bad setting; defined in odock.envconfig, re-exported as this plane's own.
SettingsError = envconfig.SettingsError

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_CP_ADDRESS = "127.0.0.1:50051"
MIN_TOKEN_CHARS = 32
# What a full spool does (data_plane/usage/spool.py): refuse new records, or delete the oldest.
FullPolicy = Literal["drop_newest", "drop_oldest"]
FULL_POLICIES: tuple[FullPolicy, ...] = ("drop_newest", "drop_oldest")
# Set by the supervisor for its workers (prometheus-client reads the same variable itself).
METRICS_DIR_VAR = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True)
class Timeouts:
    """Every data-plane timeout, in seconds (upstream first byte is the model's own timeout)."""

    client_header: float = 10.0
    client_body_idle: float = 30.0
    client_body: float = 900.0  # absolute cap on reading one body, whatever its rate
    client_body_window: float = 15.0  # pacing window (data_plane/body.py)
    client_body_min_rate: float = 1024.0  # bytes/s a body must average over each window (0: off)
    client_keepalive: float = 75.0
    upstream_connect: float = 10.0
    upstream_idle: float = 60.0
    total: float = 900.0
    control_plane_rpc: float = 5.0
    watch_idle: float = 20.0
    reconnect_max: float = 10.0
    grace: float = 10.0


@dataclass(frozen=True)
class CacheSizes:
    """Bounds and lifetimes of the governance cache."""

    keys: int = 100_000
    routes: int = 20_000
    negative: int = 50_000
    ttl: float = 600.0
    negative_ttl: float = 5.0


@dataclass(frozen=True)
class UsageSettings:
    """Batching, shipping and spooling of usage records (docs/usage.md)."""

    spool_dir: Path = Path("odock-usage-spool")
    spool_max_bytes: int = 1024 * 1024 * 1024
    spool_full_policy: FullPolicy = "drop_newest"
    batch_size: int = 500
    batch_age: float = 1.0
    spill_after: float = 2.0
    ack_timeout: float = 10.0
    flush: float = 5.0
    commit_interval: float = 0.05  # records reach the spool (fdatasync'd) within about this
    memory_max: int = 50_000  # records held only in memory (spool failing or full) before the policy drops
    metering: bool = True  # off: no usage extraction and no records (benchmarks, or usage not wanted)


@dataclass(frozen=True)
class LimitSettings:
    """Enforcement of org and key limits through control-plane leases (docs/limits.md)."""

    enabled: bool = True
    lease_seconds: float = 2.0  # traffic one lease should cover (prefetch horizon)
    recheck_seconds: float = 5.0  # a refused monthly/budget window is asked again after this
    idle_return_seconds: float = 10.0  # unused monthly/budget leases go back after this idle time
    bytes_per_token: float = 3.0  # prompt-size estimate: body bytes / this
    default_output_tokens: int = 1024  # reserved when the request sets no output cap
    wait_seconds: float = 10.0  # longest a request queues for a lease before 503


@dataclass(frozen=True)
class RoutingSettings:
    """Choosing among a model's deployments: attempts, Retry-After and circuit breakers (docs/routing.md)."""

    max_attempts: int = 4  # upstream attempts per client request (also bounded by deployments + fallbacks)
    retry_after_max: float = 300.0  # a Retry-After (or provider reset hint) longer than this is cut to it
    cooldown_429: float = 1.0  # a 429 without any reset hint takes the deployment out of choice this long
    breaker_failures: int = 3  # consecutive failures that open a breaker; 0: breakers off
    breaker_failure_rate: float = 0.5  # ... or this failure rate over the window
    breaker_window: float = 30.0  # seconds of attempts the failure rate is taken over
    breaker_min_requests: int = 10  # attempts in the window before the rate counts
    breaker_cooldown: float = 30.0  # first open period; doubles on each failed probe up to 8x
    idle_seconds: float = 600.0  # a model not routed this long loses its health state
    max_tracked: int = 10_000  # deployments whose health is kept (least recently routed models go first)


@dataclass(frozen=True)
class Settings:
    """Data-plane configuration (see docs/architecture.md and docs/errors.md)."""

    listen: str = DEFAULT_LISTEN
    cp_address: str = DEFAULT_CP_ADDRESS
    node_token: str = field(default="", repr=False)
    key_pepper: bytes = field(default=b"", repr=False)
    cp_tls_ca_file: Path | None = None
    cp_tls_cert_file: Path | None = None
    cp_tls_key_file: Path | None = None
    workers: int = 1
    node_id: str = ""
    max_body_bytes: int = 32 * 1024 * 1024
    # POST /v1/files (docs/files-and-batches.md): a file's size (batch input files: the second), and
    # where uploads are spooled (None: the system's temporary directory).
    max_upload_bytes: int = 512 * 1024 * 1024
    max_batch_file_bytes: int = 200 * 1024 * 1024
    upload_dir: Path | None = None
    max_json_depth: int = 64
    max_buffered_response_bytes: int = 64 * 1024 * 1024
    max_sse_event_bytes: int = 1024 * 1024  # a streamed event held back longer than this ends the stream
    max_staleness: float = 300.0
    upstream_pool_size: int = 1000
    upstream_pool_per_host: int = 256
    ready_file: Path | None = None
    metrics_listen: str | None = None  # plain-HTTP /metrics listener (None: off)
    metrics_dir: Path | None = None  # multi-process metrics directory (workers of a supervisor)
    timeouts: Timeouts = field(default_factory=Timeouts)
    cache: CacheSizes = field(default_factory=CacheSizes)
    usage: UsageSettings = field(default_factory=UsageSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    # HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY (and lower-case forms), read once here; None: none set.
    proxies: EnvironmentProxies | None = field(default=None, repr=False)

    @property
    def cp_tls(self) -> bool:
        """True when the control-plane channel uses TLS."""
        return self.cp_tls_ca_file is not None

    @property
    def host_port(self) -> tuple[str, int]:
        """The listen address split into host and port."""
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build and validate settings from an environment mapping."""
        env = _Env(environ)
        token = env.secret("ODOCK_NODE_TOKEN")
        if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
            raise SettingsError(
                f"ODOCK_NODE_TOKEN: must be at least {MIN_TOKEN_CHARS} characters without whitespace"
            )
        ca = env.path("ODOCK_CP_TLS_CA_FILE")
        cert = env.path("ODOCK_CP_TLS_CERT_FILE")
        key = env.path("ODOCK_CP_TLS_KEY_FILE")
        if (cert is None) != (key is None):
            raise SettingsError("ODOCK_CP_TLS_CERT_FILE and ODOCK_CP_TLS_KEY_FILE must be set together")
        if cert is not None and ca is None:
            raise SettingsError("ODOCK_CP_TLS_CERT_FILE: mutual TLS needs ODOCK_CP_TLS_CA_FILE too")
        listen = parse_address("ODOCK_DP_LISTEN", env.plain("ODOCK_DP_LISTEN", DEFAULT_LISTEN))
        workers = int(env.number("ODOCK_WORKERS", 1, low=1, high=256, integer=True))
        ready = env.plain("ODOCK_READY_FILE", "")
        metrics_listen = env.plain("ODOCK_DP_METRICS_LISTEN", "")
        metrics_dir = env.plain(METRICS_DIR_VAR, "")
        if metrics_dir and not Path(metrics_dir).is_dir():
            raise SettingsError(f"{METRICS_DIR_VAR}: not a directory: {metrics_dir[:200]}")
        upload_dir = env.plain("ODOCK_UPLOAD_DIR", "")
        if upload_dir and not Path(upload_dir).is_dir():
            raise SettingsError(f"ODOCK_UPLOAD_DIR: not a directory: {upload_dir[:200]}")
        timeouts = Timeouts(
            client_header=env.number("ODOCK_CLIENT_HEADER_TIMEOUT_SECONDS", 10.0, low=0.05, high=3600),
            client_body_idle=env.number("ODOCK_CLIENT_BODY_IDLE_SECONDS", 30.0, low=0.05, high=3600),
            client_body=env.number("ODOCK_CLIENT_BODY_TIMEOUT_SECONDS", 900.0, low=0.05, high=86400),
            client_body_window=env.number("ODOCK_CLIENT_BODY_WINDOW_SECONDS", 15.0, low=0.05, high=3600),
            client_body_min_rate=env.number("ODOCK_CLIENT_BODY_MIN_BYTES_PER_SECOND", 1024.0, low=0, high=2**30),
            client_keepalive=env.number("ODOCK_CLIENT_KEEPALIVE_SECONDS", 75.0, low=0.05, high=3600),
            upstream_connect=env.number("ODOCK_UPSTREAM_CONNECT_TIMEOUT_SECONDS", 10.0, low=0.05, high=600),
            upstream_idle=env.number("ODOCK_UPSTREAM_IDLE_SECONDS", 60.0, low=0.05, high=3600),
            total=env.number("ODOCK_REQUEST_TOTAL_SECONDS", 900.0, low=0.1, high=86400),
            control_plane_rpc=env.number("ODOCK_CP_RPC_TIMEOUT_SECONDS", 5.0, low=0.05, high=600),
            watch_idle=env.number("ODOCK_WATCH_IDLE_SECONDS", 20.0, low=0.1, high=3600),
            reconnect_max=env.number("ODOCK_RECONNECT_MAX_SECONDS", 10.0, low=0.05, high=600),
            grace=env.number("ODOCK_GRACE_SECONDS", 10.0, low=0.0, high=3600),
        )
        cache = CacheSizes(
            keys=int(env.number("ODOCK_KEY_CACHE_SIZE", 100_000, low=1, high=10**8, integer=True)),
            routes=int(env.number("ODOCK_ROUTE_CACHE_SIZE", 20_000, low=1, high=10**8, integer=True)),
            negative=int(env.number("ODOCK_NEGATIVE_CACHE_SIZE", 50_000, low=1, high=10**8, integer=True)),
            ttl=env.number("ODOCK_CACHE_TTL_SECONDS", 600.0, low=0.05, high=86400 * 7),
            negative_ttl=env.number("ODOCK_NEGATIVE_CACHE_SECONDS", 5.0, low=0.0, high=3600),
        )
        policy = env.plain("ODOCK_USAGE_SPOOL_FULL_POLICY", "drop_newest")
        if policy not in FULL_POLICIES:
            raise SettingsError(f"ODOCK_USAGE_SPOOL_FULL_POLICY: must be one of {', '.join(FULL_POLICIES)}")
        metering = env.plain("ODOCK_USAGE_METERING", "on").lower()
        if metering not in ("on", "off"):
            raise SettingsError("ODOCK_USAGE_METERING: must be 'on' or 'off'")
        usage = UsageSettings(
            spool_dir=Path(env.plain("ODOCK_USAGE_SPOOL_DIR", "odock-usage-spool")),
            spool_max_bytes=int(
                env.number("ODOCK_USAGE_SPOOL_MAX_BYTES", 1 << 30, low=4096, high=2**50, integer=True)
            ),
            spool_full_policy=policy,
            batch_size=int(env.number("ODOCK_USAGE_BATCH_SIZE", 500, low=1, high=10_000, integer=True)),
            batch_age=env.number("ODOCK_USAGE_BATCH_AGE_SECONDS", 1.0, low=0.01, high=600),
            spill_after=env.number("ODOCK_USAGE_SPILL_SECONDS", 2.0, low=0.01, high=3600),
            ack_timeout=env.number("ODOCK_USAGE_ACK_TIMEOUT_SECONDS", 10.0, low=0.1, high=3600),
            flush=env.number("ODOCK_USAGE_FLUSH_SECONDS", 5.0, low=0.0, high=3600),
            commit_interval=env.number("ODOCK_USAGE_COMMIT_SECONDS", 0.05, low=0.001, high=10),
            memory_max=int(
                env.number("ODOCK_USAGE_MEMORY_MAX_RECORDS", 50_000, low=1, high=10**8, integer=True)
            ),
            metering=metering == "on",
        )
        enforce = env.plain("ODOCK_LIMITS", "on").lower()
        if enforce not in ("on", "off"):
            raise SettingsError("ODOCK_LIMITS: must be 'on' or 'off'")
        if metering == "off" and enforce == "on":
            # Token and spend limits settle on metered usage: without it they would never be charged.
            raise SettingsError("ODOCK_USAGE_METERING: 'off' needs ODOCK_LIMITS=off")
        limits = LimitSettings(
            enabled=enforce == "on",
            lease_seconds=env.number("ODOCK_LIMIT_LEASE_SECONDS", 2.0, low=0.01, high=3600),
            recheck_seconds=env.number("ODOCK_LIMIT_RECHECK_SECONDS", 5.0, low=0.01, high=3600),
            idle_return_seconds=env.number("ODOCK_LIMIT_IDLE_RETURN_SECONDS", 10.0, low=0.1, high=86400),
            bytes_per_token=env.number("ODOCK_LIMIT_BYTES_PER_TOKEN", 3.0, low=0.5, high=64),
            default_output_tokens=int(
                env.number("ODOCK_LIMIT_DEFAULT_OUTPUT_TOKENS", 1024, low=0, high=10**7, integer=True)
            ),
            wait_seconds=env.number("ODOCK_LIMIT_WAIT_SECONDS", 10.0, low=0.01, high=3600),
        )
        routing = RoutingSettings(
            max_attempts=int(env.number("ODOCK_ROUTING_MAX_ATTEMPTS", 4, low=1, high=20, integer=True)),
            retry_after_max=env.number("ODOCK_ROUTING_RETRY_AFTER_MAX", 300.0, low=0.0, high=86400),
            cooldown_429=env.number("ODOCK_ROUTING_COOLDOWN_429", 1.0, low=0.0, high=3600),
            breaker_failures=int(env.number("ODOCK_BREAKER_FAILURES", 3, low=0, high=1000, integer=True)),
            breaker_failure_rate=env.number("ODOCK_BREAKER_FAILURE_RATE", 0.5, low=0.01, high=1.0),
            breaker_window=env.number("ODOCK_BREAKER_WINDOW", 30.0, low=0.1, high=3600),
            breaker_min_requests=int(
                env.number("ODOCK_BREAKER_MIN_REQUESTS", 10, low=1, high=10**6, integer=True)
            ),
            breaker_cooldown=env.number("ODOCK_BREAKER_COOLDOWN", 30.0, low=0.01, high=3600),
        )
        return cls(
            listen=listen,
            cp_address=parse_address("ODOCK_CP_ADDRESS", env.plain("ODOCK_CP_ADDRESS", DEFAULT_CP_ADDRESS)),
            node_token=token,
            key_pepper=parse_pepper(env.secret("ODOCK_KEY_PEPPER")),
            cp_tls_ca_file=ca,
            cp_tls_cert_file=cert,
            cp_tls_key_file=key,
            workers=workers,
            node_id=env.plain("ODOCK_NODE_ID", f"{socket.gethostname()}-{os.getpid()}")[:128],
            max_body_bytes=int(
                env.number("ODOCK_MAX_BODY_BYTES", 32 * 1024 * 1024, low=1, high=2**40, integer=True)
            ),
            max_upload_bytes=int(
                env.number("ODOCK_MAX_UPLOAD_BYTES", 512 * 1024 * 1024, low=1, high=2**42, integer=True)
            ),
            max_batch_file_bytes=int(
                env.number("ODOCK_MAX_BATCH_FILE_BYTES", 200 * 1024 * 1024, low=1, high=2**42, integer=True)
            ),
            upload_dir=Path(upload_dir) if upload_dir else None,
            max_json_depth=int(env.number("ODOCK_MAX_JSON_DEPTH", 64, low=2, high=10_000, integer=True)),
            max_buffered_response_bytes=int(
                env.number(
                    "ODOCK_MAX_BUFFERED_RESPONSE_BYTES", 64 * 1024 * 1024, low=1024, high=2**40, integer=True
                )
            ),
            max_sse_event_bytes=int(
                env.number("ODOCK_MAX_SSE_EVENT_BYTES", 1024 * 1024, low=1024, high=2**31, integer=True)
            ),
            max_staleness=env.number("ODOCK_MAX_STALENESS_SECONDS", 300.0, low=0.0, high=86400 * 30),
            upstream_pool_size=int(
                env.number("ODOCK_UPSTREAM_POOL_SIZE", 1000, low=1, high=10**6, integer=True)
            ),
            upstream_pool_per_host=int(
                env.number("ODOCK_UPSTREAM_POOL_PER_HOST", 256, low=0, high=10**6, integer=True)
            ),
            ready_file=Path(ready) if ready else None,
            metrics_listen=parse_address("ODOCK_DP_METRICS_LISTEN", metrics_listen)
            if metrics_listen
            else None,
            metrics_dir=Path(metrics_dir) if metrics_dir else None,
            timeouts=timeouts,
            cache=cache,
            usage=usage,
            limits=limits,
            routing=routing,
            proxies=_proxies(environ),
        )


def _proxies(environ: Mapping[str, str]) -> EnvironmentProxies | None:
    """The environment's egress proxies (docs/operations.md); SettingsError naming the variable, never its value."""
    from data_plane.upstream.proxy import EnvironmentProxies  # here: the upstream package imports this module

    try:
        proxies = EnvironmentProxies.from_environ(environ)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return proxies if proxies.configured else None


def process_environ() -> dict[str, str]:
    """A copy of this process's environment (read here only, to configure worker processes)."""
    return dict(os.environ)
