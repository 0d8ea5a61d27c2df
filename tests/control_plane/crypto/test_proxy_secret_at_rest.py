"""A deployment's proxy password at rest (issue 14), on SQLite and PostgreSQL: never in the raw
database, re-wrapped with the credentials when the KEK rotates (readable with the new KEK
alone afterwards), and a swapped ciphertext fails loudly instead of handing out a wrong URL."""

from __future__ import annotations

import secrets as pysecrets
from typing import Any

import grpc
from sqlalchemy import select, update

from control_plane.store.db import make_engine, make_sessionmaker
from control_plane.store.tables import ModelDeploymentRow
from odock import sealing
from odock.v1 import credentials_pb2, models_pb2, node_pb2
from tests.control_plane.admin_env import OPENAI, AdminEnv, expect, open_admin_env
from tests.control_plane.crypto.test_secrets_at_rest import raw_database
from tests.support.secrets import kek, keks_spec

BASE = "https://8.8.8.8/v1"


def _keks(keks: dict[str, bytes]) -> dict[str, Any]:
    return {"keks_spec": keks_spec(keks), "kek_ids": tuple(keks)}


async def _route_proxies(cp: AdminEnv, org_id: str, model: str) -> list[str]:
    route = await cp.node.ResolveRoute(
        node_pb2.ResolveRouteRequest(
            org_id=org_id, model_name=model, node_public_key=sealing.NodeKeyPair().public_key
        ),
        metadata=cp.node_md,
    )
    return [d.proxy_url for d in route.deployments]


async def _rows(db_url: str) -> list[ModelDeploymentRow]:
    engine = make_engine(db_url)
    try:
        async with make_sessionmaker(engine)() as s:
            return list((await s.scalars(select(ModelDeploymentRow).order_by(ModelDeploymentRow.name))).all())
    finally:
        await engine.dispose()


async def _set(db_url: str, row_id: str, **values: Any) -> None:
    engine = make_engine(db_url)
    try:
        async with make_sessionmaker(engine).begin() as s:
            await s.execute(
                update(ModelDeploymentRow).where(ModelDeploymentRow.id == row_id).values(**values)
            )
    finally:
        await engine.dispose()


async def test_proxy_passwords_are_encrypted_rewrapped_and_bound_to_their_row(migrated_db_url: str) -> None:
    old_kek, new_kek = kek(), kek()
    passwords = {"a": f"pw-{pysecrets.token_hex(16)}", "b": f"pw-{pysecrets.token_hex(16)}"}
    proxies = {n: f"http://ops:{p}@9.9.9.{i + 1}:3128" for i, (n, p) in enumerate(passwords.items())}
    async with open_admin_env(migrated_db_url, **_keks({"old": old_kek})) as cp:
        org = await cp.org("acme")
        await cp.creds.CreateCredential(
            credentials_pb2.CreateCredentialRequest(org_id=org.id, name="main", family=OPENAI,
                                                    secret="sk-test-0123456789abcd"),
            metadata=cp.su,
        )  # fmt: skip
        deps = [models_pb2.Deployment(name=n, base_url=BASE, credential="main", upstream_slug="s", proxy_url=u)
                for n, u in proxies.items()]  # fmt: skip
        await cp.models.CreateModel(
            models_pb2.CreateModelRequest(model=models_pb2.Model(org_id=org.id, name="m", family=OPENAI,
                                                                 deployments=deps)),
            metadata=cp.su,
        )  # fmt: skip
        assert await _route_proxies(cp, org.id, "m") == list(proxies.values())
    raw = raw_database(migrated_db_url)
    assert not any(p.encode() in raw for p in passwords.values())
    assert {r.proxy_kek_id for r in await _rows(migrated_db_url)} == {"old"}

    async with open_admin_env(migrated_db_url, **_keks({"old": old_kek, "new": new_kek})) as cp:
        await cp.creds.RewrapCredentials(credentials_pb2.RewrapCredentialsRequest(), metadata=cp.su)
    assert {r.proxy_kek_id for r in await _rows(migrated_db_url)} == {"new"}

    async with open_admin_env(migrated_db_url, **_keks({"new": new_kek})) as cp:
        assert await _route_proxies(cp, org.id, "m") == list(proxies.values())
        # a ciphertext moved to another row does not open there: the route is refused, not wrong
        a, b = await _rows(migrated_db_url)
        await _set(
            migrated_db_url, a.id, proxy_wrapped_dek=b.proxy_wrapped_dek, proxy_ciphertext=b.proxy_ciphertext
        )
        message = await expect(grpc.StatusCode.DATA_LOSS, _route_proxies(cp, org.id, "m"))
        assert a.id in message and not any(p in message for p in passwords.values())
        # and the admin API never shows a password, even then
        got = await cp.models.GetModel(models_pb2.GetModelRequest(org_id=org.id, name="m"), metadata=cp.su)
        assert [d.proxy_url for d in got.deployments] == [
            "http://ops:***@9.9.9.1:3128",
            "http://ops:***@9.9.9.2:3128",
        ]
