"""ModelService over real gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask

from odock.v1 import common_pb2, models_pb2, node_pb2
from tests.control_plane.admin_env import ANTHROPIC, OPENAI, AdminEnv, expect

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def test_create_get_with_defaults(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    await cp.credential(org.id)
    pricing = common_pb2.Pricing(input_per_mtok_micros=2_500_000, output_per_mtok_micros=10_000_000,
                                 cached_input_per_mtok_micros=1_250_000)  # fmt: skip
    model = await cp.model(org.id, "gpt-4.1-mini:latest", pricing=pricing)
    assert model.id.startswith("mdl_") and model.credential == "main"
    assert model.timeout.seconds == 60 and model.enabled is True
    assert model.pricing == pricing
    got = await cp.models.GetModel(
        models_pb2.GetModelRequest(org_id=org.id, name="gpt-4.1-mini:latest"), metadata=cp.su
    )
    assert got == model
    disabled = await cp.model(org.id, "off", enabled=False, timeout=Duration(seconds=5, nanos=500_000_000))
    assert disabled.enabled is False and disabled.timeout.ToMilliseconds() == 5500
    assert not disabled.pricing.HasField("cached_input_per_mtok_micros")


async def test_base_url_and_other_fields_are_validated(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    await cp.credential(org.id)
    await cp.credential(org.id, "claude", family=ANTHROPIC)
    bad_urls = {
        "ftp://api.example.com": "scheme must be http or https",
        "https://user:pw@api.example.com/v1": "userinfo",
        "https://api.example.com/v1?x=1": "query",
        "https://api.example.com/v1#frag": "fragment",
        "https:///v1": "host is required",
        "api.example.com/v1": "scheme must be http or https",
        "": "required",
    }
    for url, reason in bad_urls.items():
        msg = await expect(INVALID, cp.model(org.id, "m", base_url=url))
        assert msg.startswith("model.base_url:") and reason in msg, msg
        assert "pw" not in msg
    cases: dict[str, dict[str, object]] = {
        "model.name": {"name": "a/b"},
        "model.family": {"family": common_pb2.PROVIDER_FAMILY_UNSPECIFIED},
        "model.upstream_slug": {"upstream_slug": ""},
        "model.timeout": {"timeout": Duration(seconds=3601)},
        "model.pricing.input_per_mtok_micros": {"pricing": common_pb2.Pricing(input_per_mtok_micros=-1)},
        "model.pricing.cached_input_per_mtok_micros": {
            "pricing": common_pb2.Pricing(cached_input_per_mtok_micros=-5)
        },
        "model.credential": {"credential": "missing"},
    }
    for field, fields in cases.items():
        name = str(fields.pop("name", "m"))
        credential = str(fields.pop("credential", "main"))
        msg = await expect(INVALID, cp.model(org.id, name, credential, **fields))
        assert msg.startswith(f"{field}:"), msg
    # the credential must be of the model's family
    msg = await expect(INVALID, cp.model(org.id, "m", "claude"))
    assert msg.startswith("model.credential:") and "anthropic" in msg and "openai" in msg
    ok = await cp.model(org.id, "claude-sonnet", "claude", family=ANTHROPIC, base_url="https://api.anthropic.com")
    assert ok.family == ANTHROPIC
    # a credential of another org is not visible
    other = await cp.org("other")
    await cp.credential(other.id, "theirs")
    msg = await expect(INVALID, cp.model(org.id, "m", "theirs"))
    assert msg.startswith("model.credential:")


async def test_name_unique_per_org_not_globally(cp: AdminEnv) -> None:
    a, b = await cp.org("a"), await cp.org("b")
    for org in (a, b):
        await cp.credential(org.id)
        await cp.model(org.id, "gpt")
    msg = await expect(grpc.StatusCode.ALREADY_EXISTS, cp.model(a.id, "gpt"))
    assert "'gpt'" in msg
    await expect(grpc.StatusCode.NOT_FOUND, cp.model("org_missing", "gpt"))


async def test_list_paginates(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    await cp.credential(org.id)
    names = [f"m{i}" for i in range(5)]
    for n in names:
        await cp.model(org.id, n)
    seen: list[str] = []
    token = ""
    for _ in range(5):
        resp = await cp.models.ListModels(
            models_pb2.ListModelsRequest(org_id=org.id, page_size=2, page_token=token), metadata=cp.su
        )
        seen += [m.name for m in resp.models]
        assert all(m.credential == "main" for m in resp.models)
        token = resp.next_page_token
        if not token:
            break
    assert seen == names


async def test_update_with_field_mask(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    await cp.credential(org.id)
    await cp.credential(org.id, "second")
    await cp.credential(org.id, "claude", family=ANTHROPIC)
    model = await cp.model(
        org.id, "gpt", pricing=common_pb2.Pricing(input_per_mtok_micros=1, output_per_mtok_micros=2)
    )
    req = models_pb2.UpdateModelRequest(
        model=models_pb2.Model(org_id=org.id, name="gpt", upstream_slug="gpt-5", base_url="ftp://ignored",
                               credential="second", enabled=False),
        update_mask=FieldMask(paths=["upstream_slug", "credential", "enabled"]),
    )  # fmt: skip
    updated = await cp.models.UpdateModel(req, metadata=cp.su)
    assert (updated.upstream_slug, updated.credential, updated.enabled) == ("gpt-5", "second", False)
    assert updated.base_url == model.base_url and updated.pricing == model.pricing
    sub = models_pb2.UpdateModelRequest(
        model=models_pb2.Model(
            org_id=org.id, name="gpt", pricing=common_pb2.Pricing(output_per_mtok_micros=7)
        ),
        update_mask=FieldMask(paths=["pricing.output_per_mtok_micros"]),
    )
    updated = await cp.models.UpdateModel(sub, metadata=cp.su)
    assert updated.pricing.input_per_mtok_micros == 1 and updated.pricing.output_per_mtok_micros == 7
    # changing the family alone leaves the model pointing at a credential of the wrong family
    msg = await expect(
        INVALID,
        cp.models.UpdateModel(
            models_pb2.UpdateModelRequest(model=models_pb2.Model(org_id=org.id, name="gpt", family=ANTHROPIC),
                                          update_mask=FieldMask(paths=["family"])),
            metadata=cp.su,
        ),
    )  # fmt: skip
    assert msg.startswith("model.credential:")
    both = await cp.models.UpdateModel(
        models_pb2.UpdateModelRequest(
            model=models_pb2.Model(org_id=org.id, name="gpt", family=ANTHROPIC, credential="claude",
                                   base_url="https://api.anthropic.com"),
            update_mask=FieldMask(paths=["family", "credential", "base_url"]),
        ),
        metadata=cp.su,
    )
    assert both.family == ANTHROPIC and both.credential == "claude"
    for paths, model_msg, field in (
        (
            ["base_url"],
            models_pb2.Model(org_id=org.id, name="gpt", base_url="https://x/?q"),
            "model.base_url",
        ),
        (["name"], models_pb2.Model(org_id=org.id, name="gpt"), "update_mask"),
        (
            ["timeout"],
            models_pb2.Model(org_id=org.id, name="gpt", timeout=Duration(seconds=-1)),
            "model.timeout",
        ),
    ):
        msg = await expect(
            INVALID,
            cp.models.UpdateModel(models_pb2.UpdateModelRequest(model=model_msg, update_mask=FieldMask(paths=paths)),
                                  metadata=cp.su),
        )  # fmt: skip
        assert msg.startswith(f"{field}:"), msg
    await expect(
        grpc.StatusCode.NOT_FOUND,
        cp.models.UpdateModel(models_pb2.UpdateModelRequest(model=models_pb2.Model(org_id=org.id, name="nope")),
                              metadata=cp.su),
    )  # fmt: skip


async def test_empty_mask_replaces_every_settable_field(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    await cp.credential(org.id)
    await cp.model(org.id, "gpt", enabled=False, timeout=Duration(seconds=9),
                   pricing=common_pb2.Pricing(input_per_mtok_micros=5))  # fmt: skip
    replaced = await cp.models.UpdateModel(
        models_pb2.UpdateModelRequest(
            model=models_pb2.Model(org_id=org.id, name="gpt", family=OPENAI, upstream_slug="s2",
                                   base_url="http://h:1", credential="main"),
        ),
        metadata=cp.su,
    )  # fmt: skip
    assert replaced.upstream_slug == "s2" and replaced.enabled is True and replaced.timeout.seconds == 60
    assert replaced.pricing.input_per_mtok_micros == 0


async def test_delete(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    await cp.credential(org.id)
    await cp.model(org.id, "gpt")
    req = models_pb2.DeleteModelRequest(org_id=org.id, name="gpt")
    await cp.models.DeleteModel(req, metadata=cp.su)
    await expect(grpc.StatusCode.NOT_FOUND, cp.models.GetModel(models_pb2.GetModelRequest(org_id=org.id, name="gpt"),
                                                               metadata=cp.su))  # fmt: skip
    await expect(grpc.StatusCode.NOT_FOUND, cp.models.DeleteModel(req, metadata=cp.su))


async def test_model_changes_are_announced_on_the_watch(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    await cp.credential(org.id)
    watch = cp.node.Watch(node_pb2.WatchRequest(after_revision=0, node_id="t"), metadata=cp.node_md)
    await cp.model(org.id, "gpt")
    await cp.models.UpdateModel(
        models_pb2.UpdateModelRequest(model=models_pb2.Model(org_id=org.id, name="gpt", upstream_slug="x"),
                                      update_mask=FieldMask(paths=["upstream_slug"])),
        metadata=cp.su,
    )  # fmt: skip
    # a no-op update announces nothing
    await cp.models.UpdateModel(
        models_pb2.UpdateModelRequest(model=models_pb2.Model(org_id=org.id, name="gpt", upstream_slug="x"),
                                      update_mask=FieldMask(paths=["upstream_slug"])),
        metadata=cp.su,
    )  # fmt: skip
    await cp.models.DeleteModel(models_pb2.DeleteModelRequest(org_id=org.id, name="gpt"), metadata=cp.su)
    seen: list[tuple[int, str]] = []
    async for event in watch:
        if event.HasField("invalidation"):
            seen.append((event.invalidation.kind, event.invalidation.model_name))
        if len(seen) == 3:
            break
    watch.cancel()
    assert seen == [(node_pb2.INVALIDATION_KIND_MODEL, "gpt")] * 3
