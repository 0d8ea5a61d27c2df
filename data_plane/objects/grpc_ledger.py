"""The node's :class:`~data_plane.objects.ledger.Ledger`: the control plane's object RPCs over the
node's own channel (``ControlPlaneLink``: node token, TLS, replicas, reconnects).

Used by the files and batches endpoints only, never on the chat path. Every call is bounded
by ``ODOCK_CP_RPC_TIMEOUT_SECONDS``. A definite "not this org's" (NOT_FOUND, or an id the
control plane refuses as malformed: no object can have it) is ``None`` / an empty page;
anything else that is not an answer (unreachable, timed out, refused) is ``LedgerUnavailable``.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Protocol

import grpc

from data_plane.errors import clip
from data_plane.objects.ledger import MAX_SNAPSHOT_BYTES, Kind, LedgerUnavailable, OwnedObject, Page
from odock.v1 import node_pb2, node_pb2_grpc

log = logging.getLogger("odock.data_plane.objects")

MAX_LIST_LIMIT = 10_000
# Answers meaning "no such object of this org": the caller gets None, never an error.
_ABSENT = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT})


class ObjectsLink(Protocol):
    """What the ledger needs of the node's control-plane link (``governance.link.ControlPlaneLink``)."""

    calls: Counter[str]

    @property
    def stub(self) -> node_pb2_grpc.NodeServiceAsyncStub: ...

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]: ...


def to_proto(obj: OwnedObject) -> node_pb2.ProviderObject:
    return node_pb2.ProviderObject(
        kind=node_pb2.ObjectKind.ValueType(obj.kind), id=obj.id, org_id=obj.org_id, key_id=obj.key_id,
        model_name=obj.model_name, deployment=obj.deployment, purpose=obj.purpose, created_at=obj.created_at,
        # An oversized snapshot is not sent (the stored one is kept): the object's ownership matters, not it.
        snapshot=obj.snapshot if len(obj.snapshot) <= MAX_SNAPSHOT_BYTES else b"",
    )  # fmt: skip


def from_proto(msg: node_pb2.ProviderObject) -> OwnedObject:
    return OwnedObject(
        kind=Kind(msg.kind), id=msg.id, org_id=msg.org_id, key_id=msg.key_id, model_name=msg.model_name,
        deployment=msg.deployment, purpose=msg.purpose, created_at=msg.created_at, snapshot=msg.snapshot,
        usage_recorded=msg.usage_recorded,
    )  # fmt: skip


class GrpcLedger:
    """Ownership of provider objects, asked of the control plane on every call (nothing cached:
    an object deleted or claimed through another node is seen at once)."""

    def __init__(self, link: ObjectsLink, timeout: float) -> None:
        self._link = link
        self._timeout = timeout

    def _failed(self, name: str, exc: grpc.aio.AioRpcError) -> None:
        """Return (the object is absent) for a definite "none of this org's"; else raise LedgerUnavailable."""
        if exc.code() not in _ABSENT:
            raise LedgerUnavailable(f"{name}: {exc.code().name}") from None
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            # The node checks ids by the same rule first, so this means the two rules disagree:
            # answered like a missing object, but said, since it is a bug to fix.
            log.warning("%s: the control plane refused the request as invalid (%s); answered as absent",
                        name, clip(exc.details() or ""))  # fmt: skip

    async def put(self, obj: OwnedObject) -> OwnedObject | None:
        if obj.kind not in (Kind.FILE, Kind.BATCH) or not obj.id:
            raise ValueError("an object needs a kind and an id")
        self._link.calls["PutObject"] += 1
        request = node_pb2.PutObjectRequest(object=to_proto(obj))
        try:
            got = await self._link.stub.PutObject(request, metadata=self._link.metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None  # another org owns the id
            # A refused object (e.g. a provider id over 128 characters) cannot be recorded: the
            # caller answers like an outage rather than hand out an object nobody owns.
            raise LedgerUnavailable(f"PutObject: {exc.code().name}") from None
        return from_proto(got)

    async def get(self, org_id: str, kind: Kind, object_id: str) -> OwnedObject | None:
        self._link.calls["GetObject"] += 1
        try:
            got = await self._link.stub.GetObject(
                _ref(org_id, kind, object_id), metadata=self._link.metadata, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            self._failed("GetObject", exc)
            return None
        return from_proto(got)

    async def list(
        self, org_id: str, kind: Kind, *, purpose: str = "", after: str = "", limit: int = 20, ascending: bool = False
    ) -> Page:
        self._link.calls["ListObjects"] += 1
        request = node_pb2.ListObjectsRequest(
            org_id=org_id, kind=node_pb2.ObjectKind.ValueType(kind), purpose=purpose, after=after,
            limit=max(1, min(limit, MAX_LIST_LIMIT)), ascending=ascending,
        )  # fmt: skip
        try:
            got = await self._link.stub.ListObjects(request, metadata=self._link.metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            self._failed("ListObjects", exc)
            return Page((), False)  # a malformed cursor or purpose: nothing of this org matches it
        return Page(tuple(from_proto(o) for o in got.objects), got.has_more)

    async def delete(self, org_id: str, kind: Kind, object_id: str) -> OwnedObject | None:
        self._link.calls["DeleteObject"] += 1
        try:
            got = await self._link.stub.DeleteObject(
                _ref(org_id, kind, object_id), metadata=self._link.metadata, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            self._failed("DeleteObject", exc)
            return None
        return from_proto(got)

    async def claim_batch_usage(self, org_id: str, batch_id: str) -> bool:
        self._link.calls["ClaimBatchUsage"] += 1
        try:
            got = await self._link.stub.ClaimBatchUsage(
                _ref(org_id, Kind.BATCH, batch_id), metadata=self._link.metadata, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            self._failed("ClaimBatchUsage", exc)
            return False  # not this org's batch: nothing to record
        return got.claimed


def _ref(org_id: str, kind: Kind, object_id: str) -> node_pb2.GetObjectRequest:
    return node_pb2.GetObjectRequest(org_id=org_id, kind=node_pb2.ObjectKind.ValueType(kind), id=object_id)
