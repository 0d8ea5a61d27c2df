"""Queries behind the data planes' grants and routes (NodeService): keys by digest, routes by model."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.store.tables import CredentialRow, ModelDeploymentRow, ModelRow, VirtualKeyRow


async def key_by_digest(session: AsyncSession, digest: bytes) -> VirtualKeyRow | None:
    """The key whose current secret has this keyed hash, if any."""
    row: VirtualKeyRow | None = await session.scalar(
        select(VirtualKeyRow).where(VirtualKeyRow.digest == digest)
    )
    return row


async def key_by_previous_digest(session: AsyncSession, digest: bytes) -> VirtualKeyRow | None:
    """The key whose replaced secret (still in or past its rotation grace) has this keyed hash, if any."""
    row: VirtualKeyRow | None = await session.scalar(
        select(VirtualKeyRow).where(VirtualKeyRow.previous_digest == digest)
    )
    return row


async def route(session: AsyncSession, org_id: str, model_name: str) -> tuple[ModelRow, CredentialRow] | None:
    """The org's model of this name with the credential it uses, if any."""
    found = (
        await session.execute(
            select(ModelRow, CredentialRow)
            .join(CredentialRow, CredentialRow.id == ModelRow.credential_id)
            .where(ModelRow.org_id == org_id, ModelRow.name == model_name)
        )
    ).first()
    return None if found is None else (found[0], found[1])


async def deployments(session: AsyncSession, model_id: str) -> list[tuple[ModelDeploymentRow, CredentialRow]]:
    """The model's deployments in order, each with the credential it uses."""
    found = await session.execute(
        select(ModelDeploymentRow, CredentialRow)
        .join(CredentialRow, CredentialRow.id == ModelDeploymentRow.credential_id)
        .where(ModelDeploymentRow.model_id == model_id)
        .order_by(ModelDeploymentRow.position)
    )
    return [(d, c) for d, c in found.all()]


async def list_routes(session: AsyncSession, org_id: str) -> Sequence[ModelRow]:
    """Every model of the org, by name."""
    return (
        await session.scalars(select(ModelRow).where(ModelRow.org_id == org_id).order_by(ModelRow.name))
    ).all()
