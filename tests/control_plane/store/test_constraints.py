"""Constraints live in the database: uniqueness, RESTRICT on used credentials, cascades."""

from __future__ import annotations

import os
from typing import Any

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.store.tables import (
    AdminTokenRow,
    Base,
    CredentialRow,
    ModelRow,
    OrgRow,
    VirtualKeyRow,
)

Sessions = async_sessionmaker[AsyncSession]


def _org(oid: str, name: str) -> OrgRow:
    return OrgRow(id=oid, name=name, tier="free")


def _cred(cid: str, org_id: str, name: str = "main") -> CredentialRow:
    return CredentialRow(
        id=cid, org_id=org_id, name=name, family=1, last4="abcd", kek_id="k1",
        wrapped_dek=os.urandom(60), ciphertext=os.urandom(40),
    )  # fmt: skip


def _model(mid: str, org_id: str, name: str, credential_id: str) -> ModelRow:
    return ModelRow(
        id=mid, org_id=org_id, name=name, family=1, upstream_slug="gpt-4o",
        base_url="https://api.openai.com/v1", timeout_ms=60_000, credential_id=credential_id,
    )  # fmt: skip


def _key(kid: str, org_id: str, digest: bytes, name: str | None = None) -> VirtualKeyRow:
    return VirtualKeyRow(id=kid, org_id=org_id, name=name, digest=digest, last4="wxyz")


async def _add(sessions: Sessions, *rows: Base) -> None:
    async with sessions.begin() as s:
        s.add_all(rows)


async def _count(sessions: Sessions, table: type[Base]) -> int:
    async with sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(table)) or 0)


async def _expect_integrity_error(sessions: Sessions, *rows: Base) -> None:
    with pytest.raises(IntegrityError):
        await _add(sessions, *rows)


async def test_org_name_unique(sessions: Sessions) -> None:
    await _add(sessions, _org("org_a", "acme"))
    await _expect_integrity_error(sessions, _org("org_b", "acme"))
    await _add(sessions, _org("org_b", "acme2"))
    assert await _count(sessions, OrgRow) == 2


async def test_model_name_unique_per_org(sessions: Sessions) -> None:
    await _add(sessions, _org("org_a", "a"), _org("org_b", "b"))
    await _add(sessions, _cred("cred_a", "org_a"), _cred("cred_b", "org_b"))
    await _add(sessions, _model("mdl_1", "org_a", "gpt-4o", "cred_a"))
    await _expect_integrity_error(sessions, _model("mdl_2", "org_a", "gpt-4o", "cred_a"))
    await _add(sessions, _model("mdl_3", "org_b", "gpt-4o", "cred_b"))  # same name, other org
    assert await _count(sessions, ModelRow) == 2


async def test_credential_name_unique_per_org(sessions: Sessions) -> None:
    await _add(sessions, _org("org_a", "a"), _org("org_b", "b"))
    await _add(sessions, _cred("cred_1", "org_a", "main"))
    await _expect_integrity_error(sessions, _cred("cred_2", "org_a", "main"))
    await _add(sessions, _cred("cred_3", "org_b", "main"))


async def test_key_digests_unique(sessions: Sessions) -> None:
    await _add(sessions, _org("org_a", "a"), _org("org_b", "b"))
    digest = os.urandom(32)
    await _add(sessions, _key("key_1", "org_a", digest))
    # Unique across orgs too: a digest resolves to exactly one key.
    await _expect_integrity_error(sessions, _key("key_2", "org_b", digest))
    previous = VirtualKeyRow(
        id="key_3", org_id="org_a", digest=os.urandom(32), last4="x", previous_digest=os.urandom(32)
    )
    await _add(sessions, previous)
    clash = VirtualKeyRow(
        id="key_4", org_id="org_b", digest=os.urandom(32), last4="x", previous_digest=previous.previous_digest
    )
    await _expect_integrity_error(sessions, clash)
    token = os.urandom(32)
    await _add(sessions, AdminTokenRow(id="tok_1", org_id="org_a", name="ops", digest=token, last4="t"))
    await _expect_integrity_error(
        sessions, AdminTokenRow(id="tok_2", org_id="org_b", name="ops", digest=token, last4="t")
    )


async def test_unnamed_keys_do_not_collide(sessions: Sessions) -> None:
    await _add(sessions, _org("org_a", "a"))
    await _add(sessions, _key("key_1", "org_a", os.urandom(32)), _key("key_2", "org_a", os.urandom(32)))
    await _add(sessions, _key("key_3", "org_a", os.urandom(32), "ci"))
    await _expect_integrity_error(sessions, _key("key_4", "org_a", os.urandom(32), "ci"))


async def test_credential_delete_restricted_while_a_model_uses_it(sessions: Sessions) -> None:
    await _add(sessions, _org("org_a", "a"))
    await _add(sessions, _cred("cred_a", "org_a"))
    await _add(sessions, _model("mdl_1", "org_a", "m1", "cred_a"))
    with pytest.raises(IntegrityError):
        async with sessions.begin() as s:
            await s.execute(delete(CredentialRow).where(CredentialRow.id == "cred_a"))
    assert await _count(sessions, CredentialRow) == 1
    async with sessions.begin() as s:
        await s.execute(delete(ModelRow).where(ModelRow.id == "mdl_1"))
        await s.execute(delete(CredentialRow).where(CredentialRow.id == "cred_a"))
    assert await _count(sessions, CredentialRow) == 0


async def test_model_needs_an_existing_credential_and_org(sessions: Sessions) -> None:
    await _add(sessions, _org("org_a", "a"))
    await _expect_integrity_error(sessions, _model("mdl_1", "org_a", "m1", "cred_missing"))
    await _expect_integrity_error(sessions, _cred("cred_x", "org_missing"))


async def test_org_delete_cascades_to_everything_it_owns(sessions: Sessions) -> None:
    await _add(sessions, _org("org_a", "a"), _org("org_b", "b"))
    await _add(sessions, _cred("cred_a", "org_a"), _cred("cred_b", "org_b"))
    await _add(
        sessions,
        _model("mdl_a", "org_a", "m", "cred_a"),
        _model("mdl_b", "org_b", "m", "cred_b"),
        _key("key_a", "org_a", os.urandom(32)),
        _key("key_b", "org_b", os.urandom(32)),
        AdminTokenRow(id="tok_a", org_id="org_a", name="ops", digest=os.urandom(32), last4="t"),
    )
    async with sessions.begin() as s:
        await s.execute(delete(OrgRow).where(OrgRow.id == "org_a"))
    owned: dict[type[Base], Any] = {
        CredentialRow: CredentialRow.org_id,
        ModelRow: ModelRow.org_id,
        VirtualKeyRow: VirtualKeyRow.org_id,
        AdminTokenRow: AdminTokenRow.org_id,
    }
    async with sessions() as s:
        for table, column in owned.items():
            remaining = set((await s.scalars(select(column).select_from(table))).all())
            assert remaining <= {"org_b"}, table.__tablename__
        assert (await s.scalars(select(OrgRow.id))).all() == ["org_b"]
    assert await _count(sessions, ModelRow) == 1
