"""CredentialService over real gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
from sqlalchemy import select

from control_plane.crypto import Envelope, Keyring, decrypt
from control_plane.store.db import make_engine
from control_plane.store.tables import CredentialRow
from odock.v1 import common_pb2, credentials_pb2, models_pb2, orgs_pb2
from tests.control_plane.admin_env import ANTHROPIC, OPENAI, AdminEnv, expect, open_admin_env
from tests.support.secrets import kek, keks_spec

SECRET = "sk-live-abcdefghijklmnop1234"
INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def _stored(db_url: str, cred_id: str) -> CredentialRow:
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(select(CredentialRow).where(CredentialRow.id == cred_id))).one()
            return CredentialRow(**row._asdict())
    finally:
        await engine.dispose()


async def test_create_encrypts_and_shows_only_metadata(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    cred = await cp.credential(org.id, "openai-main", secret=SECRET)
    assert cred.id.startswith("cred_") and cred.name == "openai-main" and cred.family == OPENAI
    assert cred.last4 == "1234" and cred.kek_id == "kek1"
    assert not cred.HasField("rotate_time")
    assert SECRET not in str(cred)
    row = await _stored(cp.db_url, cred.id)
    assert SECRET.encode() not in row.ciphertext + row.wrapped_dek
    keyring = Keyring.from_spec(keks_spec(cp.secrets.keks))
    assert decrypt(keyring, Envelope(row.kek_id, row.wrapped_dek, row.ciphertext), cred.id) == SECRET.encode()
    short = await cp.credential(org.id, "short", secret="abc12")
    assert short.last4 == ""  # too short to reveal any of it


async def test_get_and_list_paginated(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    other = await cp.org("other")
    await cp.credential(other.id, "zzz")
    for n in ("c", "a", "b", "d"):
        await cp.credential(org.id, n, family=ANTHROPIC)
    got = await cp.creds.GetCredential(
        credentials_pb2.GetCredentialRequest(org_id=org.id, name="b"), metadata=cp.su
    )
    assert got.name == "b" and got.family == ANTHROPIC
    first = await cp.creds.ListCredentials(
        credentials_pb2.ListCredentialsRequest(org_id=org.id, page_size=3), metadata=cp.su
    )
    assert [c.name for c in first.credentials] == ["a", "b", "c"] and first.next_page_token
    rest = await cp.creds.ListCredentials(
        credentials_pb2.ListCredentialsRequest(org_id=org.id, page_size=3, page_token=first.next_page_token),
        metadata=cp.su,
    )
    assert [c.name for c in rest.credentials] == ["d"] and rest.next_page_token == ""
    # a token of one org's listing is refused on another's
    msg = await expect(
        INVALID,
        cp.creds.ListCredentials(
            credentials_pb2.ListCredentialsRequest(org_id=other.id, page_token=first.next_page_token),
            metadata=cp.su,
        ),
    )
    assert msg.startswith("page_token:")
    await expect(
        grpc.StatusCode.NOT_FOUND,
        cp.creds.GetCredential(
            credentials_pb2.GetCredentialRequest(org_id=org.id, name="zzz"), metadata=cp.su
        ),
    )
    await expect(
        grpc.StatusCode.NOT_FOUND,
        cp.creds.ListCredentials(
            credentials_pb2.ListCredentialsRequest(org_id="org_missing"), metadata=cp.su
        ),
    )


async def test_create_errors(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    await cp.credential(org.id, "main")
    msg = await expect(grpc.StatusCode.ALREADY_EXISTS, cp.credential(org.id, "main"))
    assert "main" in msg
    await expect(grpc.StatusCode.NOT_FOUND, cp.credential("org_missing", "x"))
    bad = {
        "org_id": {"name": "x", "family": OPENAI, "secret": SECRET},
        "name": {"org_id": org.id, "name": "Not Valid", "family": OPENAI, "secret": SECRET},
        "family": {
            "org_id": org.id,
            "name": "x",
            "family": common_pb2.PROVIDER_FAMILY_UNSPECIFIED,
            "secret": SECRET,
        },
        "secret": {"org_id": org.id, "name": "x", "family": OPENAI, "secret": "has space"},
    }
    for field, fields in bad.items():
        msg = await expect(
            INVALID,
            cp.creds.CreateCredential(credentials_pb2.CreateCredentialRequest(**fields), metadata=cp.su),  # type: ignore[arg-type]
        )
        assert msg.startswith(f"{field}:") and SECRET not in msg
    msg = await expect(
        INVALID,
        cp.creds.CreateCredential(
            credentials_pb2.CreateCredentialRequest(
                org_id=org.id, name="x", family=OPENAI, secret="k" * 8193
            ),
            metadata=cp.su,
        ),
    )
    assert msg.startswith("secret:")


async def test_rotate_replaces_secret_and_stamps_time(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    cred = await cp.credential(org.id, secret=SECRET)
    before = await _stored(cp.db_url, cred.id)
    rotated = await cp.creds.RotateCredential(
        credentials_pb2.RotateCredentialRequest(
            org_id=org.id, name="main", secret="sk-new-secret-value-9876"
        ),
        metadata=cp.su,
    )
    assert rotated.id == cred.id and rotated.last4 == "9876" and rotated.HasField("rotate_time")
    after = await _stored(cp.db_url, cred.id)
    assert after.ciphertext != before.ciphertext and after.wrapped_dek != before.wrapped_dek
    keyring = Keyring.from_spec(keks_spec(cp.secrets.keks))
    plain = decrypt(keyring, Envelope(after.kek_id, after.wrapped_dek, after.ciphertext), cred.id)
    assert plain == b"sk-new-secret-value-9876"
    await expect(
        grpc.StatusCode.NOT_FOUND,
        cp.creds.RotateCredential(
            credentials_pb2.RotateCredentialRequest(org_id=org.id, name="nope", secret=SECRET), metadata=cp.su
        ),
    )
    msg = await expect(
        INVALID,
        cp.creds.RotateCredential(
            credentials_pb2.RotateCredentialRequest(org_id=org.id, name="main"), metadata=cp.su
        ),
    )
    assert msg == "secret: required"


async def test_delete_refused_while_models_use_it(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    await cp.credential(org.id)
    await cp.model(org.id, "gpt-b")
    await cp.model(org.id, "gpt-a")
    req = credentials_pb2.DeleteCredentialRequest(org_id=org.id, name="main")
    msg = await expect(grpc.StatusCode.FAILED_PRECONDITION, cp.creds.DeleteCredential(req, metadata=cp.su))
    assert "'gpt-a', 'gpt-b'" in msg
    for m in ("gpt-a", "gpt-b"):
        await cp.models.DeleteModel(models_pb2.DeleteModelRequest(org_id=org.id, name=m), metadata=cp.su)
    await cp.creds.DeleteCredential(req, metadata=cp.su)
    await expect(grpc.StatusCode.NOT_FOUND, cp.creds.DeleteCredential(req, metadata=cp.su))


async def test_rewrap_moves_every_row_to_the_newest_kek(migrated_db_url: str) -> None:
    old = {"old": kek()}
    async with open_admin_env(migrated_db_url, keks_spec=keks_spec(old), kek_ids=("old",)) as env:
        org = await env.org("acme")
        ids = [(await env.credential(org.id, f"c{i}", secret=f"{SECRET}-{i}")).id for i in range(3)]
    both = {**old, "new": kek()}
    async with open_admin_env(migrated_db_url, keks_spec=keks_spec(both), kek_ids=tuple(both)) as env:
        org_id = (await env.orgs.ListOrgs(orgs_pb2.ListOrgsRequest(), metadata=env.su)).orgs[0].id
        newer = await env.credential(org_id, "fresh", secret=f"{SECRET}-fresh")
        assert newer.kek_id == "new"
        resp = await env.creds.RewrapCredentials(credentials_pb2.RewrapCredentialsRequest(), metadata=env.su)
        assert (resp.rewrapped, resp.unchanged, resp.kek_id) == (3, 1, "new")
        again = await env.creds.RewrapCredentials(credentials_pb2.RewrapCredentialsRequest(), metadata=env.su)
        assert (again.rewrapped, again.unchanged) == (0, 4)
        listed = await env.creds.ListCredentials(
            credentials_pb2.ListCredentialsRequest(org_id=org_id), metadata=env.su
        )
        assert {c.kek_id for c in listed.credentials} == {"new"}
    # only the new KEK is needed from now on
    only_new = Keyring.from_spec(keks_spec({"new": both["new"]}))
    for i, cred_id in enumerate(ids):
        row = await _stored(migrated_db_url, cred_id)
        assert (
            decrypt(only_new, Envelope(row.kek_id, row.wrapped_dek, row.ciphertext), cred_id)
            == f"{SECRET}-{i}".encode()
        )
