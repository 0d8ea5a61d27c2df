"""Secrets at rest: the raw database never holds a provider key or a virtual
key; a damaged or swapped ciphertext fails loudly; KEK rotation + re-wrap keeps
every credential readable and retires the old KEK."""

from __future__ import annotations

import secrets as pysecrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

from control_plane.store.db import make_engine, make_sessionmaker
from control_plane.store.tables import CredentialRow
from odock import sealing
from odock.v1 import (
    admin_tokens_pb2,
    common_pb2,
    credentials_pb2,
    credentials_pb2_grpc,
    keys_pb2,
    models_pb2,
    models_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    orgs_pb2,
    orgs_pb2_grpc,
)
from tests.control_plane.admin_env import AdminEnv, expect
from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.support.secrets import PlaneSecrets, kek

OPENAI = common_pb2.PROVIDER_FAMILY_OPENAI


def canary(prefix: str) -> str:
    return f"{prefix}-canary-{pysecrets.token_hex(16)}"


def raw_sqlite_bytes(db_url: str) -> bytes:
    """The database file and its WAL, byte for byte."""
    path = Path(make_url(db_url).database or "")
    blobs = [p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists()]
    assert blobs, f"no database file at {path}"
    return b"".join(blobs)


def raw_postgres_dump(db_url: str) -> bytes:
    """Every row of every table in the public schema, values as text and as raw bytes."""
    out: list[bytes] = []
    with psycopg.connect(db_url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchall()
        ]
        assert "credentials" in tables and "virtual_keys" in tables
        for table in tables:
            # Whole rows as text (bytea renders as hex), then each column raw.
            out += [str(r[0]).encode() for r in conn.execute(f'SELECT t::text FROM "{table}" t').fetchall()]
            for row in conn.execute(f'SELECT * FROM "{table}"').fetchall():
                out += [v if isinstance(v, bytes) else str(v).encode() for v in row]
    return b"\n".join(out)


def raw_database(db_url: str) -> bytes:
    return raw_sqlite_bytes(db_url) if db_url.startswith("sqlite") else raw_postgres_dump(db_url)


async def test_raw_database_holds_no_provider_or_virtual_key(cp: AdminEnv) -> None:
    org_name = f"org-{pysecrets.token_hex(6)}"
    org = await cp.org(org_name)
    provider_keys = [canary("sk-live"), canary("sk-ant"), canary("sk-rotated")]
    await cp.credential(org.id, "main", secret=provider_keys[0])
    await cp.credential(org.id, "second", secret=provider_keys[1])
    await cp.creds.RotateCredential(
        credentials_pb2.RotateCredentialRequest(org_id=org.id, name="second", secret=provider_keys[2]),
        metadata=cp.su,
    )
    await cp.model(org.id, "gpt", credential="main")
    created = await cp.key(org.id)
    rotated = await cp.keys.RotateVirtualKey(
        keys_pb2.RotateVirtualKeyRequest(org_id=org.id, id=created.key.id), metadata=cp.su
    )
    other = await cp.key(org.id, name="other")
    token = await cp.tokens.CreateAdminToken(
        admin_tokens_pb2.CreateAdminTokenRequest(org_id=org.id, name="ops"), metadata=cp.su
    )
    plaintexts = provider_keys + [created.secret, rotated.secret, other.secret, token.secret]

    raw = raw_database(cp.db_url)
    assert org_name.encode() in raw  # the scan does see stored values
    for secret in plaintexts:
        # Only the last 4 characters may be stored (for display); nothing longer.
        for needle in (secret, secret[:-4], secret[-20:-4]):
            assert needle.encode() not in raw, "plaintext secret found in the raw database"


async def resolve_route(
    node: node_pb2_grpc.NodeServiceAsyncStub, md: tuple[tuple[str, str], ...], org_id: str, model: str
) -> bytes:
    """ResolveRoute and open the sealed credential with a fresh node key pair."""
    pair = sealing.NodeKeyPair()
    route = await node.ResolveRoute(
        node_pb2.ResolveRouteRequest(org_id=org_id, model_name=model, node_public_key=pair.public_key),
        metadata=md,
    )
    s = route.credential_secret
    return pair.open(
        sealing.Sealed(s.ephemeral_public_key, s.nonce, s.ciphertext), route.credential_id.encode()
    )


async def test_damaged_or_swapped_ciphertext_fails_loudly(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    secrets = {"a": canary("sk-a"), "b": canary("sk-b")}
    creds = {n: await cp.credential(org.id, n, secret=s) for n, s in secrets.items()}
    for n, secret in secrets.items():
        await cp.model(org.id, f"m-{n}", credential=n)
        assert await resolve_route(cp.node, cp.node_md, org.id, f"m-{n}") == secret.encode()

    engine = make_engine(cp.db_url)
    sm = make_sessionmaker(engine)
    try:
        async with sm() as s:
            rows = {r.id: r for r in (await s.scalars(select(CredentialRow))).all()}
        a, b = rows[creds["a"].id], rows[creds["b"].id]

        async def set_a(**values: object) -> None:
            async with sm() as s, s.begin():
                await s.execute(update(CredentialRow).where(CredentialRow.id == a.id).values(**values))

        flip = bytearray(a.ciphertext)
        flip[len(flip) // 2] ^= 0x80
        damaged_dek = bytearray(a.wrapped_dek)
        damaged_dek[0] ^= 0x01
        cases: dict[str, dict[str, object]] = {
            "ciphertext altered by one byte": {"ciphertext": bytes(flip)},
            "wrapped data key altered by one byte": {"wrapped_dek": bytes(damaged_dek)},
            "copied from another row": {
                "kek_id": b.kek_id,
                "wrapped_dek": b.wrapped_dek,
                "ciphertext": b.ciphertext,
            },
            "unknown KEK id": {"kek_id": "retired"},
        }
        for label, values in cases.items():
            await set_a(**values)
            message = await expect(
                grpc.StatusCode.DATA_LOSS,
                cp.node.ResolveRoute(
                    node_pb2.ResolveRouteRequest(
                        org_id=org.id, model_name="m-a", node_public_key=sealing.NodeKeyPair().public_key
                    ),
                    metadata=cp.node_md,
                ),
            )
            assert a.id in message, label
            assert secrets["a"] not in message and secrets["b"] not in message
            await set_a(kek_id=a.kek_id, wrapped_dek=a.wrapped_dek, ciphertext=a.ciphertext)
            assert await resolve_route(cp.node, cp.node_md, org.id, "m-a") == secrets["a"].encode()
        # The untouched neighbour was never affected.
        assert await resolve_route(cp.node, cp.node_md, org.id, "m-b") == secrets["b"].encode()
    finally:
        await engine.dispose()


@dataclass
class Plane:
    channel: grpc.aio.Channel
    orgs: orgs_pb2_grpc.OrgServiceAsyncStub
    creds: credentials_pb2_grpc.CredentialServiceAsyncStub
    models: models_pb2_grpc.ModelServiceAsyncStub
    node: node_pb2_grpc.NodeServiceAsyncStub
    su: tuple[tuple[str, str], ...]
    node_md: tuple[tuple[str, str], ...]


@asynccontextmanager
async def running(db_url: str, plane_secrets: PlaneSecrets) -> AsyncIterator[Plane]:
    """A control-plane process with these secrets (its environment), stopped with SIGTERM."""
    proc: ControlPlaneProcess = start_control_plane(db_url, secrets=plane_secrets)
    channel = grpc.aio.insecure_channel(proc.address)
    try:
        yield Plane(
            channel, orgs_pb2_grpc.OrgServiceStub(channel), credentials_pb2_grpc.CredentialServiceStub(channel),
            models_pb2_grpc.ModelServiceStub(channel), node_pb2_grpc.NodeServiceStub(channel),
            (("authorization", f"Bearer {plane_secrets.admin_token}"),),
            (("authorization", f"Bearer {plane_secrets.node_token}"),),
        )  # fmt: skip
    finally:
        await channel.close()
        assert proc.stop() == 0, proc.stderr_text()[-2000:]


async def kek_ids_in_db(db_url: str) -> set[str]:
    engine = make_engine(db_url)
    try:
        async with make_sessionmaker(engine)() as s:
            return set((await s.scalars(select(CredentialRow.kek_id))).all())
    finally:
        await engine.dispose()


@pytest.mark.slow
async def test_kek_rotation_then_rewrap_retires_the_old_kek(migrated_db_url: str) -> None:
    old_kek, new_kek = kek(), kek()
    base = PlaneSecrets(keks={"old": old_kek})

    def with_keks(keks: dict[str, bytes]) -> PlaneSecrets:
        return PlaneSecrets(
            keks=keks, pepper=base.pepper, admin_token=base.admin_token, node_token=base.node_token
        )

    expected: dict[tuple[str, str], str] = {}  # (org id, model) -> provider key
    async with running(migrated_db_url, base) as cp:
        for o in range(2):
            org = await cp.orgs.CreateOrg(
                orgs_pb2.CreateOrgRequest(org=orgs_pb2.Org(name=f"org{o}")), metadata=cp.su
            )
            for c in range(2):
                secret = canary(f"sk-{o}{c}")
                await cp.creds.CreateCredential(
                    credentials_pb2.CreateCredentialRequest(
                        org_id=org.id, name=f"c{c}", family=OPENAI, secret=secret
                    ),
                    metadata=cp.su,
                )
                await cp.models.CreateModel(
                    models_pb2.CreateModelRequest(
                        model=models_pb2.Model(
                            org_id=org.id, name=f"m{c}", family=OPENAI, upstream_slug="gpt-4o",
                            base_url="https://api.openai.com/v1", credential=f"c{c}",
                        )
                    ),
                    metadata=cp.su,
                )  # fmt: skip
                expected[(org.id, f"m{c}")] = secret
    assert await kek_ids_in_db(migrated_db_url) == {"old"}

    async with running(migrated_db_url, with_keks({"old": old_kek, "new": new_kek})) as cp:
        for (org_id, model), secret in expected.items():  # still readable before the re-wrap
            assert await resolve_route(cp.node, cp.node_md, org_id, model) == secret.encode()
        resp = await cp.creds.RewrapCredentials(credentials_pb2.RewrapCredentialsRequest(), metadata=cp.su)
        assert (resp.rewrapped, resp.unchanged, resp.kek_id) == (4, 0, "new")
        again = await cp.creds.RewrapCredentials(credentials_pb2.RewrapCredentialsRequest(), metadata=cp.su)
        assert (again.rewrapped, again.unchanged) == (0, 4)
        for (org_id, model), secret in expected.items():
            assert await resolve_route(cp.node, cp.node_md, org_id, model) == secret.encode()
    assert await kek_ids_in_db(migrated_db_url) == {"new"}

    async with running(migrated_db_url, with_keks({"new": new_kek})) as cp:
        for (org_id, model), secret in expected.items():
            assert await resolve_route(cp.node, cp.node_md, org_id, model) == secret.encode()

    # And the old KEK alone can no longer read anything: it really was retired.
    async with running(migrated_db_url, with_keks({"old": old_kek})) as cp:
        org_id, model = next(iter(expected))
        await expect(
            grpc.StatusCode.DATA_LOSS,
            cp.node.ResolveRoute(
                node_pb2.ResolveRouteRequest(
                    org_id=org_id, model_name=model, node_public_key=sealing.NodeKeyPair().public_key
                ),
                metadata=cp.node_md,
            ),
        )
