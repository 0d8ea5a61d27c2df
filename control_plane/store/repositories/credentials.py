"""Queries on provider credentials."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.errors import NotFound
from control_plane.store.repositories import pages
from control_plane.store.tables import CredentialRow, ModelDeploymentRow, ModelRow


async def get_by_name(session: AsyncSession, org_id: str, name: str) -> CredentialRow | None:
    """The org's credential with this name, if any."""
    row: CredentialRow | None = await session.scalar(
        select(CredentialRow).where(CredentialRow.org_id == org_id, CredentialRow.name == name)
    )
    return row


async def require(session: AsyncSession, org_id: str, name: str) -> CredentialRow:
    """The org's credential with this name, or NotFound."""
    row = await get_by_name(session, org_id, name)
    if row is None:
        raise NotFound(f"credential {name!r} not found in org {org_id!r}")
    return row


async def names_by_id(session: AsyncSession, ids: set[str]) -> dict[str, str]:
    """Credential id -> name for the given ids."""
    if not ids:
        return {}
    rows = await session.execute(
        select(CredentialRow.id, CredentialRow.name).where(CredentialRow.id.in_(ids))
    )
    return {str(i): str(n) for i, n in rows}


async def list_page(
    session: AsyncSession, org_id: str, after: str | None, size: int
) -> tuple[Sequence[CredentialRow], str]:
    """A page of the org's credentials by name."""
    stmt = select(CredentialRow).where(CredentialRow.org_id == org_id)
    return await pages.fetch_page(
        session, stmt, CredentialRow.name, scope=f"credentials:{org_id}", after=after, size=size
    )


async def models_using(session: AsyncSession, credential_id: str) -> list[str]:
    """Names of the models any deployment of which references this credential."""
    via_deployments = (
        select(ModelRow.name)
        .join(ModelDeploymentRow, ModelDeploymentRow.model_id == ModelRow.id)
        .where(ModelDeploymentRow.credential_id == credential_id)
    )
    direct = select(ModelRow.name).where(ModelRow.credential_id == credential_id)
    return sorted(set(await session.scalars(via_deployments)) | set(await session.scalars(direct)))


async def all_ids(session: AsyncSession) -> list[str]:
    """Every credential id, for re-wrapping."""
    return list(await session.scalars(select(CredentialRow.id).order_by(CredentialRow.id)))


async def by_ids(session: AsyncSession, row_ids: list[str]) -> Sequence[CredentialRow]:
    """The credentials with these ids, locked for update on PostgreSQL."""
    stmt = select(CredentialRow).where(CredentialRow.id.in_(row_ids)).with_for_update()
    return (await session.scalars(stmt)).all()
