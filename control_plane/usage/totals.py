"""Usage totals from the hourly rollups: one GROUP BY over (bucket, org?, key?,
model?) with outcomes pivoted into columns, so each group is one row and pages
are keyset pages over the group columns in their sort order."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.errors import InvalidArgument
from control_plane.store.repositories import pages, usage
from control_plane.usage.records import HOURS_PER_DAY, ROLLUP_COUNTERS, SECONDS_PER_HOUR
from odock.v1 import common_pb2, usage_pb2

OUTCOME_COLUMNS = (
    ("complete", common_pb2.OUTCOME_COMPLETE),
    ("partial", common_pb2.OUTCOME_PARTIAL),
    ("cancelled", common_pb2.OUTCOME_CANCELLED),
    ("error", common_pb2.OUTCOME_ERROR),
)
# Dimension -> rollup column, in the order groups are sorted.
DIMENSIONS = (
    (usage_pb2.USAGE_DIMENSION_ORG, "org_id"),
    (usage_pb2.USAGE_DIMENSION_KEY, "key_id"),
    (usage_pb2.USAGE_DIMENSION_MODEL, "model_name"),
)
_KNOWN_DIMENSIONS = frozenset(d for d, _ in DIMENSIONS)
_BUCKETS = frozenset(usage_pb2.UsageBucket.values())
# Width of a bucket in hours (TOTAL: no time grouping).
_BUCKET_HOURS: dict[int, int] = {usage_pb2.USAGE_BUCKET_HOUR: 1, usage_pb2.USAGE_BUCKET_DAY: HOURS_PER_DAY}


@dataclass(frozen=True)
class TotalsQuery:
    """A validated totals request. Hours are whole hours since the epoch, end exclusive."""

    org_id: str | None
    key_id: str | None
    model_name: str | None
    start_hour: int
    end_hour: int
    bucket: int  # HOUR, DAY or TOTAL (UNSPECIFIED resolved to HOUR)
    group_by: tuple[str, ...]  # rollup column names, in DIMENSIONS order
    page_size: int

    @property
    def scope(self) -> str:
        """Identifies the listing so a page token cannot continue a different one."""
        raw = json.dumps([self.org_id, self.key_id, self.model_name, self.start_hour, self.end_hour,
                          self.bucket, self.group_by])  # fmt: skip
        return "usage:" + hashlib.sha256(raw.encode("utf-8")).hexdigest()[:24]


def _hours(field: str, ts: Timestamp, *, round_up: bool, unit: int) -> int:
    seconds = ts.seconds
    if seconds < 0:
        raise InvalidArgument(field, "must not be before 1970-01-01T00:00:00Z")
    if seconds > 253_402_300_799 or not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidArgument(field, "out of range")
    hours = seconds // SECONDS_PER_HOUR
    if round_up and (seconds % SECONDS_PER_HOUR or ts.nanos):
        hours += 1
    if unit > 1:  # align to whole days
        hours = (hours + unit - 1) // unit * unit if round_up else hours // unit * unit
    return hours


def build_query(request: usage_pb2.GetUsageTotalsRequest, org_id: str | None, now: Timestamp) -> TotalsQuery:
    """Validate ``request`` (org access already checked) into a TotalsQuery."""
    bucket = request.bucket or usage_pb2.USAGE_BUCKET_HOUR
    if bucket not in _BUCKETS:
        raise InvalidArgument("bucket", f"unknown bucket {bucket}")
    if not request.HasField("start_time"):
        raise InvalidArgument("start_time", "required")
    unit = HOURS_PER_DAY if bucket == usage_pb2.USAGE_BUCKET_DAY else 1
    start = _hours("start_time", request.start_time, round_up=False, unit=unit)
    end_ts = request.end_time if request.HasField("end_time") else now
    end = _hours("end_time", end_ts, round_up=True, unit=unit)
    if (end_ts.seconds, end_ts.nanos) <= (request.start_time.seconds, request.start_time.nanos):
        raise InvalidArgument("end_time", "must be after start_time")
    dims = set()
    for value in request.group_by:
        if value not in _KNOWN_DIMENSIONS:
            raise InvalidArgument("group_by", f"unknown dimension {value} (use ORG, KEY or MODEL)")
        dims.add(value)
    size = request.page_size
    if size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return TotalsQuery(
        org_id=org_id, key_id=request.key_id or None, model_name=request.model_name or None,
        start_hour=start, end_hour=end, bucket=bucket,
        group_by=tuple(col for d, col in DIMENSIONS if d in dims), page_size=min(size or 50, 1000),
    )  # fmt: skip


def _decode_after(token: str, q: TotalsQuery, types: Sequence[type]) -> list[Any] | None:
    raw = pages.decode("page_token", token, q.scope)
    if raw is None:
        return None
    try:
        after = json.loads(raw)
    except ValueError:
        raise InvalidArgument("page_token", "malformed page token") from None
    if (not isinstance(after, list) or len(after) != len(types)
            or not all(type(v) is t for v, t in zip(after, types, strict=True))):  # fmt: skip
        raise InvalidArgument("page_token", "malformed page token")
    return after


def _timestamp_of_hour(hour: int) -> Timestamp:
    return Timestamp(seconds=hour * SECONDS_PER_HOUR)


async def run(session: AsyncSession, q: TotalsQuery, page_token: str) -> usage_pb2.GetUsageTotalsResponse:
    """One page of totals for ``q``."""
    bucket_hours = _BUCKET_HOURS.get(q.bucket)
    n_groups = (bucket_hours is not None) + len(q.group_by)
    types: list[type] = [int] * (bucket_hours is not None) + [str] * len(q.group_by)
    after = _decode_after(page_token, q, types)
    rows = await usage.rollup_totals(
        session, start_hour=q.start_hour, end_hour=q.end_hour,
        filters={"org_id": q.org_id, "key_id": q.key_id, "model_name": q.model_name},
        bucket_hours=bucket_hours, group_by=q.group_by, outcomes=[value for _, value in OUTCOME_COLUMNS],
        counters=ROLLUP_COUNTERS, after=after, limit=q.page_size + 1,
    )  # fmt: skip
    response = usage_pb2.GetUsageTotalsResponse(
        start_time=_timestamp_of_hour(q.start_hour), end_time=_timestamp_of_hour(q.end_hour)
    )
    if len(rows) > q.page_size:
        rows = rows[: q.page_size]
        last = list(rows[-1][:n_groups])
        response.next_page_token = pages.encode(q.scope, json.dumps(last))
    for row in rows:
        totals = _totals(q, row, n_groups)
        if totals is not None:
            response.totals.append(totals)
    return response


def _totals(q: TotalsQuery, row: Sequence[Any], n_groups: int) -> usage_pb2.UsageTotals | None:
    values = [int(v) if v is not None else None for v in row[n_groups:]]
    outcome_counts, requests, counters = values[: len(OUTCOME_COLUMNS)], values[len(OUTCOME_COLUMNS)], values[
        len(OUTCOME_COLUMNS) + 1 :]  # fmt: skip
    if not requests:
        return None  # an aggregate over no rows (TOTAL without grouping)
    group = list(row[:n_groups])
    hour = q.start_hour if q.bucket == usage_pb2.USAGE_BUCKET_TOTAL else group.pop(0)
    dims = dict(zip(q.group_by, group, strict=True))
    msg = usage_pb2.UsageTotals(
        start_time=_timestamp_of_hour(hour),
        org_id=dims.get("org_id", q.org_id or ""), key_id=dims.get("key_id", q.key_id or ""),
        model_name=dims.get("model_name", q.model_name or ""), requests=requests,
    )  # fmt: skip
    known = 0
    for (name, _), count in zip(OUTCOME_COLUMNS, outcome_counts, strict=True):
        setattr(msg.outcomes, name, count or 0)
        known += count or 0
    msg.outcomes.unspecified = requests - known
    for name, value in zip(ROLLUP_COUNTERS, counters, strict=True):
        setattr(msg, name, value or 0)
    return msg
