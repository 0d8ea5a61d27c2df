"""UsageService: usage totals (from the hourly rollups) and raw records, org-scoped."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane import validation
from control_plane.errors import InvalidArgument, NotFound
from control_plane.interceptors import current_principal
from control_plane.store.repositories import usage
from control_plane.usage import listing, records, totals
from odock.v1 import usage_pb2, usage_pb2_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]
MAX_ID = 128


def _id(field: str, value: str) -> str:
    """An id-like filter: at most 128 characters, no NUL (PostgreSQL text cannot hold one)."""
    if len(value) > MAX_ID:
        raise InvalidArgument(field, f"must be at most {MAX_ID} characters")
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL characters")
    return value


def _org_scope(org_id: str) -> str | None:
    """The org the caller asks about: required (and their own) for org admins, optional for the super-admin."""
    principal = current_principal()
    if not principal.is_super:
        validation.required("org_id", org_id)
    if org_id:
        principal.check_org(_id("org_id", org_id))
    return org_id or None


class UsageServicer(usage_pb2_grpc.UsageServiceServicer):
    """Answers usage queries; never writes (ingest is NodeService.ReportUsage)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def GetUsageTotals(
        self, request: usage_pb2.GetUsageTotalsRequest, context: Ctx
    ) -> usage_pb2.GetUsageTotalsResponse:
        org_id = _org_scope(request.org_id)
        _id("key_id", request.key_id)
        if request.model_name:
            validation.model_name("model_name", request.model_name)
        now = Timestamp()
        now.GetCurrentTime()
        query = totals.build_query(request, org_id, now)
        async with self._sessionmaker() as session:
            return await totals.run(session, query, request.page_token)

    async def ListUsageRecords(
        self, request: usage_pb2.ListUsageRecordsRequest, context: Ctx
    ) -> usage_pb2.ListUsageRecordsResponse:
        org_id = _org_scope(request.org_id)
        for field in ("key_id", "client_request_id", "request_id"):
            _id(field, getattr(request, field))
        if request.model_name:
            validation.model_name("model_name", request.model_name)
        query = listing.build_query(request, org_id)
        async with self._sessionmaker() as session:
            return await listing.run(session, query, request.page_token)

    async def GetUsageRecord(
        self, request: usage_pb2.GetUsageRecordRequest, context: Ctx
    ) -> usage_pb2.GetUsageRecordResponse:
        org_id = _org_scope(request.org_id)
        request_id = _id("request_id", validation.required("request_id", request.request_id))
        async with self._sessionmaker() as session:
            row = await usage.get_record(session, request_id)
        if row is None or (org_id is not None and row.org_id != org_id):
            raise NotFound(f"no usage record for request {request_id!r}")
        return usage_pb2.GetUsageRecordResponse(
            record=records.to_proto(row), receive_time=records.receive_timestamp(row)
        )
