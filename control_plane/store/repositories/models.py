"""Queries on models."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.errors import NotFound
from control_plane.store.repositories import pages
from control_plane.store.tables import ModelRow


async def get_by_name(session: AsyncSession, org_id: str, name: str) -> ModelRow | None:
    """The org's model with this name, if any."""
    row: ModelRow | None = await session.scalar(
        select(ModelRow).where(ModelRow.org_id == org_id, ModelRow.name == name)
    )
    return row


async def require(session: AsyncSession, org_id: str, name: str) -> ModelRow:
    """The org's model with this name, or NotFound."""
    row = await get_by_name(session, org_id, name)
    if row is None:
        raise NotFound(f"model {name!r} not found in org {org_id!r}")
    return row


async def list_page(
    session: AsyncSession, org_id: str, after: str | None, size: int
) -> tuple[Sequence[ModelRow], str]:
    """A page of the org's models by name."""
    stmt = select(ModelRow).where(ModelRow.org_id == org_id)
    return await pages.fetch_page(
        session, stmt, ModelRow.name, scope=f"models:{org_id}", after=after, size=size
    )


async def missing_names(session: AsyncSession, org_id: str, names: Iterable[str]) -> list[str]:
    """Those of ``names`` that are not models of the org, in the given order."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    found = set(
        await session.scalars(
            select(ModelRow.name).where(ModelRow.org_id == org_id, ModelRow.name.in_(wanted))
        )
    )
    return [n for n in wanted if n not in found]
