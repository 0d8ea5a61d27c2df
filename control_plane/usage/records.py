"""Usage records between the wire and the table: validation of what a node
reported (``odock.v1.UsageRecord`` -> row values) and back (row -> proto)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from control_plane import convert
from control_plane.store.tables import UsageRecordRow
from odock.v1 import node_pb2

SECONDS_PER_HOUR = 3600
HOURS_PER_DAY = 24
# Latest instant a Timestamp (and a datetime) can hold: 9999-12-31T23:59:59Z.
MAX_SECONDS = 253_402_300_799
_INT32_MAX = 2**31 - 1
# Per-record ceiling for counters: far beyond any real request, and it keeps
# hourly sums of many records inside int64 (SQLite would silently turn an
# overflowing sum into a float; PostgreSQL would fail the whole batch).
COUNTER_MAX = 2**53
_SMALLINT_MAX = 2**15 - 1

# Column -> longest accepted value (the column's length).
_STRINGS = {
    "request_id": 128,
    "node_id": 128,
    "org_id": 40,
    "key_id": 40,
    "model_name": 256,
    "upstream_slug": 256,
    "endpoint": 128,
}
# Non-negative int64 counters copied as they are.
_COUNTERS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "cost_picos",
    "latency_us",
    "upstream_latency_us",
    "time_to_first_byte_us",
)
# Small enums / codes: proto3 keeps unknown enum numbers, the column is a smallint.
_SMALL = ("family", "outcome", "http_status")
# Optional trace strings: the longest kept and what they may hold. A value that does not
# fit is dropped (stored as NULL), never a reason to lose the record's usage.
_TRACE = {"client_request_id": 128, "error_code": 64}
_PRINTABLE_ASCII = re.compile(r"[!-~]+")
# Issue 14's fields, kept the same way (a value that does not fit is stored as NULL): a
# deployment name as the control plane allows it, a model name, at most 100 attempts.
_DEPLOYMENT = re.compile(r"[a-z0-9._-]{1,64}")
MAX_UPSTREAM_ATTEMPTS = 100
# Issue 15's units (migration 0008): counters like the tokens, NULL on older rows (read as 0).
UNIT_COUNTERS = ("audio_milliseconds", "input_characters")
ROLLUP_COUNTERS = ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens", "cost_picos",
                   *UNIT_COUNTERS)  # fmt: skip
# A batch's usage record names its provider batch id (printable ASCII, at most 128; else NULL).
MAX_BATCH_ID = 128


class BadRecord(ValueError):
    """A record that can never be stored; the message names the field."""


@dataclass(frozen=True)
class Prepared:
    """A validated record: its column values and its rollup hour."""

    values: dict[str, Any]
    hour: int


def _string(name: str, value: str) -> str:
    if len(value) > _STRINGS[name]:
        raise BadRecord(f"{name}: longer than {_STRINGS[name]} characters")
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL; refusing here keeps one record from failing a batch.
        raise BadRecord(f"{name}: contains a NUL character")
    return value


def _model_name(value: str) -> str | None:
    if not value or len(value) > _STRINGS["model_name"]:
        return None
    if any(c.isspace() or not c.isprintable() for c in value):  # NUL included
        return None
    return value


def prepare(
    record: node_pb2.UsageRecord, batch_node_id: str, receive_time: datetime, batch_attempt: int = 0
) -> Prepared:
    """Column values for ``record``; BadRecord when it cannot be stored as is.

    ``batch_node_id`` and ``batch_attempt`` stand in for a record's own node id and attempt when it
    has none (the batch's fields).
    """
    if not record.request_id:
        raise BadRecord("request_id: required")
    if not record.org_id:
        raise BadRecord("org_id: required")
    if not record.HasField("time"):
        raise BadRecord("time: required")
    seconds = record.time.seconds
    if not 0 <= seconds <= MAX_SECONDS or not 0 <= record.time.nanos < 1_000_000_000:
        raise BadRecord("time: out of range")
    values: dict[str, Any] = {
        name: _string(name, getattr(record, name)) for name in _STRINGS if name != "node_id"
    }
    values["node_id"] = _string("node_id", record.node_id or batch_node_id)
    for name in (*_COUNTERS, *UNIT_COUNTERS):
        value = getattr(record, name)
        if value < 0:
            raise BadRecord(f"{name}: negative")
        if value > COUNTER_MAX:
            raise BadRecord(f"{name}: implausibly large")
        values[name] = value
    for name in _SMALL:
        value = int(getattr(record, name))
        if not 0 <= value <= _SMALLINT_MAX:
            raise BadRecord(f"{name}: out of range")
        values[name] = value
    attempt = record.attempt or batch_attempt
    if attempt > _INT32_MAX:
        raise BadRecord("attempt: out of range")
    values["attempt"] = attempt
    values["streamed"] = record.streamed
    values["flags"] = record.flags
    for name, limit in _TRACE.items():
        value = getattr(record, name)
        values[name] = value if len(value) <= limit and _PRINTABLE_ASCII.fullmatch(value) else None
    values["deployment"] = record.deployment if _DEPLOYMENT.fullmatch(record.deployment) else None
    attempts = record.upstream_attempts
    values["upstream_attempts"] = attempts if attempts <= MAX_UPSTREAM_ATTEMPTS else None
    values["requested_model"] = _model_name(record.requested_model)
    batch_id = record.batch_id
    values["batch_id"] = batch_id if len(batch_id) <= MAX_BATCH_ID and _PRINTABLE_ASCII.fullmatch(batch_id) else None
    values["time"] = record.time.ToDatetime(tzinfo=UTC)
    values["receive_time"] = receive_time
    return Prepared(values=values, hour=seconds // SECONDS_PER_HOUR)


def to_proto(row: UsageRecordRow) -> node_pb2.UsageRecord:
    """The stored record as the node reported it (time at microsecond precision)."""
    msg = node_pb2.UsageRecord(
        request_id=row.request_id, attempt=row.attempt, node_id=row.node_id, org_id=row.org_id,
        key_id=row.key_id, model_name=row.model_name, upstream_slug=row.upstream_slug,
        family=row.family,  # type: ignore[arg-type]
        endpoint=row.endpoint, http_status=row.http_status,
        outcome=row.outcome,  # type: ignore[arg-type]
        streamed=row.streamed, flags=row.flags,
        client_request_id=row.client_request_id or "", error_code=row.error_code or "",
        deployment=row.deployment or "", upstream_attempts=row.upstream_attempts or 0,
        requested_model=row.requested_model or "", audio_milliseconds=row.audio_milliseconds or 0,
        input_characters=row.input_characters or 0, batch_id=row.batch_id or "",
    )  # fmt: skip
    for name in _COUNTERS:
        setattr(msg, name, getattr(row, name))
    msg.time.CopyFrom(convert.timestamp(row.time))
    return msg


def receive_timestamp(row: UsageRecordRow) -> Timestamp:
    """When the control plane stored the row."""
    return convert.timestamp(row.receive_time)
