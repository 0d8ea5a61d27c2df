"""Queries on virtual keys."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.errors import NotFound
from control_plane.store.repositories import pages
from control_plane.store.tables import VirtualKeyRow


async def get(session: AsyncSession, key_id: str) -> VirtualKeyRow | None:
    """The key with this id, if any (whatever its org)."""
    return await session.get(VirtualKeyRow, key_id)


async def require(session: AsyncSession, org_id: str, key_id: str) -> VirtualKeyRow:
    """The org's key with this id, or NotFound."""
    row: VirtualKeyRow | None = await session.scalar(
        select(VirtualKeyRow).where(VirtualKeyRow.org_id == org_id, VirtualKeyRow.id == key_id)
    )
    if row is None:
        raise NotFound(f"virtual key {key_id!r} not found in org {org_id!r}")
    return row


async def get_by_name(session: AsyncSession, org_id: str, name: str) -> VirtualKeyRow | None:
    """The org's key with this name, if any."""
    row: VirtualKeyRow | None = await session.scalar(
        select(VirtualKeyRow).where(VirtualKeyRow.org_id == org_id, VirtualKeyRow.name == name)
    )
    return row


async def list_page(
    session: AsyncSession, org_id: str, include_revoked: bool, after: str | None, size: int
) -> tuple[Sequence[VirtualKeyRow], str]:
    """A page of the org's keys by id; revoked ones only when asked."""
    stmt = select(VirtualKeyRow).where(VirtualKeyRow.org_id == org_id)
    if not include_revoked:
        stmt = stmt.where(VirtualKeyRow.revoked.is_(False))
    scope = f"keys:{org_id}:{int(include_revoked)}"
    return await pages.fetch_page(session, stmt, VirtualKeyRow.id, scope=scope, after=after, size=size)

