"""Queries on orgs and what they own."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.errors import NotFound
from control_plane.store.repositories import pages
from control_plane.store.tables import (
    AdminTokenRow,
    CredentialRow,
    ModelRow,
    OrgRow,
    ProviderObjectRow,
    VirtualKeyRow,
)


async def get(session: AsyncSession, org_id: str) -> OrgRow | None:
    """The org with this id, if any."""
    return await session.get(OrgRow, org_id)


async def get_by_name(session: AsyncSession, name: str) -> OrgRow | None:
    """The org with this name, if any."""
    result: OrgRow | None = await session.scalar(select(OrgRow).where(OrgRow.name == name))
    return result


async def require(session: AsyncSession, org_id: str, *, for_update: bool = False) -> OrgRow:
    """The org with this id, or NotFound."""
    stmt = select(OrgRow).where(OrgRow.id == org_id)
    if for_update:
        stmt = stmt.with_for_update()
    row: OrgRow | None = await session.scalar(stmt)
    if row is None:
        raise NotFound(f"org {org_id!r} not found")
    return row


async def list_page(session: AsyncSession, after: str | None, size: int) -> tuple[Sequence[OrgRow], str]:
    """A page of orgs by name."""
    return await pages.fetch_page(session, select(OrgRow), OrgRow.name, scope="orgs", after=after, size=size)


async def owned_counts(session: AsyncSession, org_id: str) -> dict[str, int]:
    """How many models, credentials and virtual keys the org owns."""
    counts: dict[str, int] = {}
    for label, table in (
        ("models", ModelRow),
        ("credentials", CredentialRow),
        ("virtual keys", VirtualKeyRow),
    ):
        n = await session.scalar(select(func.count()).select_from(table).where(table.org_id == org_id))
        counts[label] = int(n or 0)
    return counts


async def delete_with_owned(session: AsyncSession, org_id: str) -> None:
    """Delete the org and everything it owns, models before the credentials they reference."""
    for table in (ProviderObjectRow, VirtualKeyRow, AdminTokenRow, ModelRow, CredentialRow):
        await session.execute(delete(table).where(table.org_id == org_id))
    await session.execute(delete(OrgRow).where(OrgRow.id == org_id))
