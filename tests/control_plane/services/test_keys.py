"""VirtualKeyService over real gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select

from control_plane.store.db import make_engine
from control_plane.store.tables import VirtualKeyRow
from odock import keyformat
from odock.v1 import common_pb2, keys_pb2, node_pb2
from tests.control_plane.admin_env import AdminEnv, bearer, expect

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def ts(delta: timedelta) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(datetime.now(UTC) + delta)
    return t


async def _digests(db_url: str, key_id: str) -> tuple[bytes, bytes | None]:
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(
                select(VirtualKeyRow.digest, VirtualKeyRow.previous_digest).where(VirtualKeyRow.id == key_id)
            )).one()  # fmt: skip
            return bytes(row[0]), None if row[1] is None else bytes(row[1])
    finally:
        await engine.dispose()


async def _org_with_models(cp: AdminEnv, *names: str) -> str:
    org = await cp.org("acme")
    await cp.credential(org.id)
    for n in names:
        await cp.model(org.id, n)
    return org.id


async def test_create_returns_plaintext_once_and_stores_only_the_digest(cp: AdminEnv) -> None:
    org_id = await _org_with_models(cp, "gpt")
    resp = await cp.key(org_id, name="ci", labels={"env": "ci"},
                        limits=common_pb2.KeyLimits(requests_per_minute=10, budget_micros=5_000_000))  # fmt: skip
    secret, key = resp.secret, resp.key
    assert keyformat.is_well_formed(secret) and len(secret) == 53
    assert key.id.startswith("key_") and key.display == f"odk-…{secret[-4:]}"
    assert (
        key.all_models
        and key.limits.requests_per_minute == 10
        and not key.limits.HasField("tokens_per_minute")
    )
    assert not key.revoked and not key.HasField("expire_time")
    stored, previous = await _digests(cp.db_url, key.id)
    assert stored == keyformat.digest(cp.secrets.pepper, secret) and previous is None
    got = await cp.keys.GetVirtualKey(keys_pb2.GetVirtualKeyRequest(org_id=org_id, id=key.id), metadata=cp.su)
    listed = await cp.keys.ListVirtualKeys(keys_pb2.ListVirtualKeysRequest(org_id=org_id), metadata=cp.su)
    assert got == key and list(listed.keys) == [key]
    for shown in (str(got), str(listed)):
        assert secret not in shown and secret[4:-4] not in shown
    # two keys never share a secret
    assert (await cp.key(org_id)).secret != secret


async def test_scope_is_checked_against_existing_models(cp: AdminEnv) -> None:
    org_id = await _org_with_models(cp, "gpt", "claude")
    scoped = await cp.key(org_id, models=["gpt", "claude", "gpt"])
    assert list(scoped.key.models) == ["gpt", "claude"] and not scoped.key.all_models
    cases: dict[str, dict[str, Any]] = {
        "required": {},
        "not both": {"all_models": True, "models": ["gpt"]},
        "no model named 'nope'": {"models": ["gpt", "nope"]},
    }
    for reason, fields in cases.items():
        req = keys_pb2.CreateVirtualKeyRequest(key=keys_pb2.VirtualKey(org_id=org_id, **fields))
        msg = await expect(INVALID, cp.keys.CreateVirtualKey(req, metadata=cp.su))
        assert msg.startswith("key.models:") and reason in msg, msg
    # a model of another org does not count, even for the super-admin
    other = await cp.org("other")
    await cp.credential(other.id)
    await cp.model(other.id, "theirs")
    msg = await expect(INVALID, cp.key(org_id, models=["theirs"]))
    assert "theirs" in msg


async def test_create_validates_other_fields(cp: AdminEnv) -> None:
    org_id = await _org_with_models(cp)
    cases: dict[str, dict[str, Any]] = {
        "key.expire_time": {"expire_time": ts(-timedelta(seconds=1))},
        "key.name": {"name": "Bad Name"},
        "key.limits.budget_micros": {"limits": common_pb2.KeyLimits(budget_micros=-1)},
        "key.labels": {"labels": {"": "x"}},
    }
    for field, fields in cases.items():
        msg = await expect(INVALID, cp.key(org_id, **fields))
        assert msg.startswith(field), msg
    msg = await expect(INVALID, cp.keys.CreateVirtualKey(keys_pb2.CreateVirtualKeyRequest(), metadata=cp.su))
    assert msg == "key.org_id: required"
    await expect(grpc.StatusCode.NOT_FOUND, cp.key("org_missing"))
    await cp.key(org_id, name="dup")
    msg = await expect(grpc.StatusCode.ALREADY_EXISTS, cp.key(org_id, name="dup"))
    assert "'dup'" in msg
    future = await cp.key(org_id, expire_time=ts(timedelta(days=1)))
    assert future.key.HasField("expire_time")


async def test_list_hides_revoked_and_paginates(cp: AdminEnv) -> None:
    org_id = await _org_with_models(cp)
    ids = sorted([(await cp.key(org_id)).key.id for _ in range(5)])
    await cp.keys.RevokeVirtualKey(keys_pb2.RevokeVirtualKeyRequest(org_id=org_id, id=ids[1]), metadata=cp.su)
    live = await cp.keys.ListVirtualKeys(keys_pb2.ListVirtualKeysRequest(org_id=org_id), metadata=cp.su)
    assert [k.id for k in live.keys] == [i for i in ids if i != ids[1]]
    seen: list[str] = []
    token = ""
    for _ in range(5):
        page = await cp.keys.ListVirtualKeys(
            keys_pb2.ListVirtualKeysRequest(
                org_id=org_id, include_revoked=True, page_size=2, page_token=token
            ),
            metadata=cp.su,
        )
        seen += [k.id for k in page.keys]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    # a token from the include_revoked listing is refused on the other listing
    first = await cp.keys.ListVirtualKeys(
        keys_pb2.ListVirtualKeysRequest(org_id=org_id, include_revoked=True, page_size=1), metadata=cp.su
    )
    await expect(INVALID, cp.keys.ListVirtualKeys(
        keys_pb2.ListVirtualKeysRequest(org_id=org_id, page_token=first.next_page_token), metadata=cp.su))  # fmt: skip


async def test_get_and_revoke_errors(cp: AdminEnv) -> None:
    org_id = await _org_with_models(cp)
    other = await cp.org("other")
    key = (await cp.key(org_id)).key
    # a key is only found under its own org
    await expect(
        grpc.StatusCode.NOT_FOUND,
        cp.keys.GetVirtualKey(keys_pb2.GetVirtualKeyRequest(org_id=other.id, id=key.id), metadata=cp.su),
    )
    await expect(
        grpc.StatusCode.NOT_FOUND,
        cp.keys.RevokeVirtualKey(keys_pb2.RevokeVirtualKeyRequest(org_id=org_id, id="key_x"), metadata=cp.su),
    )
    msg = await expect(
        INVALID, cp.keys.GetVirtualKey(keys_pb2.GetVirtualKeyRequest(org_id=org_id), metadata=cp.su)
    )
    assert msg == "id: required"  # fmt: skip
    revoked = await cp.keys.RevokeVirtualKey(
        keys_pb2.RevokeVirtualKeyRequest(org_id=org_id, id=key.id), metadata=cp.su
    )
    assert revoked.revoked and revoked.HasField("revoke_time")
    again = await cp.keys.RevokeVirtualKey(
        keys_pb2.RevokeVirtualKeyRequest(org_id=org_id, id=key.id), metadata=cp.su
    )
    assert again.revoke_time == revoked.revoke_time
    await expect(grpc.StatusCode.FAILED_PRECONDITION, cp.keys.RotateVirtualKey(
        keys_pb2.RotateVirtualKeyRequest(org_id=org_id, id=key.id), metadata=cp.su))  # fmt: skip
    await expect(grpc.StatusCode.FAILED_PRECONDITION, cp.keys.UpdateVirtualKey(
        keys_pb2.UpdateVirtualKeyRequest(key=keys_pb2.VirtualKey(org_id=org_id, id=key.id, name="x"),
                                         update_mask=FieldMask(paths=["name"])), metadata=cp.su))  # fmt: skip


async def test_rotate_with_and_without_grace(cp: AdminEnv) -> None:
    org_id = await _org_with_models(cp)
    created = await cp.key(org_id)
    old_digest = keyformat.digest(cp.secrets.pepper, created.secret)
    rotated = await cp.keys.RotateVirtualKey(
        keys_pb2.RotateVirtualKeyRequest(
            org_id=org_id, id=created.key.id, grace_period=Duration(seconds=3600)
        ),
        metadata=cp.su,
    )
    assert rotated.secret != created.secret and keyformat.is_well_formed(rotated.secret)
    assert rotated.key.display == f"odk-…{rotated.secret[-4:]}"
    assert rotated.key.previous_display == created.key.display
    grace_end = rotated.key.previous_secret_expire_time.ToDatetime(tzinfo=UTC)
    assert timedelta(minutes=59) < grace_end - datetime.now(UTC) <= timedelta(hours=1)
    digest, previous = await _digests(cp.db_url, created.key.id)
    assert digest == keyformat.digest(cp.secrets.pepper, rotated.secret) and previous == old_digest
    # no grace: the old secret stops at once
    again = await cp.keys.RotateVirtualKey(
        keys_pb2.RotateVirtualKeyRequest(org_id=org_id, id=created.key.id), metadata=cp.su
    )
    assert not again.key.HasField("previous_secret_expire_time") and again.key.previous_display == ""
    assert (await _digests(cp.db_url, created.key.id))[1] is None
    msg = await expect(INVALID, cp.keys.RotateVirtualKey(
        keys_pb2.RotateVirtualKeyRequest(org_id=org_id, id=created.key.id, grace_period=Duration(seconds=-1)),
        metadata=cp.su))  # fmt: skip
    assert msg.startswith("grace_period:")
    await expect(grpc.StatusCode.NOT_FOUND, cp.keys.RotateVirtualKey(
        keys_pb2.RotateVirtualKeyRequest(org_id=org_id, id="key_nope"), metadata=cp.su))  # fmt: skip


async def test_update_with_field_mask(cp: AdminEnv) -> None:
    org_id = await _org_with_models(cp, "gpt", "claude")
    key = (
        await cp.key(org_id, name="k1", labels={"a": "1"}, limits=common_pb2.KeyLimits(tokens_per_minute=3))
    ).key

    async def update(paths: list[str], **fields: object) -> keys_pb2.VirtualKey:
        msg = keys_pb2.VirtualKey(org_id=org_id, id=key.id, **fields)  # type: ignore[arg-type]
        out: keys_pb2.VirtualKey = await cp.keys.UpdateVirtualKey(
            keys_pb2.UpdateVirtualKeyRequest(key=msg, update_mask=FieldMask(paths=paths)), metadata=cp.su
        )
        return out

    scoped = await update(["models"], models=["claude"], name="ignored")
    assert not scoped.all_models and list(scoped.models) == ["claude"] and scoped.name == "k1"
    back = await update(["all_models"], all_models=True)
    assert back.all_models and list(back.models) == []
    limited = await update(["limits.requests_per_minute"], limits=common_pb2.KeyLimits(requests_per_minute=9))
    assert limited.limits.requests_per_minute == 9 and limited.limits.tokens_per_minute == 3
    labelled = await update(["labels", "name"], labels={"b": "2"}, name="k2")
    assert labelled.labels == {"b": "2"} and labelled.name == "k2"
    expiring = await update(["expire_time"], expire_time=ts(timedelta(hours=2)))
    assert expiring.HasField("expire_time")
    cleared = await update(["expire_time"])
    assert not cleared.HasField("expire_time")
    for paths, fields, field in (
        (["models"], {"models": ["nope"]}, "key.models"),
        (["all_models"], {"all_models": False}, "key.models"),
        (["expire_time"], {"expire_time": ts(-timedelta(hours=1))}, "key.expire_time"),
        (["secret"], {}, "update_mask"),
    ):
        msg = await expect(INVALID, update(paths, **fields))
        assert msg.startswith(f"{field}:"), msg
    await cp.key(org_id, name="taken")
    await expect(grpc.StatusCode.ALREADY_EXISTS, update(["name"], name="taken"))


async def test_org_admin_keys_stay_in_its_org(cp: AdminEnv) -> None:
    org_id = await _org_with_models(cp, "gpt")
    other = await cp.org("other")
    await cp.credential(other.id)
    await cp.model(other.id, "theirs")
    md = bearer(await cp.org_token(org_id))
    own = await cp.keys.CreateVirtualKey(
        keys_pb2.CreateVirtualKeyRequest(key=keys_pb2.VirtualKey(org_id=org_id, models=["gpt"])), metadata=md
    )
    assert own.key.org_id == org_id
    msg = await expect(INVALID, cp.keys.CreateVirtualKey(
        keys_pb2.CreateVirtualKeyRequest(key=keys_pb2.VirtualKey(org_id=org_id, models=["theirs"])), metadata=md))  # fmt: skip
    assert "theirs" in msg
    await expect(grpc.StatusCode.PERMISSION_DENIED, cp.keys.CreateVirtualKey(
        keys_pb2.CreateVirtualKeyRequest(key=keys_pb2.VirtualKey(org_id=other.id, models=["theirs"])), metadata=md))  # fmt: skip


async def test_key_changes_are_announced_but_creation_is_not(cp: AdminEnv) -> None:
    org_id = await _org_with_models(cp, "gpt")
    watch = cp.node.Watch(node_pb2.WatchRequest(after_revision=0, node_id="t"), metadata=cp.node_md)
    key = (await cp.key(org_id)).key
    await cp.keys.UpdateVirtualKey(keys_pb2.UpdateVirtualKeyRequest(
        key=keys_pb2.VirtualKey(org_id=org_id, id=key.id, labels={"x": "y"}), update_mask=FieldMask(paths=["labels"])),
        metadata=cp.su)  # fmt: skip
    await cp.keys.RotateVirtualKey(keys_pb2.RotateVirtualKeyRequest(org_id=org_id, id=key.id), metadata=cp.su)
    await cp.keys.RevokeVirtualKey(keys_pb2.RevokeVirtualKeyRequest(org_id=org_id, id=key.id), metadata=cp.su)
    kinds: list[tuple[int, str]] = []
    async for event in watch:
        if event.HasField("invalidation") and event.invalidation.kind == node_pb2.INVALIDATION_KIND_KEY:
            kinds.append((event.invalidation.kind, event.invalidation.key_id))
            if len(kinds) == 3:
                break
    watch.cancel()
    assert kinds == [(node_pb2.INVALIDATION_KIND_KEY, key.id)] * 3
