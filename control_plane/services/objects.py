"""The NodeService's object RPCs (issue 15): who owns each provider file and batch.

Nodes report the objects they create through a key (PutObject) and ask before serving
one (GetObject, ListObjects, DeleteObject); a batch's usage is recorded by the one node
that wins ClaimBatchUsage. Every call names the caller's org: another org's object is
NOT_FOUND exactly like a missing one, and never appears in its lists. Validation errors
are INVALID_ARGUMENT ("field: what is wrong"); the interceptor maps them.
"""

from __future__ import annotations

from control_plane.errors import InvalidArgument, NotFound
from control_plane.services import Deps
from control_plane.store.repositories import orgs
from control_plane.store.repositories import provider_objects as repo
from control_plane.store.tables import ProviderObjectRow
from odock.v1 import node_pb2

MAX_ID_CHARS = 128
MAX_SNAPSHOT_BYTES = 64 * 1024
MAX_LIST_LIMIT = 10_000
DEFAULT_LIST_LIMIT = 20
_KINDS = frozenset({node_pb2.OBJECT_KIND_FILE, node_pb2.OBJECT_KIND_BATCH})
# Column widths (tables.ProviderObjectRow): longer values are refused, never truncated.
_WIDTHS = {"org_id": 40, "key_id": 40, "model_name": 256, "deployment": 64, "purpose": 128}


def _object_id(field: str, value: str, *, required: bool = True) -> str:
    """A provider id: 1..128 printable ASCII characters, no spaces (file-..., batch_...)."""
    if not value:
        if required:
            raise InvalidArgument(field, "required")
        return value
    if len(value) > MAX_ID_CHARS:
        raise InvalidArgument(field, f"at most {MAX_ID_CHARS} characters")
    if not all("!" <= c <= "~" for c in value):
        raise InvalidArgument(field, "printable ASCII characters only, no spaces")
    return value


def _kind(value: int) -> int:
    if value not in _KINDS:
        raise InvalidArgument("kind", "must be OBJECT_KIND_FILE or OBJECT_KIND_BATCH")
    return value


def _text(field: str, value: str, *, required: bool = False, prefix: str = "") -> str:
    if required and not value:
        raise InvalidArgument(prefix + field, "required")
    if len(value) > _WIDTHS[field]:
        raise InvalidArgument(prefix + field, f"at most {_WIDTHS[field]} characters")
    if not value.isprintable():
        raise InvalidArgument(prefix + field, "control characters are not allowed")
    return value


def _ref(request: node_pb2.GetObjectRequest) -> tuple[str, int, str]:
    return _text("org_id", request.org_id, required=True), _kind(request.kind), _object_id("id", request.id)


def to_proto(row: ProviderObjectRow) -> node_pb2.ProviderObject:
    return node_pb2.ProviderObject(
        kind=node_pb2.ObjectKind.ValueType(row.kind), id=row.object_id, org_id=row.org_id, key_id=row.key_id, model_name=row.model_name,
        deployment=row.deployment, purpose=row.purpose, created_at=row.created_at, snapshot=row.snapshot,
        usage_recorded=row.usage_recorded,
    )  # fmt: skip


def _missing(kind: int, object_id: str) -> NotFound:
    noun = "file" if kind == node_pb2.OBJECT_KIND_FILE else "batch"
    return NotFound(f"id: no {noun} {object_id!r} in this org")


class ObjectsService:
    """The five object RPCs over the database (the NodeServicer delegates to it)."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def put(self, request: node_pb2.PutObjectRequest) -> node_pb2.ProviderObject:
        o = request.object
        if not request.HasField("object"):
            raise InvalidArgument("object", "required")
        if len(o.snapshot) > MAX_SNAPSHOT_BYTES:
            raise InvalidArgument("object.snapshot", f"at most {MAX_SNAPSHOT_BYTES} bytes")
        if o.created_at < 0:
            raise InvalidArgument("object.created_at", "must be >= 0 (unix seconds)")
        new = repo.NewObject(
            kind=_kind(o.kind),
            object_id=_object_id("object.id", o.id),
            org_id=_text("org_id", o.org_id, required=True, prefix="object."),
            key_id=_text("key_id", o.key_id, prefix="object."),
            model_name=_text("model_name", o.model_name, required=True, prefix="object."),
            deployment=_text("deployment", o.deployment, prefix="object."),
            purpose=_text("purpose", o.purpose, prefix="object."),
            created_at=o.created_at,
            snapshot=o.snapshot,
        )
        async with self._deps.write() as session:
            if await orgs.get(session, new.org_id) is None:
                raise InvalidArgument("object.org_id", f"no org {new.org_id!r}")
            row = await repo.put(session, new)
            if row is None:  # the id is another org's: answered like a missing one
                raise _missing(new.kind, new.object_id)
            return to_proto(row)

    async def get(self, request: node_pb2.GetObjectRequest) -> node_pb2.ProviderObject:
        org_id, kind, object_id = _ref(request)
        async with self._deps.read() as session:
            row = await repo.get(session, org_id, kind, object_id)
            if row is None:
                raise _missing(kind, object_id)
            return to_proto(row)

    async def list(self, request: node_pb2.ListObjectsRequest) -> node_pb2.ListObjectsResponse:
        org_id = _text("org_id", request.org_id, required=True)
        kind = _kind(request.kind)
        limit = request.limit or DEFAULT_LIST_LIMIT
        if limit > MAX_LIST_LIMIT:
            raise InvalidArgument("limit", f"1..{MAX_LIST_LIMIT} (0: {DEFAULT_LIST_LIMIT})")
        after = _object_id("after", request.after, required=False)
        purpose = _text("purpose", request.purpose)
        async with self._deps.read() as session:
            found = await repo.page(
                session, org_id, kind, purpose=purpose, after=after, limit=limit, ascending=request.ascending
            )
            return node_pb2.ListObjectsResponse(objects=[to_proto(r) for r in found.rows], has_more=found.has_more)

    async def delete(self, request: node_pb2.GetObjectRequest) -> node_pb2.ProviderObject:
        org_id, kind, object_id = _ref(request)
        async with self._deps.write() as session:
            row = await repo.remove(session, org_id, kind, object_id)
            if row is None:
                raise _missing(kind, object_id)
            return to_proto(row)

    async def claim_batch_usage(self, request: node_pb2.GetObjectRequest) -> node_pb2.ClaimBatchUsageResponse:
        org_id, kind, object_id = _ref(request)
        if kind != node_pb2.OBJECT_KIND_BATCH:
            raise InvalidArgument("kind", "must be OBJECT_KIND_BATCH")
        async with self._deps.write() as session:
            claimed = await repo.claim_usage(session, org_id, kind, object_id)
        if claimed is None:
            raise _missing(kind, object_id)
        return node_pb2.ClaimBatchUsageResponse(claimed=claimed)
