"""Issue 14 at the data planes' side of the control plane, on SQLite and PostgreSQL, over real
gRPC: ResolveRoute seals every deployment's credential to the node on its own, credentials used
by any deployment cannot be deleted, and rotating one invalidates every model that uses it."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from control_plane.services.models import ModelServicer
from control_plane.store import changes
from control_plane.store.db import make_engine, make_sessionmaker
from odock import sealing
from odock.v1 import common_pb2, credentials_pb2, models_pb2, node_pb2
from tests.control_plane.admin_env import OPENAI, AdminEnv, expect

EU = "https://eu.openai.example/v1"
US = "https://us.openai.example/v1"


@pytest.fixture(autouse=True)
def public_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    async def resolve(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    monkeypatch.setattr(ModelServicer, "resolve", staticmethod(resolve))
    yield


async def _setup(cp: AdminEnv) -> str:
    org = await cp.org("acme")
    await cp.credential(org.id, "main", secret="sk-main-0123456789abcd")
    await cp.credential(org.id, "second", secret="sk-second-0123456789ab")
    await cp.model(org.id, "backup")
    await cp.models.CreateModel(
        models_pb2.CreateModelRequest(model=models_pb2.Model(
            org_id=org.id, name="gpt", family=OPENAI, fallbacks=["backup"], deployments=[
                models_pb2.Deployment(name="eu", base_url=EU, credential="main", upstream_slug="gpt-eu",
                                      weight=9, timeout=Duration(seconds=5)),
                models_pb2.Deployment(name="us", base_url=US, credential="second", upstream_slug="gpt-us",
                                      priority=1, proxy_url="http://ops:s3cret@proxy.example:3128"),
            ])),
        metadata=cp.su,
    )  # fmt: skip
    return org.id


def _open(node: sealing.NodeKeyPair, secret: common_pb2.SealedSecret, cred_id: str) -> bytes:
    sealed = sealing.Sealed(secret.ephemeral_public_key, secret.nonce, secret.ciphertext)
    return node.open(sealed, context=cred_id.encode())


async def test_route_seals_each_deployment_credential_and_names_fallbacks(cp: AdminEnv) -> None:
    org_id = await _setup(cp)
    node = sealing.NodeKeyPair()
    route = await cp.node.ResolveRoute(
        node_pb2.ResolveRouteRequest(org_id=org_id, model_name="gpt", node_public_key=node.public_key),
        metadata=cp.node_md,
    )
    eu, us = route.deployments
    # the top-level fields are the first deployment's, for nodes that predate deployments
    assert (route.base_url, route.upstream_slug, route.credential_id) == (EU, "gpt-eu", eu.credential_id)
    assert route.timeout.seconds == 5 and list(route.fallbacks) == ["backup"]
    assert _open(node, route.credential_secret, route.credential_id) == b"sk-main-0123456789abcd"
    assert (eu.name, eu.base_url, eu.upstream_slug, eu.weight, eu.priority) == ("eu", EU, "gpt-eu", 9, 0)
    assert (us.name, us.base_url, us.upstream_slug, us.weight, us.priority) == ("us", US, "gpt-us", 1, 1)
    assert us.timeout.seconds == 60
    assert _open(node, eu.credential_secret, eu.credential_id) == b"sk-main-0123456789abcd"
    assert _open(node, us.credential_secret, us.credential_id) == b"sk-second-0123456789ab"
    assert eu.credential_id != us.credential_id
    # each secret is bound to its own credential id: swapping them does not open
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidTag
        _open(node, us.credential_secret, eu.credential_id)
    # the node gets the proxy with its password (admins never see it)
    assert (eu.proxy_url, us.proxy_url) == ("", "http://ops:s3cret@proxy.example:3128")
    plain = await cp.node.ResolveRoute(
        node_pb2.ResolveRouteRequest(org_id=org_id, model_name="backup", node_public_key=node.public_key),
        metadata=cp.node_md,
    )
    (only,) = plain.deployments
    assert (only.name, only.base_url, only.credential_id) == ("default", plain.base_url, plain.credential_id)
    assert list(plain.fallbacks) == []


async def test_a_credential_used_by_a_second_deployment_cannot_be_deleted(cp: AdminEnv) -> None:
    org_id = await _setup(cp)
    msg = await expect(
        grpc.StatusCode.FAILED_PRECONDITION,
        cp.creds.DeleteCredential(credentials_pb2.DeleteCredentialRequest(org_id=org_id, name="second"),
                                  metadata=cp.su),
    )  # fmt: skip
    assert "'gpt'" in msg


async def test_rotating_a_credential_invalidates_every_model_using_it(cp: AdminEnv) -> None:
    org_id = await _setup(cp)
    engine = make_engine(cp.db_url)
    sessions = make_sessionmaker(engine)
    try:
        async with sessions() as session:
            before = await changes.current_revision(session)
        rotated = await cp.creds.RotateCredential(
            credentials_pb2.RotateCredentialRequest(
                org_id=org_id, name="second", secret="sk-second-rotated-0001"
            ),
            metadata=cp.su,
        )
        async with sessions() as session:
            logged = await changes.changes_after(session, before, 100)
    finally:
        await engine.dispose()
    kinds = [(c.kind, c.credential_id, c.model_name) for c in logged]
    second_id = rotated.id
    # the credential (nodes evict routes tagged with it) and, by name, the model using it in a
    # deployment other than the first (a node tags a route with the first one's credential)
    assert kinds == [
        (node_pb2.INVALIDATION_KIND_CREDENTIAL, second_id, None),
        (node_pb2.INVALIDATION_KIND_MODEL, None, "gpt"),
    ]
