"""Raw usage records by filter (UsageService.ListUsageRecords): newest first, keyset pages
over (time, request_id) so a page costs one index range scan however deep it is."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.errors import InvalidArgument
from control_plane.store.repositories import pages, usage
from control_plane.usage.records import MAX_SECONDS, to_proto
from odock.v1 import usage_pb2

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class ListQuery:
    """A validated listing (org access already checked; ids already bounded)."""

    org_id: str | None
    key_id: str | None
    model_name: str | None
    start: datetime | None
    end: datetime | None
    client_request_id: str | None
    request_id: str | None
    page_size: int

    @property
    def scope(self) -> str:
        """Identifies the listing so a page token cannot continue a different one."""
        raw = json.dumps([self.org_id, self.key_id, self.model_name, _iso(self.start), _iso(self.end),
                          self.client_request_id, self.request_id])  # fmt: skip
        return "usage-records:" + hashlib.sha256(raw.encode("utf-8")).hexdigest()[:24]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _time(field: str, request: usage_pb2.ListUsageRecordsRequest) -> datetime | None:
    if not request.HasField(field):  # type: ignore[arg-type]
        return None
    ts: Timestamp = getattr(request, field)
    if not 0 <= ts.seconds <= MAX_SECONDS or not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidArgument(field, "out of range")
    return ts.ToDatetime(tzinfo=UTC)


def build_query(request: usage_pb2.ListUsageRecordsRequest, org_id: str | None) -> ListQuery:
    """Validate ``request`` into a ListQuery (string filters are checked by the servicer)."""
    start, end = _time("start_time", request), _time("end_time", request)
    if start is not None and end is not None and end <= start:
        raise InvalidArgument("end_time", "must be after start_time")
    if request.page_size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return ListQuery(
        org_id=org_id, key_id=request.key_id or None, model_name=request.model_name or None,
        start=start, end=end, client_request_id=request.client_request_id or None,
        request_id=request.request_id or None,
        page_size=min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
    )  # fmt: skip


def _decode_after(token: str, q: ListQuery) -> tuple[datetime, str] | None:
    raw = pages.decode("page_token", token, q.scope)
    if raw is None:
        return None
    try:
        after = json.loads(raw)
        when, request_id = after
        if not isinstance(when, str) or not isinstance(request_id, str):
            raise TypeError(when)
        moment = datetime.fromisoformat(when)
        if moment.tzinfo is None:
            raise ValueError
    except (ValueError, TypeError):
        raise InvalidArgument("page_token", "malformed page token") from None
    return moment, request_id


async def run(session: AsyncSession, q: ListQuery, page_token: str) -> usage_pb2.ListUsageRecordsResponse:
    """One page of records matching ``q``, newest first."""
    after = _decode_after(page_token, q)
    filters = {"org_id": q.org_id, "key_id": q.key_id, "model_name": q.model_name,
               "client_request_id": q.client_request_id, "request_id": q.request_id}  # fmt: skip
    rows = await usage.records_page(
        session, filters=filters, start=q.start, end=q.end, after=after, limit=q.page_size + 1
    )
    response = usage_pb2.ListUsageRecordsResponse()
    if len(rows) > q.page_size:
        rows = rows[: q.page_size]
        last = rows[-1]
        response.next_page_token = pages.encode(q.scope, json.dumps([last.time.isoformat(), last.request_id]))
    response.records.extend(to_proto(row) for row in rows)
    return response
