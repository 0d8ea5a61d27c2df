"""In-process NodeService harness for the node tests: a migrated database, a
ChangeFeed and the NodeServicer behind the real auth interceptor (which also maps
the servicer's domain errors onto gRPC statuses) on real gRPC (127.0.0.1:0), a
stub that sends a node token, and helpers that seed rows directly (credentials
encrypted exactly as the admin service does)."""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from control_plane import ids
from control_plane.changefeed import ChangeFeed
from control_plane.crypto import envelope
from control_plane.crypto.keyring import Keyring
from control_plane.interceptors import AuthInterceptor
from control_plane.services import Deps
from control_plane.services.node import NodeServicer
from control_plane.settings import Settings
from control_plane.store import changes
from control_plane.store.db import make_engine, make_sessionmaker
from control_plane.store.tables import CredentialRow, ModelRow, OrgRow, VirtualKeyRow
from odock import keyformat
from odock.v1 import common_pb2, node_pb2, node_pb2_grpc

PEPPER = os.urandom(32)
KEKS = "k1=" + base64.b64encode(os.urandom(32)).decode()
NODE_TOKEN = "node-" + base64.b32encode(os.urandom(30)).decode()


def _with_token(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    """The call's details plus the node token, as the data plane's channel sends it."""
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata.add("authorization", f"Bearer {NODE_TOKEN}")
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


# One class per call kind: a channel files each interceptor under the first kind it is.
class _UnaryUnaryToken(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token(details), request)


class _UnaryStreamToken(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token(details), request)


class _StreamUnaryToken(grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(_with_token(details), request_iterator)


class _StreamStreamToken(grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(_with_token(details), request_iterator)


NODE_TOKEN_INTERCEPTORS = (_UnaryUnaryToken(), _UnaryStreamToken(), _StreamUnaryToken(), _StreamStreamToken())


@dataclass
class Env:
    engine: AsyncEngine
    sm: async_sessionmaker[AsyncSession]
    feed: ChangeFeed
    stub: node_pb2_grpc.NodeServiceAsyncStub
    keyring: Keyring


@contextlib.asynccontextmanager
async def open_env(db_url: str, *, heartbeat_seconds: float = 0.2, **feed_options: Any) -> AsyncIterator[Env]:
    """Over an already migrated database: a started ChangeFeed and NodeServicer on 127.0.0.1:0, and a stub."""
    engine = make_engine(db_url)
    sm = make_sessionmaker(engine)
    settings = Settings(
        keks_spec=KEKS, kek_ids=("k1",), heartbeat_seconds=heartbeat_seconds, node_tokens=(NODE_TOKEN,)
    )
    # A slow poll, so a test only passes if poke() or LISTEN does the waking.
    feed_options.setdefault("poll_seconds", 30.0)
    feed = ChangeFeed(sm, engine, settings, **feed_options)
    await feed.start()
    server = grpc.aio.server(interceptors=[AuthInterceptor(settings, sm)])
    deps = Deps(sessionmaker=sm, settings=settings, keyring=Keyring.from_spec(KEKS), feed=feed)
    node_pb2_grpc.add_NodeServiceServicer_to_server(NodeServicer(deps, feed), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=NODE_TOKEN_INTERCEPTORS)
    try:
        yield Env(engine, sm, feed, node_pb2_grpc.NodeServiceStub(channel), Keyring.from_spec(KEKS))
    finally:
        await feed.stop()
        await channel.close()
        await server.stop(0)
        await engine.dispose()


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


async def add_org(env: Env, name: str, **fields: object) -> str:
    org_id = ids.new_id(ids.ORG)
    async with env.sm() as s, s.begin():
        s.add(OrgRow(id=org_id, name=name, tier=str(fields.pop("tier", "free")), **fields))
    return org_id


async def add_credential(env: Env, org_id: str, secret: str, name: str = "main") -> str:
    cred_id = ids.new_id(ids.CREDENTIAL)
    sealed = envelope.encrypt(env.keyring, secret.encode(), cred_id)
    async with env.sm() as s, s.begin():
        s.add(
            CredentialRow(
                id=cred_id,
                org_id=org_id,
                name=name,
                family=common_pb2.PROVIDER_FAMILY_OPENAI,
                last4=secret[-4:],
                kek_id=sealed.kek_id,
                wrapped_dek=sealed.wrapped_dek,
                ciphertext=sealed.ciphertext,
            )
        )
    return cred_id


async def add_model(env: Env, org_id: str, name: str, slug: str, cred_id: str, **fields: object) -> str:
    model_id = ids.new_id(ids.MODEL)
    async with env.sm() as s, s.begin():
        s.add(
            ModelRow(
                id=model_id,
                org_id=org_id,
                name=name,
                family=common_pb2.PROVIDER_FAMILY_OPENAI,
                upstream_slug=slug,
                base_url="https://api.openai.com/v1",
                timeout_ms=30_500,
                credential_id=cred_id,
                input_per_mtok_micros=2_500_000,
                output_per_mtok_micros=10_000_000,
                **fields,
            )
        )
    return model_id


async def add_key(env: Env, org_id: str, **fields: object) -> tuple[str, str]:
    """A stored key; returns (key id, plaintext)."""
    key_id = ids.new_id(ids.KEY)
    plain = keyformat.generate()
    async with env.sm() as s, s.begin():
        s.add(
            VirtualKeyRow(
                id=key_id, org_id=org_id, digest=keyformat.digest(PEPPER, plain), last4=plain[-4:], **fields
            )
        )
    return key_id, plain


async def record(env: Env, kind: int, org_id: str, **fields: str) -> int:
    """Log one change (as an admin write would) and poke the feed; returns its revision."""
    async with env.sm() as s, s.begin():
        revision = await changes.record_change(s, kind, org_id, **fields)
    env.feed.poke()
    return revision


async def resolve(env: Env, plain: str) -> node_pb2.ResolveKeyResponse:
    """ResolveKey for a plaintext key (sent as its digest)."""
    resp: node_pb2.ResolveKeyResponse = await env.stub.ResolveKey(
        node_pb2.ResolveKeyRequest(key_digest=keyformat.digest(PEPPER, plain), node_id="n1")
    )
    return resp
