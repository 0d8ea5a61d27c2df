"""Migration 0007 (model deployments, fallbacks, usage fields) on a database holding models, both
backends: the upgrade makes each existing model one deployment named "default" made of its own
fields, which then serves routes and updates as before; the downgrade keeps the models (their
first deployment's fields)."""

from __future__ import annotations

from alembic import command
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import inspect

from control_plane.store.db import _alembic_config, make_engine
from odock import sealing
from odock.v1 import models_pb2, node_pb2
from tests.control_plane.admin_env import open_admin_env
from tests.support.postgres import db_url  # noqa: F401
from tests.support.secrets import keks_spec

EU = "https://8.8.8.8/v1"


async def _tables_and_columns(url: str) -> tuple[set[str], set[str], set[str]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:

            def read(c: object) -> tuple[set[str], set[str], set[str]]:
                insp = inspect(c)
                return (
                    set(insp.get_table_names()),
                    {col["name"] for col in insp.get_columns("models")},
                    {col["name"] for col in insp.get_columns("usage_records")},
                )

            return await conn.run_sync(read)
    finally:
        await engine.dispose()


async def test_0007_gives_existing_models_one_default_deployment(db_url: str) -> None:  # noqa: F811
    cfg = _alembic_config(db_url)
    command.upgrade(cfg, "head")
    async with open_admin_env(db_url) as cp:
        keks = {"keks_spec": keks_spec(cp.secrets.keks), "kek_ids": tuple(cp.secrets.keks)}
        org = await cp.org("acme")
        await cp.credential(org.id, "main", secret="sk-main-0123456789abcd")
        await cp.credential(org.id, "second", secret="sk-second-0123456789ab")
        old = await cp.model(org.id, "gpt", upstream_slug="gpt-4.1", timeout=Duration(seconds=7))
        await cp.models.CreateModel(
            models_pb2.CreateModelRequest(model=models_pb2.Model(
                org_id=org.id, name="multi", family=old.family, deployments=[
                    models_pb2.Deployment(name="a", base_url=EU, credential="second", upstream_slug="s"),
                    models_pb2.Deployment(name="b", base_url=EU, credential="main", upstream_slug="s"),
                ])),
            metadata=cp.su,
        )  # fmt: skip
    command.downgrade(cfg, "0006")
    tables, model_columns, usage_columns = await _tables_and_columns(db_url)
    assert "model_deployments" not in tables and "fallbacks" not in model_columns
    assert "deployment" not in usage_columns
    command.upgrade(cfg, "head")
    tables, model_columns, usage_columns = await _tables_and_columns(db_url)
    assert "model_deployments" in tables and "fallbacks" in model_columns
    assert {"deployment", "upstream_attempts", "requested_model"} <= usage_columns
    async with open_admin_env(db_url, **keks) as cp:
        got = await cp.models.GetModel(models_pb2.GetModelRequest(org_id=org.id, name="gpt"), metadata=cp.su)
        assert got == old  # every field as before, its one deployment included
        multi = await cp.models.GetModel(
            models_pb2.GetModelRequest(org_id=org.id, name="multi"), metadata=cp.su
        )
        (only,) = multi.deployments  # the downgrade kept the first deployment only
        assert (only.name, only.credential, only.weight) == ("default", "second", 1)
        # routes resolve from the copied deployment
        node = sealing.NodeKeyPair()
        route = await cp.node.ResolveRoute(
            node_pb2.ResolveRouteRequest(org_id=org.id, model_name="gpt", node_public_key=node.public_key),
            metadata=cp.node_md,
        )
        (dep,) = route.deployments
        assert (dep.name, dep.base_url, dep.upstream_slug, dep.timeout.seconds) == (
            "default",
            old.base_url,
            "gpt-4.1",
            7,
        )
        sealed = sealing.Sealed(
            dep.credential_secret.ephemeral_public_key, dep.credential_secret.nonce,
            dep.credential_secret.ciphertext,
        )  # fmt: skip
        assert node.open(sealed, dep.credential_id.encode()) == b"sk-main-0123456789abcd"
        # the old top-level update still works on it
        updated = await cp.models.UpdateModel(
            models_pb2.UpdateModelRequest(
                model=models_pb2.Model(org_id=org.id, name="gpt", base_url=EU),
                update_mask=FieldMask(paths=["base_url"]),
            ),
            metadata=cp.su,
        )
        assert [(d.name, d.base_url) for d in updated.deployments] == [("default", EU)]
