"""The control plane's frozen settings, built from the environment in one place.

Every secret ``X`` may instead be given as ``X_FILE`` (a path to a file holding
it). Bad or missing values raise :class:`SettingsError` with a one-line message
that names the variable and never echoes a secret.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from odock import egress, envconfig
from odock.envconfig import EnvReader as _Env
from odock.envconfig import parse_address, parse_base64, parse_pepper

# Raised for every bad setting; defined in odock.envconfig, re-exported as this plane's own.
SettingsError = envconfig.SettingsError

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_DATABASE_URL = "sqlite:///./odock.db"
DEFAULT_DB_CHECK_SECONDS = 5.0
KEK_BYTES = 32
MIN_TOKEN_CHARS = 32
_KID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Settings:
    """Control-plane configuration (see docs/architecture.md for the variables)."""

    listen: str = DEFAULT_LISTEN
    # May carry a password: kept out of repr().
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    # "kid1=BASE64,kid2=BASE64": the last one encrypts, all decrypt (Keyring.from_spec).
    keks_spec: str = field(default="", repr=False)
    kek_ids: tuple[str, ...] = ()
    key_pepper: bytes = field(default=b"", repr=False)
    admin_token: str = field(default="", repr=False)
    node_tokens: tuple[str, ...] = field(default=(), repr=False)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    migrate: bool = True
    ready_file: Path | None = None
    grace_seconds: float = 10.0
    heartbeat_seconds: float = 5.0
    # Limits (docs/limits.md): a "minute" of the per-minute limits, in seconds
    # (tests shrink it); how long a monthly/budget lease lives unrenewed; the
    # largest share of what is left that one lease may take.
    limit_minute_seconds: float = 60.0
    lease_ttl_seconds: float = 60.0
    lease_fraction: float = 0.25
    # Usage (docs/operations.md): ingest transactions at once (governance RPCs go first);
    # days raw records and hourly rollups are kept (0 = forever); how often the pruner runs.
    usage_ingest_concurrency: int = 2
    # "idle": usage ingestion and pruning threads under SCHED_IDLE (store/background.py), for a
    # control plane sharing its cores with latency-sensitive processes; "normal" otherwise.
    usage_ingest_cpu_priority: str = "normal"
    usage_retention_days: float = 30.0
    usage_rollup_retention_days: float = 400.0
    usage_prune_seconds: float = 600.0
    # HOST:PORT of the Prometheus /metrics listener; None = no listener.
    metrics_listen: str | None = None
    db_check_seconds: float = DEFAULT_DB_CHECK_SECONDS
    # ODOCK_EGRESS_ALLOW: CIDRs and host names model upstreams may use beyond public addresses
    # (odock.egress). Only the operator sets this process's environment, so org admins cannot widen it.
    egress_allow: tuple[str, ...] = ()

    @property
    def egress(self) -> egress.EgressPolicy:
        """The egress policy of ``egress_allow`` (parsed once per distinct list)."""
        return egress.policy_for(self.egress_allow)

    @property
    def tls(self) -> bool:
        """True when the gRPC port serves TLS."""
        return self.tls_cert_file is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build and validate settings from an environment mapping."""
        env = _Env(environ)
        keks_spec, kek_ids = _parse_keks(env.secret("ODOCK_KEKS"))
        pepper = parse_pepper(env.secret("ODOCK_KEY_PEPPER"))
        admin = env.secret("ODOCK_ADMIN_TOKEN")
        if len(admin) < MIN_TOKEN_CHARS or any(c.isspace() for c in admin):
            raise SettingsError(
                f"ODOCK_ADMIN_TOKEN: must be at least {MIN_TOKEN_CHARS} characters without whitespace"
            )
        nodes = tuple(t.strip() for t in env.secret("ODOCK_NODE_TOKENS").split(",") if t.strip())
        if not nodes:
            raise SettingsError("ODOCK_NODE_TOKENS: at least one node token is required")
        for i, tok in enumerate(nodes, 1):
            if len(tok) < MIN_TOKEN_CHARS or any(c.isspace() for c in tok):
                raise SettingsError(
                    f"ODOCK_NODE_TOKENS: token #{i} must be at least {MIN_TOKEN_CHARS} characters"
                    " without whitespace"
                )
        if admin in nodes:
            raise SettingsError("ODOCK_NODE_TOKENS: a node token must differ from ODOCK_ADMIN_TOKEN")
        cert = env.path("ODOCK_TLS_CERT_FILE")
        key = env.path("ODOCK_TLS_KEY_FILE")
        ca = env.path("ODOCK_TLS_CLIENT_CA_FILE")
        if (cert is None) != (key is None):
            raise SettingsError("ODOCK_TLS_CERT_FILE and ODOCK_TLS_KEY_FILE must be set together")
        if ca is not None and cert is None:
            raise SettingsError("ODOCK_TLS_CLIENT_CA_FILE: mutual TLS needs ODOCK_TLS_CERT_FILE too")
        migrate = env.plain("ODOCK_MIGRATE", "auto").lower()
        if migrate not in ("auto", "off"):
            raise SettingsError("ODOCK_MIGRATE: must be 'auto' or 'off'")
        ready = env.plain("ODOCK_READY_FILE", "")
        metrics = env.plain("ODOCK_CP_METRICS_LISTEN", "")
        try:
            egress_allow = egress.parse_spec(env.plain("ODOCK_EGRESS_ALLOW", ""))
        except egress.EgressPolicyError as exc:
            raise SettingsError(f"ODOCK_EGRESS_ALLOW: {exc}") from None
        return cls(
            listen=parse_address("ODOCK_CP_LISTEN", env.plain("ODOCK_CP_LISTEN", DEFAULT_LISTEN)),
            database_url=_database_url(env),
            keks_spec=keks_spec,
            kek_ids=kek_ids,
            key_pepper=pepper,
            admin_token=admin,
            node_tokens=nodes,
            tls_cert_file=cert,
            tls_key_file=key,
            tls_client_ca_file=ca,
            migrate=migrate == "auto",
            ready_file=Path(ready) if ready else None,
            grace_seconds=env.number("ODOCK_GRACE_SECONDS", 10.0, low=0.0, high=3600.0),
            heartbeat_seconds=env.number("ODOCK_HEARTBEAT_SECONDS", 5.0, low=0.05, high=3600.0),
            limit_minute_seconds=env.number("ODOCK_LIMIT_MINUTE_SECONDS", 60.0, low=0.5, high=3600.0),
            lease_ttl_seconds=env.number("ODOCK_LEASE_TTL_SECONDS", 60.0, low=1.0, high=86400.0),
            lease_fraction=env.number("ODOCK_LEASE_FRACTION", 0.25, low=0.01, high=1.0),
            **_usage_settings(env),
            metrics_listen=parse_address("ODOCK_CP_METRICS_LISTEN", metrics) if metrics else None,
            db_check_seconds=env.number(
                "ODOCK_DB_CHECK_SECONDS", DEFAULT_DB_CHECK_SECONDS, low=0.05, high=3600.0
            ),
            egress_allow=egress_allow,
        )


class _UsageSettings(TypedDict):
    usage_ingest_concurrency: int
    usage_ingest_cpu_priority: str
    usage_retention_days: float
    usage_rollup_retention_days: float
    usage_prune_seconds: float


def _usage_settings(env: _Env) -> _UsageSettings:
    records = env.number("ODOCK_USAGE_RETENTION_DAYS", 30.0, low=0.0, high=36500.0)
    rollups = env.number("ODOCK_USAGE_ROLLUP_RETENTION_DAYS", 400.0, low=0.0, high=36500.0)
    # Rollups seed the monthly limit counters and serve totals: they must outlive a month and the records.
    if rollups and (rollups < 35 or (records == 0 or rollups < records)):
        raise SettingsError(
            "ODOCK_USAGE_ROLLUP_RETENTION_DAYS: must be 0 (keep forever) or at least 35"
            " and at least ODOCK_USAGE_RETENTION_DAYS"
        )
    cpu_priority = env.plain("ODOCK_USAGE_INGEST_CPU_PRIORITY", "normal").lower()
    if cpu_priority not in ("normal", "idle"):
        raise SettingsError("ODOCK_USAGE_INGEST_CPU_PRIORITY: must be 'normal' or 'idle'")
    return _UsageSettings(
        usage_ingest_concurrency=int(env.number("ODOCK_USAGE_INGEST_CONCURRENCY", 2, low=1, high=64, integer=True)),
        usage_ingest_cpu_priority=cpu_priority,
        usage_retention_days=records,
        usage_rollup_retention_days=rollups,
        usage_prune_seconds=env.number("ODOCK_USAGE_PRUNE_SECONDS", 600.0, low=0.05, high=86400.0),
    )


def database_url_from_env(environ: Mapping[str, str]) -> str:
    """Only the database URL (ODOCK_DATABASE_URL or ODOCK_DATABASE_URL_FILE), for ``control-plane migrate``."""
    return _database_url(_Env(environ))


def _database_url(env: _Env) -> str:
    # A URL with a password is a secret, so it may come from a file; unlike the
    # other secrets it is optional (the SQLite default needs none).
    path = env.path("ODOCK_DATABASE_URL_FILE")
    direct = env.plain("ODOCK_DATABASE_URL", "")
    if path is not None and direct:
        raise SettingsError(
            "ODOCK_DATABASE_URL: set either ODOCK_DATABASE_URL or ODOCK_DATABASE_URL_FILE, not both"
        )
    if path is not None:
        try:
            direct = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise SettingsError(f"ODOCK_DATABASE_URL_FILE: cannot read {path}: {reason}") from None
        if not direct:
            raise SettingsError(f"ODOCK_DATABASE_URL_FILE: {path} is empty")
    return _parse_db_url(direct or DEFAULT_DATABASE_URL)


def _parse_keks(spec: str) -> tuple[str, tuple[str, ...]]:
    ids: list[str] = []
    parts: list[str] = []
    for i, item in enumerate((p.strip() for p in spec.split(",")), 1):
        if not item:
            continue
        kid, sep, material = item.partition("=")
        kid = kid.strip()
        if not sep or not _KID.match(kid):
            raise SettingsError(f"ODOCK_KEKS: entry #{i} must look like ID=BASE64 (ID: letters, digits, ._-)")
        if kid in ids:
            raise SettingsError(f"ODOCK_KEKS: duplicate KEK id {kid!r}")
        raw = parse_base64(material)
        if raw is None or len(raw) != KEK_BYTES:
            raise SettingsError(f"ODOCK_KEKS: KEK {kid!r} must be {KEK_BYTES} bytes, base64-encoded")
        ids.append(kid)
        parts.append(f"{kid}={base64.b64encode(raw).decode('ascii')}")
    if not ids:
        raise SettingsError("ODOCK_KEKS: at least one KEK (ID=BASE64) is required")
    return ",".join(parts), tuple(ids)


def _parse_db_url(value: str) -> str:
    scheme = value.partition(":")[0].lower()
    if not scheme.startswith(("sqlite", "postgres")):
        raise SettingsError("ODOCK_DATABASE_URL: must be sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
    return value
