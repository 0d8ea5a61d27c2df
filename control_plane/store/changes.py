"""The change log that Watch streams replay from, numbered by a gap-free revision counter.

``record_change`` runs inside the caller's transaction: the counter row's
UPDATE takes a row lock (PostgreSQL) or the database write lock (SQLite), so
concurrent writers are serialised until commit and revisions become visible in
order, without gaps; a rolled-back transaction gives its number back. On
PostgreSQL a NOTIFY in the same transaction is delivered only at commit.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.store.tables import ChangeRow, RevisionCounterRow, utcnow

NOTIFY_CHANNEL = "odock_changes"
COUNTER_ID = 1


def _on_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def _next_revision(session: AsyncSession) -> int:
    stmt = (
        update(RevisionCounterRow)
        .where(RevisionCounterRow.id == COUNTER_ID)
        .values(value=RevisionCounterRow.value + 1)
        .returning(RevisionCounterRow.value)
    )
    revision = (await session.execute(stmt)).scalar_one_or_none()
    if revision is None:
        raise RuntimeError("revision_counter row is missing: run the migrations")
    return int(revision)


async def record_change(
    session: AsyncSession,
    kind: int,
    org_id: str,
    *,
    key_id: str | None = None,
    model_name: str | None = None,
    credential_id: str | None = None,
) -> int:
    """Bump the revision, log the change and (PostgreSQL) NOTIFY, all in the caller's transaction."""
    revision = await _next_revision(session)
    session.add(
        ChangeRow(
            revision=revision,
            kind=int(kind),
            org_id=org_id,
            key_id=key_id,
            model_name=model_name,
            credential_id=credential_id,
            time=utcnow(),
        )
    )
    await session.flush()
    if _on_postgres(session):
        await session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": NOTIFY_CHANNEL, "payload": str(revision)},
        )
    return revision


async def current_revision(session: AsyncSession) -> int:
    """The last revision handed out (committed, as seen by this transaction)."""
    value = await session.scalar(select(RevisionCounterRow.value).where(RevisionCounterRow.id == COUNTER_ID))
    return int(value or 0)


async def changes_after(session: AsyncSession, revision: int, limit: int) -> list[ChangeRow]:
    """Logged changes with revision > ``revision``, oldest first, at most ``limit``."""
    stmt = select(ChangeRow).where(ChangeRow.revision > revision).order_by(ChangeRow.revision).limit(limit)
    return list((await session.scalars(stmt)).all())


async def oldest_revision(session: AsyncSession) -> int:
    """The oldest revision still in the log; with an empty log, the next one to be issued.

    A watcher resuming after revision R can be served from the log iff
    ``R + 1 >= oldest_revision``; otherwise it missed pruned changes and must resync.
    """
    oldest = await session.scalar(select(func.min(ChangeRow.revision)))
    if oldest is not None:
        return int(oldest)
    return await current_revision(session) + 1


async def prune(session: AsyncSession, older_than: datetime) -> int:
    """Delete logged changes older than ``older_than``, always keeping the newest one."""
    newest = await session.scalar(select(func.max(ChangeRow.revision)))
    if newest is None:
        return 0
    result = await session.execute(
        delete(ChangeRow)
        .where(ChangeRow.time < older_than)
        .where(ChangeRow.revision < newest)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
