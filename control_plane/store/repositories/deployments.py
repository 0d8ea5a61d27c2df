"""Queries on model deployments (issue 14): a model's upstreams, position 0 first.

The models table keeps position 0's upstream fields as a mirror (every query that predates
deployments reads them there); ``replace`` writes both in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.store.tables import ModelDeploymentRow, ModelRow


async def of_models(session: AsyncSession, model_ids: Iterable[str]) -> dict[str, list[ModelDeploymentRow]]:
    """Model id -> its deployments in order, for the given models."""
    wanted = list(dict.fromkeys(model_ids))
    out: dict[str, list[ModelDeploymentRow]] = {i: [] for i in wanted}
    if not wanted:
        return out
    rows = await session.scalars(
        select(ModelDeploymentRow)
        .where(ModelDeploymentRow.model_id.in_(wanted))
        .order_by(ModelDeploymentRow.model_id, ModelDeploymentRow.position)
    )
    for row in rows:
        out[row.model_id].append(row)
    return out


async def of_model(session: AsyncSession, model_id: str) -> list[ModelDeploymentRow]:
    """The model's deployments in order."""
    return (await of_models(session, [model_id]))[model_id]


async def replace(session: AsyncSession, model: ModelRow, rows: Sequence[ModelDeploymentRow]) -> None:
    """Make ``rows`` (in order, at least one) the model's deployments; mirror the first into ``model``."""
    if not rows:
        raise ValueError("a model has at least one deployment")
    first = rows[0]
    model.upstream_slug, model.base_url = first.upstream_slug, first.base_url
    model.timeout_ms, model.credential_id = first.timeout_ms, first.credential_id
    await session.flush()  # the model row exists before its deployments reference it
    await session.execute(
        delete(ModelDeploymentRow)
        .where(ModelDeploymentRow.model_id == model.id)
        .execution_options(synchronize_session=False)
    )
    for position, row in enumerate(rows):
        row.model_id, row.position = model.id, position
        session.add(row)
    await session.flush()


async def models_using_beyond_first(session: AsyncSession, credential_id: str) -> list[tuple[str, str]]:
    """(org id, name) of the models whose deployments after the first use the credential."""
    found = await session.execute(
        select(ModelRow.org_id, ModelRow.name)
        .join(ModelDeploymentRow, ModelDeploymentRow.model_id == ModelRow.id)
        .where(ModelDeploymentRow.credential_id == credential_id, ModelDeploymentRow.position > 0)
        .distinct()
        .order_by(ModelRow.org_id, ModelRow.name)
    )
    return [(str(o), str(n)) for o, n in found.all()]


async def models_naming_fallback(session: AsyncSession, org_id: str, name: str) -> list[str]:
    """Names of the org's models that list ``name`` among their fallbacks."""
    found = await session.execute(
        select(ModelRow.name, ModelRow.fallbacks).where(ModelRow.org_id == org_id).order_by(ModelRow.name)
    )
    return [str(n) for n, fallbacks in found.all() if name in (fallbacks or [])]


async def all_with_proxy_secret(session: AsyncSession) -> Sequence[ModelDeploymentRow]:
    """Every deployment whose proxy URL is kept encrypted (for re-wrapping), locked on PostgreSQL."""
    stmt = select(ModelDeploymentRow).where(ModelDeploymentRow.proxy_kek_id.is_not(None)).with_for_update()
    return (await session.scalars(stmt)).all()
