"""A model's deployments and fallbacks (issue 14) through ModelService over real gRPC, on SQLite
and PostgreSQL: create/get/list/update, the defaults, every validation error, the proxy password
kept encrypted and never shown, fallbacks that must exist and block deleting their target."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import select

from control_plane.services.models import ModelServicer
from control_plane.store.db import make_engine
from control_plane.store.tables import ModelDeploymentRow
from odock.v1 import models_pb2
from tests.control_plane.admin_env import ANTHROPIC, AdminEnv, expect
from tests.support.tls_certs import make_pki

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EU = "https://eu.openai.example/v1"
US = "https://us.openai.example/v1"


@pytest.fixture(autouse=True)
def public_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[str]]]:
    """Every name resolves to a public address unless the test says otherwise (no real DNS)."""
    answers: dict[str, list[str]] = {}

    async def resolve(host: str, port: int) -> list[str]:
        return answers.get(host, ["93.184.216.34"])

    monkeypatch.setattr(ModelServicer, "resolve", staticmethod(resolve))
    yield answers


def dep(name: str = "", base_url: str = EU, credential: str = "main", **fields: Any) -> models_pb2.Deployment:
    fields.setdefault("upstream_slug", "gpt-4.1-mini")
    return models_pb2.Deployment(name=name, base_url=base_url, credential=credential, **fields)


async def create(cp: AdminEnv, org_id: str, name: str, *deps: models_pb2.Deployment, **fields: Any) -> Any:
    fields.setdefault("family", 1)
    return await cp.models.CreateModel(
        models_pb2.CreateModelRequest(
            model=models_pb2.Model(org_id=org_id, name=name, deployments=deps, **fields)
        ),
        metadata=cp.su,
    )


async def update(cp: AdminEnv, org_id: str, name: str, paths: list[str], **fields: Any) -> Any:
    return await cp.models.UpdateModel(
        models_pb2.UpdateModelRequest(
            model=models_pb2.Model(org_id=org_id, name=name, **fields), update_mask=FieldMask(paths=paths)
        ),
        metadata=cp.su,
    )


async def get(cp: AdminEnv, org_id: str, name: str) -> models_pb2.Model:
    got: models_pb2.Model = await cp.models.GetModel(
        models_pb2.GetModelRequest(org_id=org_id, name=name), metadata=cp.su
    )
    return got


async def setup(cp: AdminEnv) -> str:
    org = await cp.org("acme")
    await cp.credential(org.id)
    await cp.credential(org.id, "second", secret="sk-second-0123456789")
    return org.id


async def test_a_model_without_deployments_has_one_named_default(cp: AdminEnv) -> None:
    org_id = await setup(cp)
    model = await cp.model(org_id, "gpt", timeout=Duration(seconds=5))
    (only,) = model.deployments
    assert (only.name, only.base_url, only.credential, only.upstream_slug) == (
        "default",
        model.base_url,
        "main",
        model.upstream_slug,
    )
    assert only.timeout.ToMilliseconds() == 5000 and (only.weight, only.priority) == (1, 0)
    assert (only.proxy_url, only.ca_bundle) == ("", "") and list(model.fallbacks) == []
    assert await get(cp, org_id, "gpt") == model


async def test_create_get_list_with_deployments_and_fallbacks(cp: AdminEnv) -> None:
    org_id = await setup(cp)
    await cp.model(org_id, "backup")
    model = await create(
        cp, org_id, "gpt",
        dep(weight=90, timeout=Duration(seconds=7)),
        dep("us-east", US, "second", upstream_slug="gpt-4.1-mini-us", weight=10),
        dep(base_url=US, priority=1, proxy_url="http://ops:s3cret@proxy.example:3128"),
        fallbacks=["backup"],
    )  # fmt: skip
    assert [d.name for d in model.deployments] == ["default", "us-east", "d3"]
    assert [d.weight for d in model.deployments] == [90, 10, 1]
    assert [d.priority for d in model.deployments] == [0, 0, 1]
    # the top-level fields repeat the first deployment's
    assert (model.base_url, model.credential, model.upstream_slug, model.timeout.seconds) == (
        EU,
        "main",
        "gpt-4.1-mini",
        7,
    )
    assert model.deployments[1].credential == "second"
    assert model.deployments[2].proxy_url == "http://ops:***@proxy.example:3128"
    assert list(model.fallbacks) == ["backup"]
    assert await get(cp, org_id, "gpt") == model
    listed = await cp.models.ListModels(models_pb2.ListModelsRequest(org_id=org_id), metadata=cp.su)
    assert {m.name: m for m in listed.models}["gpt"] == model
    # the password is stored encrypted: in no column in clear
    engine = make_engine(cp.db_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(ModelDeploymentRow.__table__))).all()
    finally:
        await engine.dispose()
    assert len(rows) == 4 and not any(b"s3cret" in repr(r).encode() for r in rows)


async def test_top_level_fields_must_match_the_first_deployment(cp: AdminEnv) -> None:
    org_id = await setup(cp)
    same = await create(cp, org_id, "a", dep(), base_url=EU, credential="main", upstream_slug="gpt-4.1-mini")
    assert same.base_url == EU
    for field, value in (("base_url", US), ("credential", "second"), ("upstream_slug", "x"),
                         ("timeout", Duration(seconds=9))):  # fmt: skip
        msg = await expect(INVALID, create(cp, org_id, "b", dep(), **{field: value}))
        assert msg.startswith(f"model.{field}:") and "first deployment" in msg, msg


async def test_every_deployment_field_is_validated(cp: AdminEnv, public_dns: dict[str, list[str]]) -> None:
    org_id = await setup(cp)
    await cp.credential(org_id, "claude", family=ANTHROPIC)
    public_dns["internal.example"] = ["10.1.2.3"]
    cases: list[tuple[list[models_pb2.Deployment], str, str]] = [
        ([dep("UPPER")], "model.deployments[0].name:", "a-z"),
        ([dep("x" * 65)], "model.deployments[0].name:", "1-64"),
        ([dep("a"), dep("a")], "model.deployments[1].name:", "already"),
        ([dep(), dep("default")], "model.deployments[1].name:", "already"),
        ([dep()] * 17, "model.deployments:", "at most 16"),
        ([dep(base_url="ftp://x.example")], "model.deployments[default].base_url:", "scheme"),
        ([dep(base_url="https://u:p@x.example/v1")], "model.deployments[default].base_url:", "userinfo"),
        ([dep("eu", base_url="https://internal.example/v1")], "model.deployments[eu].base_url:", "private"),
        ([dep(base_url="https://api.openai.com")], "model.deployments[default].base_url:", "/v1"),
        ([dep(credential="")], "model.deployments[default].credential:", "required"),
        ([dep(credential="nope")], "model.deployments[default].credential:", "no credential"),
        ([dep(), dep(credential="claude")], "model.deployments[d2].credential:", "anthropic"),
        ([dep(upstream_slug="")], "model.deployments[default].upstream_slug:", "required"),
        ([dep(timeout=Duration(seconds=3601))], "model.deployments[default].timeout:", "3600"),
        ([dep(weight=1001)], "model.deployments[default].weight:", "1000"),
        ([dep(priority=101)], "model.deployments[default].priority:", "100"),
        ([dep(proxy_url="socks5://p.example:1080")], "model.deployments[default].proxy_url:", "http://"),
        ([dep(proxy_url="https://p.example:3128")], "model.deployments[default].proxy_url:", "https proxies"),
        ([dep(proxy_url="http://p.example")], "model.deployments[default].proxy_url:", "port"),
        ([dep(proxy_url="http://p.example:3128/path")], "model.deployments[default].proxy_url:", "path"),
        ([dep(proxy_url="http://p.example:3128?a=1")], "model.deployments[default].proxy_url:", "query"),
        ([dep(proxy_url="http://internal.example:3128")], "model.deployments[default].proxy_url:", "private"),
        ([dep(proxy_url="http://127.0.0.1:3128")], "model.deployments[default].proxy_url:", "loopback"),
        ([dep(proxy_url="http://u:***@p.example:3128")], "model.deployments[default].proxy_url:", "***"),
        ([dep(ca_bundle="not a certificate")], "model.deployments[default].ca_bundle:", "PEM"),
        ([dep(ca_bundle="x" * (64 * 1024 + 1))], "model.deployments[default].ca_bundle:", "65536"),
    ]
    for deps, prefix, reason in cases:
        msg = await expect(INVALID, create(cp, org_id, "m", *deps))
        assert msg.startswith(prefix) and reason in msg, (prefix, msg)
        assert "p@" not in msg
    for fallbacks, prefix, reason in (
        (["a", "b", "c", "d", "e", "f"], "model.fallbacks:", "at most 5"),
        (["m"], "model.fallbacks[0]:", "own fallback"),
        (["x", "x"], "model.fallbacks[1]:", "twice"),
        (["a/b"], "model.fallbacks[0]:", "/"),
        (["missing"], "model.fallbacks:", "no model named 'missing'"),
    ):
        msg = await expect(INVALID, create(cp, org_id, "m", dep(), fallbacks=fallbacks))
        assert msg.startswith(prefix) and reason in msg, (prefix, msg)
    await expect(grpc.StatusCode.NOT_FOUND, get(cp, org_id, "m"))


async def test_a_ca_bundle_that_parses_is_kept(cp: AdminEnv, tmp_path: Any) -> None:
    org_id = await setup(cp)
    pem = make_pki(tmp_path).ca.read_text()
    model = await create(cp, org_id, "self-hosted", dep(ca_bundle=pem))
    assert model.deployments[0].ca_bundle == pem


async def test_update_replaces_deployments_and_fallbacks(cp: AdminEnv) -> None:
    org_id = await setup(cp)
    await cp.model(org_id, "backup")
    await cp.model(org_id, "gpt", base_url=EU)
    # the old top-level masks change the one deployment
    one = await update(cp, org_id, "gpt", ["base_url", "credential"], base_url=US, credential="second")
    assert [(d.name, d.base_url, d.credential) for d in one.deployments] == [("default", US, "second")]
    two = await update(
        cp, org_id, "gpt", ["deployments", "fallbacks"],
        deployments=[dep("eu"), dep("us", US, "second", weight=3)], fallbacks=["backup"],
    )  # fmt: skip
    assert [(d.name, d.weight) for d in two.deployments] == [("eu", 1), ("us", 3)]
    assert (two.base_url, two.credential, list(two.fallbacks)) == (EU, "main", ["backup"])
    assert await get(cp, org_id, "gpt") == two
    # ... and are refused on a model with several
    for path, value in (("base_url", US), ("credential", "main"), ("upstream_slug", "x"),
                        ("timeout", Duration(seconds=3))):  # fmt: skip
        msg = await expect(INVALID, update(cp, org_id, "gpt", [path], **{path: value}))
        assert msg.startswith(f"model.{path}:") and "2 deployments" in msg and "deployments field" in msg
    # an explicit empty list is refused; fallbacks may be cleared
    msg = await expect(INVALID, update(cp, org_id, "gpt", ["deployments"]))
    assert msg.startswith("model.deployments:") and "at least one" in msg
    cleared = await update(cp, org_id, "gpt", ["fallbacks"])
    assert list(cleared.fallbacks) == [] and len(cleared.deployments) == 2
    # the same list again changes nothing (not even the update time)
    again = await update(
        cp, org_id, "gpt", ["deployments"], deployments=[dep("eu"), dep("us", US, "second", weight=3)]
    )
    assert again == cleared


async def test_a_masked_proxy_password_keeps_the_stored_one(cp: AdminEnv) -> None:
    org_id = await setup(cp)
    model = await create(cp, org_id, "gpt", dep("eu", proxy_url="http://ops:s3cret@proxy.example:3128"))
    shown = list(model.deployments)
    assert shown[0].proxy_url == "http://ops:***@proxy.example:3128"
    # sending back what Get showed keeps the password, and is no change at all
    same = await update(cp, org_id, "gpt", ["deployments"], deployments=shown)
    assert same == model
    # another deployment name has no stored password to keep
    renamed = [models_pb2.Deployment(**{**_fields(shown[0]), "name": "other"})]
    msg = await expect(INVALID, update(cp, org_id, "gpt", ["deployments"], deployments=renamed))
    assert msg.startswith("model.deployments[other].proxy_url:") and "give the password" in msg
    changed = await update(
        cp,
        org_id,
        "gpt",
        ["deployments"],
        deployments=[dep("eu", proxy_url="http://ops:n3w@proxy.example:3128")],
    )
    assert changed.update_time != model.update_time
    assert changed.deployments[0].proxy_url == "http://ops:***@proxy.example:3128"


def _fields(d: models_pb2.Deployment) -> dict[str, Any]:
    return {f.name: v for f, v in d.ListFields()}


async def test_a_fallback_target_cannot_be_deleted(cp: AdminEnv) -> None:
    org_id = await setup(cp)
    await cp.model(org_id, "backup")
    await create(cp, org_id, "gpt", dep(), fallbacks=["backup"])
    await create(cp, org_id, "gpt-2", dep(), fallbacks=["backup"])
    msg = await expect(
        grpc.StatusCode.FAILED_PRECONDITION,
        cp.models.DeleteModel(models_pb2.DeleteModelRequest(org_id=org_id, name="backup"), metadata=cp.su),
    )
    assert "'gpt'" in msg and "'gpt-2'" in msg and "fallback" in msg
    for name in ("gpt", "gpt-2"):
        await update(cp, org_id, name, ["fallbacks"])
    await cp.models.DeleteModel(models_pb2.DeleteModelRequest(org_id=org_id, name="backup"), metadata=cp.su)
    # deleting a model deletes its deployments (and a model may be deleted while it names fallbacks)
    await cp.models.DeleteModel(models_pb2.DeleteModelRequest(org_id=org_id, name="gpt"), metadata=cp.su)
