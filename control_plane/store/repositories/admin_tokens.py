"""Queries on org-scoped admin tokens."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.errors import NotFound
from control_plane.store.tables import AdminTokenRow


async def by_digest(session: AsyncSession, digest: bytes) -> AdminTokenRow | None:
    """The token stored under this keyed hash, if any."""
    row: AdminTokenRow | None = await session.scalar(
        select(AdminTokenRow).where(AdminTokenRow.digest == digest)
    )
    return row


async def require(session: AsyncSession, org_id: str, token_id: str) -> AdminTokenRow:
    """The org's token with this id, or NotFound."""
    row: AdminTokenRow | None = await session.scalar(
        select(AdminTokenRow).where(AdminTokenRow.org_id == org_id, AdminTokenRow.id == token_id)
    )
    if row is None:
        raise NotFound(f"admin token {token_id!r} not found in org {org_id!r}")
    return row


async def list_for_org(session: AsyncSession, org_id: str) -> Sequence[AdminTokenRow]:
    """Every token of the org, oldest first."""
    stmt = select(AdminTokenRow).where(AdminTokenRow.org_id == org_id)
    return (await session.scalars(stmt.order_by(AdminTokenRow.create_time, AdminTokenRow.id))).all()
