"""Two control-plane processes on one PostgreSQL database.

An invalidation raised on one replica reaches watchers of the other through
LISTEN/NOTIFY within 1 s; a watcher whose replica is killed resumes on the
other with its last revision and misses nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TypeAlias

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from odock import keyformat
from odock.v1 import keys_pb2, keys_pb2_grpc, node_pb2, node_pb2_grpc, orgs_pb2, orgs_pb2_grpc
from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.support.postgres import PostgresServer
from tests.support.secrets import PlaneSecrets

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DEADLINE_S = 1.0
KEY = node_pb2.INVALIDATION_KIND_KEY
Metadata: TypeAlias = tuple[tuple[str, str], ...]
WatchCall: TypeAlias = "grpc.aio.UnaryStreamCall[node_pb2.WatchRequest, node_pb2.WatchEvent]"


@dataclass
class Replica:
    """One control-plane process and its stubs."""

    process: ControlPlaneProcess
    channel: grpc.aio.Channel
    orgs: orgs_pb2_grpc.OrgServiceAsyncStub
    keys: keys_pb2_grpc.VirtualKeyServiceAsyncStub
    node: node_pb2_grpc.NodeServiceAsyncStub
    admin: Metadata
    node_md: Metadata


@pytest.fixture
def shared_db(pg_server: PostgresServer) -> Iterator[str]:
    url = pg_server.create_database(migrated=True)
    try:
        yield url
    finally:
        pg_server.drop_database(url)


@pytest.fixture
async def replicas(shared_db: str) -> AsyncIterator[tuple[Replica, Replica]]:
    secrets = PlaneSecrets()
    started: list[Replica] = []
    try:
        for _ in range(2):
            proc = start_control_plane(shared_db, secrets=secrets)
            channel = grpc.aio.insecure_channel(proc.address)
            started.append(
                Replica(
                    proc, channel, orgs_pb2_grpc.OrgServiceStub(channel),
                    keys_pb2_grpc.VirtualKeyServiceStub(channel), node_pb2_grpc.NodeServiceStub(channel),
                    (("authorization", f"Bearer {secrets.admin_token}"),),
                    (("authorization", f"Bearer {secrets.node_token}"),),
                )
            )  # fmt: skip
        yield started[0], started[1]
    finally:
        for r in started:
            await r.channel.close()
            r.process.kill()


async def next_change(call: WatchCall, timeout: float = DEADLINE_S) -> node_pb2.WatchEvent:
    """The next non-heartbeat event within ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            event = await call.read()
            assert isinstance(event, node_pb2.WatchEvent), event
            if event.WhichOneof("event") != "heartbeat":
                return event


async def live_watch(replica: Replica, after_revision: int = 0) -> tuple[WatchCall, node_pb2.WatchEvent]:
    call = replica.node.Watch(
        node_pb2.WatchRequest(after_revision=after_revision, node_id="dp-1"), metadata=replica.node_md
    )
    first = await asyncio.wait_for(call.read(), 5.0)
    assert isinstance(first, node_pb2.WatchEvent), first
    return call, first


async def make_org_and_keys(replica: Replica, n: int) -> tuple[str, list[keys_pb2.CreateVirtualKeyResponse]]:
    org = await replica.orgs.CreateOrg(
        orgs_pb2.CreateOrgRequest(org=orgs_pb2.Org(name="acme")), metadata=replica.admin
    )
    made = []
    for _ in range(n):
        made.append(
            await replica.keys.CreateVirtualKey(
                keys_pb2.CreateVirtualKeyRequest(key=keys_pb2.VirtualKey(org_id=org.id, all_models=True)),
                metadata=replica.admin,
            )
        )
    return org.id, made


async def revoke(replica: Replica, org_id: str, key_id: str) -> None:
    await replica.keys.RevokeVirtualKey(
        keys_pb2.RevokeVirtualKeyRequest(org_id=org_id, id=key_id), metadata=replica.admin
    )


async def test_revoke_on_one_replica_is_announced_on_the_other_within_1s(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    org_id, (key,) = await make_org_and_keys(a, 1)
    watch, first = await live_watch(b)
    loop = asyncio.get_running_loop()
    for attempt in range(2):  # a second round shows it is not a one-off
        t0 = loop.time()
        if attempt == 0:
            await revoke(a, org_id, key.key.id)
        else:
            await a.orgs.UpdateOrg(
                orgs_pb2.UpdateOrgRequest(
                    org=orgs_pb2.Org(id=org_id, labels={"x": "y"}), update_mask=FieldMask(paths=["labels"])
                ),
                metadata=a.admin,
            )
        ev = await next_change(watch)
        assert loop.time() - t0 < DEADLINE_S
        assert ev.revision == first.revision + 1 + attempt
    resolved = await b.node.ResolveKey(
        node_pb2.ResolveKeyRequest(key_digest=keyformat.digest(a.process.pepper, key.secret)),
        metadata=b.node_md,
    )
    assert resolved.rejection == node_pb2.KEY_REJECTION_REVOKED
    watch.cancel()


async def test_watcher_resumes_on_another_replica_without_missing_a_revision(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    org_id, keys = await make_org_and_keys(a, 4)
    watch, _ = await live_watch(b)
    await revoke(a, org_id, keys[0].key.id)
    seen = await next_change(watch)
    last = seen.revision

    b.process.kill()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await next_change(watch, timeout=10.0)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    # Changes made while the watcher has no replica.
    for k in keys[1:]:
        await revoke(a, org_id, k.key.id)
    resumed, first = await live_watch(a, after_revision=last)
    assert first.WhichOneof("event") == "invalidation" and first.revision == last + 1
    replayed = [first] + [await next_change(resumed) for _ in range(2)]
    assert [e.revision for e in replayed] == [last + 1, last + 2, last + 3]
    assert [e.invalidation.key_id for e in replayed] == [k.key.id for k in keys[1:]]
    assert all(e.invalidation.kind == KEY for e in replayed)
    # Then live again, continuing the same sequence.
    await a.orgs.UpdateOrg(
        orgs_pb2.UpdateOrgRequest(
            org=orgs_pb2.Org(id=org_id, labels={"x": "y"}), update_mask=FieldMask(paths=["labels"])
        ),
        metadata=a.admin,
    )
    live = await next_change(resumed)
    assert live.revision == last + 4 and live.invalidation.kind == node_pb2.INVALIDATION_KIND_ORG
    resumed.cancel()
