"""ORM rows: the control plane's schema, the single source Alembic migrations
are checked against. Constraints that matter (unique names, unique key
digests, credential references) live here, i.e. in the database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names so migrations are identical on both backends.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops tzinfo)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[str]: JSON()}


class OrgRow(Base):
    __tablename__ = "orgs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    tier: Mapped[str] = mapped_column(String(32))
    # Per-org overrides of the tier's limits; NULL = inherit from the tier.
    requests_per_minute: Mapped[int | None] = mapped_column(BigInteger)
    tokens_per_minute: Mapped[int | None] = mapped_column(BigInteger)
    monthly_token_quota: Mapped[int | None] = mapped_column(BigInteger)
    monthly_spend_cap_micros: Mapped[int | None] = mapped_column(BigInteger)
    outage_policy: Mapped[int] = mapped_column(SmallInteger, default=0)
    default_models: Mapped[dict[str, Any]] = mapped_column(default=dict)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow)


class CredentialRow(Base):
    """A provider key under envelope encryption: the secret is sealed with a
    per-row data key (DEK), the DEK is wrapped by the KEK named in kek_id.
    Both ciphertexts are bound to this row's id as associated data."""

    __tablename__ = "credentials"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    family: Mapped[int] = mapped_column(SmallInteger)
    last4: Mapped[str] = mapped_column(String(4))
    kek_id: Mapped[str] = mapped_column(String(64), index=True)
    wrapped_dek: Mapped[bytes] = mapped_column(LargeBinary)  # nonce || AES-GCM(KEK, DEK)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)  # nonce || AES-GCM(DEK, secret)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    rotate_time: Mapped[datetime | None] = mapped_column()


class ModelRow(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    family: Mapped[int] = mapped_column(SmallInteger)
    upstream_slug: Mapped[str] = mapped_column(String(256))
    base_url: Mapped[str] = mapped_column(String(2048))
    timeout_ms: Mapped[int] = mapped_column(Integer)
    # RESTRICT: a credential in use cannot be deleted (the service names the models first).
    credential_id: Mapped[str] = mapped_column(ForeignKey("credentials.id", ondelete="RESTRICT"), index=True)
    input_per_mtok_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    output_per_mtok_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_input_per_mtok_micros: Mapped[int | None] = mapped_column(BigInteger)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow)
    # The registry fields (issue 13, migration 0006; server defaults fill the rows that predate them).
    openai_compatible: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    context_window: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    max_output_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    # Comma-separated capability names in ModelCapabilities field order ("tools,streaming"; "" none).
    capabilities: Mapped[str] = mapped_column(String(128), default="", server_default=text("''"))
    # Other models' names tried when every deployment failed (migration 0007; NULL: none).
    fallbacks: Mapped[list[str] | None] = mapped_column()
    # Units other than tokens (issue 15, migration 0008): micro-USD per million seconds of input
    # audio / characters of input text; batch work's share of the prices (NULL: 50, OpenAI's).
    per_million_audio_seconds_micros: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    per_million_characters_micros: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    batch_price_percent: Mapped[int | None] = mapped_column(SmallInteger)


class ModelDeploymentRow(Base):
    """One upstream behind a model (migration 0007): every deployment of a model, position 0 first.
    The model row's upstream_slug, base_url, timeout_ms and credential_id repeat position 0's
    (store/repositories/deployments.py writes both in one transaction). A proxy URL holding a
    password is kept encrypted like a credential (envelope bound to this row's id); ``proxy_url``
    then holds it with the password masked, for display."""

    __tablename__ = "model_deployments"
    __table_args__ = (UniqueConstraint("model_id", "position"), UniqueConstraint("model_id", "name"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(SmallInteger)
    name: Mapped[str] = mapped_column(String(64))
    base_url: Mapped[str] = mapped_column(String(2048))
    # RESTRICT: a credential any deployment uses cannot be deleted.
    credential_id: Mapped[str] = mapped_column(ForeignKey("credentials.id", ondelete="RESTRICT"), index=True)
    upstream_slug: Mapped[str] = mapped_column(String(256))
    timeout_ms: Mapped[int] = mapped_column(Integer)
    weight: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(SmallInteger)
    proxy_url: Mapped[str] = mapped_column(String(2048))  # "", "direct" or the URL (password masked)
    proxy_kek_id: Mapped[str | None] = mapped_column(String(64))
    proxy_wrapped_dek: Mapped[bytes | None] = mapped_column(LargeBinary)
    proxy_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)  # the whole URL, password included
    ca_bundle: Mapped[str] = mapped_column(Text)


class VirtualKeyRow(Base):
    """Only HMAC-SHA-256(pepper, key) is stored. During a rotation grace period
    the previous digest also resolves, until previous_expire_time."""

    __tablename__ = "virtual_keys"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(63))
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    last4: Mapped[str] = mapped_column(String(4))
    previous_digest: Mapped[bytes | None] = mapped_column(LargeBinary(32), unique=True)
    previous_last4: Mapped[str | None] = mapped_column(String(4))
    previous_expire_time: Mapped[datetime | None] = mapped_column()
    all_models: Mapped[bool] = mapped_column(Boolean, default=False)
    models: Mapped[list[str]] = mapped_column(default=list)
    expire_time: Mapped[datetime | None] = mapped_column()
    requests_per_minute: Mapped[int | None] = mapped_column(BigInteger)
    tokens_per_minute: Mapped[int | None] = mapped_column(BigInteger)
    budget_micros: Mapped[int | None] = mapped_column(BigInteger)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    revoke_time: Mapped[datetime | None] = mapped_column()
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow)


class AdminTokenRow(Base):
    """Org-scoped admin token, stored as HMAC-SHA-256(pepper, token)."""

    __tablename__ = "admin_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    last4: Mapped[str] = mapped_column(String(4))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    revoke_time: Mapped[datetime | None] = mapped_column()


class RevisionCounterRow(Base):
    """One row. Incremented with UPDATE ... RETURNING inside each mutating
    transaction: the row lock serialises writers until commit, so revisions
    commit in order and without gaps, and a watcher can detect a missed one."""

    __tablename__ = "revision_counter"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger)


class ChangeRow(Base):
    """The invalidation log that Watch streams replay from."""

    __tablename__ = "changes"
    __table_args__ = (Index("ix_changes_time", "time"),)

    revision: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[int] = mapped_column(SmallInteger)  # odock.v1.InvalidationKind
    org_id: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str | None] = mapped_column(String(40))
    model_name: Mapped[str | None] = mapped_column(String(256))
    credential_id: Mapped[str | None] = mapped_column(String(40))
    time: Mapped[datetime] = mapped_column(default=utcnow)


class UsageRecordRow(Base):
    """One proxied request as a data plane reported it (odock.v1.UsageRecord).

    The request id is the primary key, so a replayed record is ignored whatever
    its attempt or node: ``attempt`` and ``node_id`` only say which delivery was
    stored. No foreign keys on purpose: usage outlives deleted orgs, keys and
    models, and a batch must never fail because one was deleted meanwhile. No
    model or pricing data is copied here; the cost was computed by the node.
    """

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_org_id_time", "org_id", "time"),
        Index("ix_usage_records_time", "time"),
        # Partial: most requests carry no client id. "IS NOT NULL" (not "!= ''") so SQLite's
        # planner can prove that "client_request_id = ?" implies it and use the index.
        Index(
            "ix_usage_records_client_request_id",
            "client_request_id",
            sqlite_where=text("client_request_id IS NOT NULL"),
            postgresql_where=text("client_request_id IS NOT NULL"),
        ),
    )

    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)
    node_id: Mapped[str] = mapped_column(String(128))
    org_id: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str] = mapped_column(String(40))  # '' when unknown
    model_name: Mapped[str] = mapped_column(String(256))  # '' when unknown
    upstream_slug: Mapped[str] = mapped_column(String(256))
    family: Mapped[int] = mapped_column(SmallInteger)
    endpoint: Mapped[str] = mapped_column(String(128))
    http_status: Mapped[int] = mapped_column(SmallInteger)
    outcome: Mapped[int] = mapped_column(SmallInteger)  # odock.v1.Outcome
    streamed: Mapped[bool] = mapped_column(Boolean)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cached_input_tokens: Mapped[int] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger)
    cost_picos: Mapped[int] = mapped_column(BigInteger)
    latency_us: Mapped[int] = mapped_column(BigInteger)
    upstream_latency_us: Mapped[int] = mapped_column(BigInteger)
    time_to_first_byte_us: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[datetime] = mapped_column()  # taken on the data plane
    flags: Mapped[int] = mapped_column(BigInteger)
    receive_time: Mapped[datetime] = mapped_column()  # stored by the control plane
    # The client's x-request-id (NULL: none); the error code the client got (NULL: no error).
    client_request_id: Mapped[str | None] = mapped_column(String(128))
    error_code: Mapped[str | None] = mapped_column(String(64))
    # Issue 14 (migration 0007; NULL on older rows): the deployment that answered or was tried
    # last, the upstream attempts made, the model asked for when a fallback answered.
    deployment: Mapped[str | None] = mapped_column(String(64))
    upstream_attempts: Mapped[int | None] = mapped_column(SmallInteger)
    requested_model: Mapped[str | None] = mapped_column(String(256))
    # Issue 15 (migration 0008; NULL on older rows): milliseconds of input audio and characters
    # of input text billed, and the provider's batch id of a batch's usage record.
    audio_milliseconds: Mapped[int | None] = mapped_column(BigInteger)
    input_characters: Mapped[int | None] = mapped_column(BigInteger)
    batch_id: Mapped[str | None] = mapped_column(String(128))


class UsageRollupRow(Base):
    """Hourly totals per (org, hour, key, model, outcome), bumped in the same
    transaction that inserts the records they count, and only for records
    actually inserted, so replays never count twice. ``hour`` is whole hours
    since the Unix epoch (UTC): day buckets are ``hour // 24`` on both backends."""

    __tablename__ = "usage_rollups"
    __table_args__ = (Index("ix_usage_rollups_hour", "hour"),)  # retention prunes by hour

    org_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    hour: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(256), primary_key=True)
    outcome: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    requests: Mapped[int] = mapped_column(BigInteger)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cached_input_tokens: Mapped[int] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger)
    cost_picos: Mapped[int] = mapped_column(BigInteger)
    # Migration 0008 (issue 15): 0 on rollups that predate it.
    audio_milliseconds: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    input_characters: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))


class LimitCounterRow(Base):
    """How much of one limit window is spoken for: ``settled`` (spent, as reported
    by returned leases) plus ``outstanding`` (live leases). A grant is a
    conditional UPDATE that keeps ``settled + outstanding + grant <= limit``, so
    it is atomic across control-plane replicas and survives restarts.
    ``scope_id`` is an org id or a key id; ``metric`` an odock.v1.LimitMetric."""

    __tablename__ = "limit_counters"
    __table_args__ = (Index("ix_limit_counters_window_end", "window_end"),)

    scope_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    metric: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    org_id: Mapped[str] = mapped_column(String(40))
    settled: Mapped[int] = mapped_column(BigInteger)
    outstanding: Mapped[int] = mapped_column(BigInteger)
    exhausted: Mapped[bool] = mapped_column(Boolean, default=False)
    window_end: Mapped[datetime | None] = mapped_column()  # NULL: never ends (key budget)
    update_time: Mapped[datetime] = mapped_column(default=utcnow)


class LimitLeaseRow(Base):
    """A live lease of a monthly or lifetime window (per-minute leases are not
    returned, so they have no row). Returned: deleted, its ``used`` settled.
    Expired unreturned: counted as spent in full (the node presumably died)."""

    __tablename__ = "limit_leases"
    __table_args__ = (Index("ix_limit_leases_expire_time", "expire_time"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(128))
    scope_id: Mapped[str] = mapped_column(String(40))
    metric: Mapped[int] = mapped_column(SmallInteger)
    window: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)
    expire_time: Mapped[datetime] = mapped_column()


class ProviderObjectRow(Base):
    """A provider-side file or batch created through the gateway, and the org that owns it
    (issue 15, migration 0009). The provider's id is unique per kind; an org sees only its own
    rows. ``snapshot`` is the provider's latest JSON of the object (<= 64 KiB), ``created_at``
    the provider's (unix seconds: lists are ordered by it, then by id)."""

    __tablename__ = "provider_objects"
    __table_args__ = (Index("ix_provider_objects_org_listing", "org_id", "kind", "created_at", "object_id"),)

    kind: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)  # odock.v1.ObjectKind
    object_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"))
    key_id: Mapped[str] = mapped_column(String(40))
    model_name: Mapped[str] = mapped_column(String(256))
    deployment: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[int] = mapped_column(BigInteger)
    snapshot: Mapped[bytes] = mapped_column(LargeBinary)
    usage_recorded: Mapped[bool] = mapped_column(Boolean, default=False)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    update_time: Mapped[datetime] = mapped_column(default=utcnow)
