"""OrgService over real gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from odock.v1 import common_pb2, orgs_pb2
from tests.control_plane.admin_env import AdminEnv, expect

NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def test_create_defaults_to_custom_tier_without_implicit_limits(cp: AdminEnv) -> None:
    org = await cp.org("acme", labels={"team": "ml"})
    assert org.id.startswith("org_") and len(org.id) == 30
    assert org.tier == "custom"
    assert not org.limits.HasField("tokens_per_minute")
    for field in ("requests_per_minute", "tokens_per_minute", "monthly_token_quota", "monthly_spend_cap_micros"):
        assert not org.effective_limits.HasField(field), field
    assert org.labels == {"team": "ml"}
    assert org.create_time.seconds > 0 and org.update_time == org.create_time


async def test_free_tier_carries_the_products_free_limits(cp: AdminEnv) -> None:
    org = await cp.org("acme", tier="free")
    assert org.effective_limits.monthly_token_quota == 100_000
    assert org.effective_limits.HasField("monthly_spend_cap_micros")
    assert org.effective_limits.monthly_spend_cap_micros == 0


async def test_overrides_merge_over_tier(cp: AdminEnv) -> None:
    org = await cp.org("acme", tier="standard", limits=common_pb2.Limits(tokens_per_minute=5))
    assert org.limits.tokens_per_minute == 5
    assert org.effective_limits.tokens_per_minute == 5
    assert org.effective_limits.requests_per_minute == 1_000
    ent = await cp.org("big", tier="enterprise")
    assert not ent.effective_limits.HasField("requests_per_minute")


async def test_get_by_id_and_name(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    assert await cp.orgs.GetOrg(orgs_pb2.GetOrgRequest(id=org.id), metadata=cp.su) == org
    assert await cp.orgs.GetOrg(orgs_pb2.GetOrgRequest(name="acme"), metadata=cp.su) == org
    await expect(NOT_FOUND, cp.orgs.GetOrg(orgs_pb2.GetOrgRequest(name="nope"), metadata=cp.su))
    await expect(NOT_FOUND, cp.orgs.GetOrg(orgs_pb2.GetOrgRequest(id="org_missing"), metadata=cp.su))
    msg = await expect(INVALID, cp.orgs.GetOrg(orgs_pb2.GetOrgRequest(), metadata=cp.su))
    assert msg.startswith("id:")
    await expect(INVALID, cp.orgs.GetOrg(orgs_pb2.GetOrgRequest(id=org.id, name="acme"), metadata=cp.su))


async def test_create_rejects_bad_input(cp: AdminEnv) -> None:
    await cp.org("acme")
    msg = await expect(grpc.StatusCode.ALREADY_EXISTS, cp.org("acme"))
    assert "acme" in msg
    cases = {
        "org.name": orgs_pb2.Org(name="Bad Name"),
        "org.tier": orgs_pb2.Org(name="x1", tier="platinum"),
        "org.limits.requests_per_minute": orgs_pb2.Org(
            name="x2", limits=common_pb2.Limits(requests_per_minute=-1)
        ),
        "org.outage_policy": orgs_pb2.Org(name="x3", outage_policy=99),  # type: ignore[arg-type]
        "org.default_models['v1/x']": orgs_pb2.Org(name="x4", default_models={"v1/x": "m"}),
        "org.labels[' bad']": orgs_pb2.Org(name="x5", labels={" bad": "v"}),
    }
    for field, org in cases.items():
        msg = await expect(INVALID, cp.orgs.CreateOrg(orgs_pb2.CreateOrgRequest(org=org), metadata=cp.su))
        assert msg.startswith(f"{field}:"), msg
    empty = await expect(INVALID, cp.orgs.CreateOrg(orgs_pb2.CreateOrgRequest(), metadata=cp.su))
    assert empty == "org.name: required"


async def test_list_paginates_in_name_order(cp: AdminEnv) -> None:
    names = [f"org-{i:02d}" for i in range(7)]
    for n in reversed(names):
        await cp.org(n)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        resp = await cp.orgs.ListOrgs(orgs_pb2.ListOrgsRequest(page_size=3, page_token=token), metadata=cp.su)
        seen += [o.name for o in resp.orgs]
        pages += 1
        token = resp.next_page_token
        if not token:
            break
        assert pages < 10
    assert seen == names and pages == 3
    everything = await cp.orgs.ListOrgs(orgs_pb2.ListOrgsRequest(), metadata=cp.su)
    assert [o.name for o in everything.orgs] == names and everything.next_page_token == ""
    for bad in ("!!!", "eyJzIjoibW9kZWxzOngiLCJhIjoieCJ9"):  # garbage; a token from another listing
        msg = await expect(
            INVALID, cp.orgs.ListOrgs(orgs_pb2.ListOrgsRequest(page_token=bad), metadata=cp.su)
        )
        assert msg.startswith("page_token:")
    await expect(INVALID, cp.orgs.ListOrgs(orgs_pb2.ListOrgsRequest(page_size=-1), metadata=cp.su))


async def test_update_with_field_mask_touches_only_masked_fields(cp: AdminEnv) -> None:
    org = await cp.org("acme", labels={"a": "1"}, limits=common_pb2.Limits(requests_per_minute=7))
    req = orgs_pb2.UpdateOrgRequest(
        org=orgs_pb2.Org(id=org.id, name="ignored-name", tier="standard", labels={"b": "2"}),
        update_mask=FieldMask(paths=["tier", "labels"]),
    )
    updated = await cp.orgs.UpdateOrg(req, metadata=cp.su)
    assert updated.name == "acme" and updated.tier == "standard" and updated.labels == {"b": "2"}
    assert updated.limits.requests_per_minute == 7
    assert updated.update_time.ToDatetime() >= org.update_time.ToDatetime()
    sub = orgs_pb2.UpdateOrgRequest(
        org=orgs_pb2.Org(id=org.id, limits=common_pb2.Limits(tokens_per_minute=9)),
        update_mask=FieldMask(paths=["limits.tokens_per_minute"]),
    )
    updated = await cp.orgs.UpdateOrg(sub, metadata=cp.su)
    assert updated.limits.requests_per_minute == 7 and updated.limits.tokens_per_minute == 9
    clear = orgs_pb2.UpdateOrgRequest(org=orgs_pb2.Org(id=org.id), update_mask=FieldMask(paths=["limits"]))
    updated = await cp.orgs.UpdateOrg(clear, metadata=cp.su)
    assert not updated.limits.HasField("requests_per_minute")
    assert updated.effective_limits.requests_per_minute == 1_000
    renamed = await cp.orgs.UpdateOrg(
        orgs_pb2.UpdateOrgRequest(
            org=orgs_pb2.Org(id=org.id, name="acme2"), update_mask=FieldMask(paths=["name"])
        ),
        metadata=cp.su,
    )
    assert renamed.name == "acme2" and renamed.tier == "standard"


async def test_update_errors(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    await cp.org("taken")
    mask = FieldMask(paths=["name"])
    await expect(
        grpc.StatusCode.ALREADY_EXISTS,
        cp.orgs.UpdateOrg(orgs_pb2.UpdateOrgRequest(org=orgs_pb2.Org(id=org.id, name="taken"), update_mask=mask),
                          metadata=cp.su),
    )  # fmt: skip
    msg = await expect(
        INVALID,
        cp.orgs.UpdateOrg(orgs_pb2.UpdateOrgRequest(org=orgs_pb2.Org(id=org.id), update_mask=FieldMask(paths=["id"])),
                          metadata=cp.su),
    )  # fmt: skip
    assert msg.startswith("update_mask:")
    await expect(
        NOT_FOUND,
        cp.orgs.UpdateOrg(orgs_pb2.UpdateOrgRequest(org=orgs_pb2.Org(id="org_nope", name="x"), update_mask=mask),
                          metadata=cp.su),
    )  # fmt: skip
    msg = await expect(INVALID, cp.orgs.UpdateOrg(orgs_pb2.UpdateOrgRequest(), metadata=cp.su))
    assert msg.startswith("org.id:")


async def test_empty_mask_replaces_every_settable_field(cp: AdminEnv) -> None:
    org = await cp.org("acme", labels={"a": "1"}, default_models={"/v1/embeddings": "emb"})
    replaced = await cp.orgs.UpdateOrg(
        orgs_pb2.UpdateOrgRequest(org=orgs_pb2.Org(id=org.id, name="acme", tier="enterprise")), metadata=cp.su
    )
    assert replaced.tier == "enterprise" and replaced.labels == {} and dict(replaced.default_models) == {}


async def test_delete_refuses_non_empty_org_unless_forced(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    await cp.credential(org.id)
    await cp.model(org.id, "gpt")
    await cp.key(org.id)
    await cp.org_token(org.id)
    msg = await expect(
        grpc.StatusCode.FAILED_PRECONDITION,
        cp.orgs.DeleteOrg(orgs_pb2.DeleteOrgRequest(id=org.id), metadata=cp.su),
    )
    assert "1 models" in msg and "1 credentials" in msg and "1 virtual keys" in msg and "force" in msg
    await cp.orgs.DeleteOrg(orgs_pb2.DeleteOrgRequest(id=org.id, force=True), metadata=cp.su)
    await expect(NOT_FOUND, cp.orgs.GetOrg(orgs_pb2.GetOrgRequest(id=org.id), metadata=cp.su))
    await expect(NOT_FOUND, cp.orgs.DeleteOrg(orgs_pb2.DeleteOrgRequest(id=org.id), metadata=cp.su))
    empty = await cp.org("empty")
    await cp.orgs.DeleteOrg(orgs_pb2.DeleteOrgRequest(id=empty.id), metadata=cp.su)
    # the name is free again
    assert (await cp.org("acme")).id != org.id


async def test_list_tiers(cp: AdminEnv) -> None:
    resp = await cp.orgs.ListTiers(orgs_pb2.ListTiersRequest(), metadata=cp.su)
    tiers = {t.name: t for t in resp.tiers}
    assert set(tiers) == {"free", "standard", "enterprise", "custom"}
    assert tiers["free"].limits.monthly_token_quota == 100_000
    assert tiers["free"].limits.monthly_spend_cap_micros == 0
    assert not tiers["enterprise"].limits.HasField("tokens_per_minute")
    assert all(t.description for t in resp.tiers)


async def test_org_admin_sees_and_updates_only_its_own_org(cp: AdminEnv) -> None:
    from tests.control_plane.admin_env import bearer

    org = await cp.org("acme")
    other = await cp.org("other")
    md = bearer(await cp.org_token(org.id))
    assert (await cp.orgs.GetOrg(orgs_pb2.GetOrgRequest(name="acme"), metadata=md)).id == org.id
    denied = grpc.StatusCode.PERMISSION_DENIED
    await expect(denied, cp.orgs.GetOrg(orgs_pb2.GetOrgRequest(name="other"), metadata=md))
    await expect(denied, cp.orgs.GetOrg(orgs_pb2.GetOrgRequest(id=other.id), metadata=md))
    # a name that does not exist does not tell an org admin anything either
    await expect(denied, cp.orgs.GetOrg(orgs_pb2.GetOrgRequest(name="ghost"), metadata=md))
    ok = await cp.orgs.UpdateOrg(
        orgs_pb2.UpdateOrgRequest(
            org=orgs_pb2.Org(id=org.id, labels={"x": "y"}), update_mask=FieldMask(paths=["labels"])
        ),
        metadata=md,
    )
    assert ok.labels == {"x": "y"}
    for paths, org_msg in (
        (["tier"], orgs_pb2.Org(id=org.id, tier="enterprise")),
        (
            ["limits.tokens_per_minute"],
            orgs_pb2.Org(id=org.id, limits=common_pb2.Limits(tokens_per_minute=1)),
        ),
    ):
        msg = await expect(
            denied,
            cp.orgs.UpdateOrg(
                orgs_pb2.UpdateOrgRequest(org=org_msg, update_mask=FieldMask(paths=paths)), metadata=md
            ),
        )
        assert "tier or limits" in msg
    # an empty mask that keeps tier and limits as they are is allowed
    same = await cp.orgs.UpdateOrg(
        orgs_pb2.UpdateOrgRequest(org=orgs_pb2.Org(id=org.id, name="acme", tier="custom")), metadata=md
    )
    assert same.labels == {}
    assert (await cp.orgs.GetOrg(orgs_pb2.GetOrgRequest(id=org.id), metadata=cp.su)).tier == "custom"
