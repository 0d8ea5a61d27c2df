"""Ownership of provider objects (files, batches) in the database, on both backends.

An object is keyed by (kind, provider id) and belongs to one org for good: every query
here names the caller's org, so another org's object reads, lists and deletes exactly like
a missing one. Writes that must happen once (a batch's usage) are one conditional UPDATE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from control_plane.store.tables import ProviderObjectRow, utcnow

P = ProviderObjectRow


@dataclass(frozen=True, slots=True)
class NewObject:
    """What a node reports of an object it created or saw (owner fields used on creation only)."""

    kind: int
    object_id: str
    org_id: str
    key_id: str
    model_name: str
    deployment: str
    purpose: str
    created_at: int
    snapshot: bytes


def _owned(org_id: str, kind: int, object_id: str) -> ColumnElement[bool]:
    return and_(P.kind == kind, P.object_id == object_id, P.org_id == org_id)


async def get(session: AsyncSession, org_id: str, kind: int, object_id: str) -> ProviderObjectRow | None:
    """The org's object, or None (missing or another org's)."""
    found: ProviderObjectRow | None = (
        await session.execute(select(P).where(_owned(org_id, kind, object_id)))
    ).scalar_one_or_none()
    return found


async def put(session: AsyncSession, obj: NewObject) -> ProviderObjectRow | None:
    """Record ``obj`` (first writer wins the ownership) or refresh the org's own row; None if another org's.

    Insert-or-nothing then an UPDATE filtered by org: two nodes reporting the same new object
    at once both succeed, and an id already owned elsewhere is never taken over. Empty
    snapshot/purpose and a zero created_at leave the stored values as they are.
    """
    now = utcnow()
    values = {
        "kind": obj.kind, "object_id": obj.object_id, "org_id": obj.org_id, "key_id": obj.key_id,
        "model_name": obj.model_name, "deployment": obj.deployment, "purpose": obj.purpose,
        "created_at": obj.created_at, "snapshot": obj.snapshot, "usage_recorded": False,
        "create_time": now, "update_time": now,
    }  # fmt: skip
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    inserted = await session.execute(insert(P).values(**values).on_conflict_do_nothing())
    if getattr(inserted, "rowcount", 0) != 1:  # already known: refresh it if it is the org's
        changed: dict[str, object] = {"update_time": now}
        if obj.snapshot:
            changed["snapshot"] = obj.snapshot
        if obj.purpose:
            changed["purpose"] = obj.purpose
        if obj.created_at:
            changed["created_at"] = obj.created_at
        await session.execute(update(P).where(_owned(obj.org_id, obj.kind, obj.object_id)).values(**changed))
    session.expire_all()  # the refreshed row is read back as stored
    return await get(session, obj.org_id, obj.kind, obj.object_id)


async def remove(session: AsyncSession, org_id: str, kind: int, object_id: str) -> ProviderObjectRow | None:
    """Forget the org's object; the row as it was, or None when it was not the org's."""
    found = await get(session, org_id, kind, object_id)
    if found is not None:
        await session.execute(delete(P).where(_owned(org_id, kind, object_id)))
    return found


async def claim_usage(session: AsyncSession, org_id: str, batch_kind: int, batch_id: str) -> bool | None:
    """Mark the batch's usage recorded: True for the one caller that flipped it, False after; None if not the org's.

    One conditional UPDATE: concurrent callers serialise on the row (PostgreSQL re-checks the
    condition after the winner commits; SQLite has one writer), so exactly one sees a row.
    """
    claimed = await session.execute(
        update(P)
        .where(_owned(org_id, batch_kind, batch_id), P.usage_recorded.is_(False))
        .values(usage_recorded=True, update_time=utcnow())
    )
    if getattr(claimed, "rowcount", 0) == 1:
        return True
    return False if await get(session, org_id, batch_kind, batch_id) is not None else None


@dataclass(frozen=True, slots=True)
class Page:
    rows: Sequence[ProviderObjectRow]
    has_more: bool


async def page(
    session: AsyncSession,
    org_id: str,
    kind: int,
    *,
    purpose: str,
    after: str,
    limit: int,
    ascending: bool,
) -> Page:
    """Up to ``limit`` of the org's objects after the cursor, ordered by (created_at, id).

    An ``after`` that is not one of the org's objects (missing, deleted, another org's) gives
    an empty page: the cursor has no position, and an unknown id must read like a foreign one.
    """
    stmt = select(P).where(P.org_id == org_id, P.kind == kind)
    if purpose:
        stmt = stmt.where(P.purpose == purpose)
    if after:
        cursor = await get(session, org_id, kind, after)
        if cursor is None:
            return Page((), False)
        at, cid = cursor.created_at, cursor.object_id
        if ascending:
            stmt = stmt.where(or_(P.created_at > at, and_(P.created_at == at, P.object_id > cid)))
        else:
            stmt = stmt.where(or_(P.created_at < at, and_(P.created_at == at, P.object_id < cid)))
    order = (P.created_at.asc(), P.object_id.asc()) if ascending else (P.created_at.desc(), P.object_id.desc())
    rows = (await session.execute(stmt.order_by(*order).limit(limit + 1))).scalars().all()
    return Page(rows[:limit], len(rows) > limit)
