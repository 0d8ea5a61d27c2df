"""The queries behind NodeService (store/repositories/routes.py) on both backends."""

from __future__ import annotations

import os

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.store.repositories import keys, routes
from control_plane.store.tables import CredentialRow, ModelRow, OrgRow, VirtualKeyRow
from odock.v1 import common_pb2

Sessions = async_sessionmaker[AsyncSession]


def _org(org_id: str) -> OrgRow:
    return OrgRow(id=org_id, name=org_id.replace("_", "-"), tier="free")


def _credential(cred_id: str, org_id: str) -> CredentialRow:
    return CredentialRow(
        id=cred_id, org_id=org_id, name=cred_id.replace("_", "-"), family=common_pb2.PROVIDER_FAMILY_OPENAI,
        last4="abcd", kek_id="k1", wrapped_dek=b"w" * 60, ciphertext=b"c" * 40,
    )  # fmt: skip


def _model(model_id: str, org_id: str, name: str, cred_id: str) -> ModelRow:
    return ModelRow(
        id=model_id, org_id=org_id, name=name, family=common_pb2.PROVIDER_FAMILY_OPENAI, upstream_slug=name,
        base_url="https://api.openai.com/v1", timeout_ms=30_000, credential_id=cred_id,
    )  # fmt: skip


async def test_keys_are_found_by_their_current_or_previous_digest(sessions: Sessions) -> None:
    current, previous, other = os.urandom(32), os.urandom(32), os.urandom(32)
    async with sessions.begin() as s:
        s.add(_org("org_a"))
        await s.flush()
        s.add(VirtualKeyRow(id="key_1", org_id="org_a", digest=current, last4="1111", previous_digest=previous))
        s.add(VirtualKeyRow(id="key_2", org_id="org_a", digest=other, last4="2222"))
    async with sessions() as s:
        found = await routes.key_by_digest(s, current)
        assert found is not None and found.id == "key_1"
        # Each lookup matches its own column only: the replaced secret is not a current one.
        assert await routes.key_by_digest(s, previous) is None
        rotated = await routes.key_by_previous_digest(s, previous)
        assert rotated is not None and rotated.id == "key_1"
        assert await routes.key_by_previous_digest(s, current) is None
        assert await routes.key_by_digest(s, os.urandom(32)) is None
        by_id = await keys.get(s, "key_2")
        assert by_id is not None and by_id.digest == other
        assert await keys.get(s, "key_none") is None


async def test_a_route_is_the_orgs_model_with_its_credential(sessions: Sessions) -> None:
    async with sessions.begin() as s:
        s.add_all([_org("org_a"), _org("org_b")])
        await s.flush()
        s.add_all([_credential("cred_a", "org_a"), _credential("cred_b", "org_b")])
        await s.flush()
        s.add_all([_model("mdl_a", "org_a", "gpt-4o", "cred_a"), _model("mdl_b", "org_b", "gpt-4o", "cred_b")])
    async with sessions() as s:
        found = await routes.route(s, "org_a", "gpt-4o")
        assert found is not None
        model, cred = found
        assert (model.id, cred.id, cred.org_id) == ("mdl_a", "cred_a", "org_a")
        assert cred.ciphertext == b"c" * 40
        other = await routes.route(s, "org_b", "gpt-4o")
        assert other is not None and other[0].id == "mdl_b" and other[1].id == "cred_b"
        assert await routes.route(s, "org_a", "GPT-4o") is None  # names are exact
        assert await routes.route(s, "org_c", "gpt-4o") is None


async def test_routes_list_the_orgs_models_by_name(sessions: Sessions) -> None:
    async with sessions.begin() as s:
        s.add_all([_org("org_a"), _org("org_b")])
        await s.flush()
        s.add_all([_credential("cred_a", "org_a"), _credential("cred_b", "org_b")])
        await s.flush()
        for i, name in enumerate(["zeta", "alpha", "mid"]):
            s.add(_model(f"mdl_a{i}", "org_a", name, "cred_a"))
        s.add(_model("mdl_b0", "org_b", "beta", "cred_b"))
    async with sessions() as s:
        assert [m.name for m in await routes.list_routes(s, "org_a")] == ["alpha", "mid", "zeta"]
        assert [m.name for m in await routes.list_routes(s, "org_b")] == ["beta"]
        assert list(await routes.list_routes(s, "org_c")) == []
