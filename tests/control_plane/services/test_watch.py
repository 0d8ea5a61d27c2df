"""Watch: invalidations in revision order, resume, resets and heartbeats.

The in-process tests drive the ChangeFeed and NodeServicer over real gRPC,
logging changes exactly as the admin services do (record_change in a
transaction, then poke). The end-to-end test revokes a key through the admin
API of a control-plane process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TypeAlias

import grpc
import psycopg
import pytest
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.changefeed import CHANNEL
from control_plane.store import changes
from control_plane.store.tables import ChangeRow
from odock import keyformat
from odock.v1 import keys_pb2, node_pb2
from tests.control_plane.admin_env import AdminEnv
from tests.control_plane.services.node_env import Env, open_env, record
from tests.support.postgres import PostgresServer

KEY = node_pb2.INVALIDATION_KIND_KEY
MODEL = node_pb2.INVALIDATION_KIND_MODEL
DEADLINE_S = 1.0
WatchCall: TypeAlias = "grpc.aio.UnaryStreamCall[node_pb2.WatchRequest, node_pb2.WatchEvent]"


@pytest.fixture
async def env(migrated_db_url: str) -> AsyncIterator[Env]:
    async with open_env(migrated_db_url) as e:
        yield e


async def next_event(call: WatchCall, *, timeout: float = DEADLINE_S) -> node_pb2.WatchEvent:
    event = await asyncio.wait_for(call.read(), timeout)
    assert isinstance(event, node_pb2.WatchEvent), event
    return event


async def next_change(call: WatchCall, *, timeout: float = DEADLINE_S) -> node_pb2.WatchEvent:
    """The next non-heartbeat event, within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        event = await next_event(call, timeout=max(0.0, deadline - loop.time()))
        if event.WhichOneof("event") != "heartbeat":
            return event


async def current(env: Env) -> int:
    async with env.sm() as s:
        return await changes.current_revision(s)


async def test_live_invalidations_in_order(env: Env) -> None:
    start = await current(env)
    call = env.stub.Watch(node_pb2.WatchRequest(after_revision=0, node_id="n1"))
    first = await next_event(call)
    assert first.WhichOneof("event") == "heartbeat" and first.revision == start
    loop = asyncio.get_running_loop()
    rev = await record(env, KEY, "org_a", key_id="key_1")
    t0 = loop.time()
    ev = await next_change(call)
    assert loop.time() - t0 < DEADLINE_S
    assert ev.revision == rev == start + 1
    inv = ev.invalidation
    assert (inv.kind, inv.org_id, inv.key_id, inv.model_name) == (KEY, "org_a", "key_1", "")
    await record(env, MODEL, "org_a", model_name="gpt-4o")
    await record(env, node_pb2.INVALIDATION_KIND_CREDENTIAL, "org_a", credential_id="cred_1")
    await record(env, node_pb2.INVALIDATION_KIND_ORG, "org_a")
    got = [await next_change(call) for _ in range(3)]
    assert [e.revision for e in got] == [start + 2, start + 3, start + 4]
    assert got[0].invalidation.model_name == "gpt-4o"
    assert got[1].invalidation.credential_id == "cred_1"
    assert got[2].invalidation.kind == node_pb2.INVALIDATION_KIND_ORG
    call.cancel()


async def test_resume_replays_exactly_the_missed_changes(env: Env) -> None:
    revs = [await record(env, KEY, "org_a", key_id=f"key_{i}") for i in range(5)]
    call = env.stub.Watch(node_pb2.WatchRequest(after_revision=revs[1]))
    replayed = [await next_change(call) for _ in range(3)]
    assert [e.revision for e in replayed] == revs[2:]
    assert [e.invalidation.key_id for e in replayed] == ["key_2", "key_3", "key_4"]
    live = await record(env, KEY, "org_a", key_id="key_5")
    ev = await next_change(call)
    assert ev.revision == live == revs[-1] + 1
    # Up to date: nothing else but heartbeats carrying the same revision.
    beat = await next_event(call)
    assert beat.WhichOneof("event") == "heartbeat" and beat.revision == live
    call.cancel()


async def test_no_gap_or_duplicate_across_replay_and_live(env: Env) -> None:
    base = await record(env, KEY, "org_a", key_id="key_base")

    async def writer() -> None:
        for i in range(40):
            await record(env, KEY, "org_a", key_id=f"key_{i}")

    task = asyncio.create_task(writer())
    await asyncio.sleep(0)
    calls = [env.stub.Watch(node_pb2.WatchRequest(after_revision=base)) for _ in range(3)]
    await task
    for call in calls:
        seen = [(await next_change(call, timeout=5.0)).revision for _ in range(40)]
        assert seen == list(range(base + 1, base + 41))
        call.cancel()


async def test_future_after_revision_resets(env: Env) -> None:
    rev = await record(env, KEY, "org_a", key_id="key_1")
    call = env.stub.Watch(node_pb2.WatchRequest(after_revision=rev + 100))
    ev = await next_event(call)
    assert ev.WhichOneof("event") == "reset" and ev.revision == rev
    nxt = await record(env, KEY, "org_a", key_id="key_2")
    assert (await next_change(call)).revision == nxt
    call.cancel()


async def test_pruned_after_revision_resets(env: Env) -> None:
    revs = [await record(env, KEY, "org_a", key_id=f"key_{i}") for i in range(4)]
    async with env.sm() as s, s.begin():
        removed = await changes.prune(s, datetime.now(UTC) + timedelta(hours=1))
    assert removed == 3  # the newest change is always kept
    old = env.stub.Watch(node_pb2.WatchRequest(after_revision=revs[0]))
    ev = await next_event(old)
    assert ev.WhichOneof("event") == "reset" and ev.revision == revs[-1]
    old.cancel()
    # Resuming right before the oldest retained change is still exact.
    ok = env.stub.Watch(node_pb2.WatchRequest(after_revision=revs[-2]))
    ev = await next_change(ok)
    assert ev.WhichOneof("event") == "invalidation" and ev.revision == revs[-1]
    ok.cancel()


async def test_heartbeats_carry_the_latest_revision(env: Env) -> None:
    call = env.stub.Watch(node_pb2.WatchRequest())
    await next_event(call)
    rev = await record(env, KEY, "org_a", key_id="key_1")
    assert (await next_change(call)).revision == rev
    beats = [await next_event(call) for _ in range(2)]  # heartbeat_seconds is 0.2 in the harness
    assert all(b.WhichOneof("event") == "heartbeat" and b.revision == rev for b in beats)
    assert beats[1].heartbeat.time.ToDatetime(UTC) >= beats[0].heartbeat.time.ToDatetime(UTC)
    call.cancel()


async def test_slow_watcher_gets_a_reset_not_unbounded_memory(migrated_db_url: str) -> None:
    async with open_env(migrated_db_url, queue_limit=4, heartbeat_seconds=60) as env:
        sub = env.feed.subscribe(0)
        assert (await anext(sub)).WhichOneof("event") == "heartbeat"
        live = await record(env, KEY, "org_a", key_id="key_live")
        assert (await anext(sub)).revision == live
        # The consumer stalls while 10 changes arrive; its mailbox holds 4.
        for i in range(10):
            await record(env, KEY, "org_a", key_id=f"key_{i}")
        async with asyncio.timeout(5):
            while env.feed.latest_revision < live + 10:
                await asyncio.sleep(0.01)
        ev = await anext(sub)
        assert ev.WhichOneof("event") == "reset" and ev.revision == live + 10
        nxt = await record(env, KEY, "org_a", key_id="key_after")
        ev = await anext(sub)
        assert ev.WhichOneof("event") == "invalidation" and ev.revision == nxt
        await sub.aclose()


async def test_stopping_the_feed_ends_watches_with_unavailable(env: Env) -> None:
    call = env.stub.Watch(node_pb2.WatchRequest())
    await next_event(call)
    await env.feed.stop()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await next_change(call)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await next_event(env.stub.Watch(node_pb2.WatchRequest()))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def _record_without_poke(session: AsyncSession, key_id: str) -> int:
    async with session.begin():
        return await changes.record_change(session, KEY, "org_a", key_id=key_id)


@pytest.mark.postgres
async def test_listen_notify_wakes_the_feed_without_poke(pg_server: PostgresServer) -> None:
    url = pg_server.create_database(migrated=True)
    try:
        async with open_env(url) as env:
            async with asyncio.timeout(5):
                await env.feed.listening.wait()
            call = env.stub.Watch(node_pb2.WatchRequest())
            await next_event(call)
            # Another writer (another replica): no poke reaches this feed.
            async with env.sm() as s:
                rev = await _record_without_poke(s, "key_remote")
            ev = await next_change(call)
            assert ev.revision == rev and ev.invalidation.key_id == "key_remote"
            call.cancel()
    finally:
        pg_server.drop_database(url)


async def test_revoke_through_the_admin_api_is_announced_within_1s(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    created = await cp.key(org.id)
    watch = cp.node.Watch(node_pb2.WatchRequest(node_id="n1"), metadata=cp.node_md)
    first = await next_event(watch)
    assert first.WhichOneof("event") == "heartbeat"
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await cp.keys.RevokeVirtualKey(
        keys_pb2.RevokeVirtualKeyRequest(org_id=org.id, id=created.key.id), metadata=cp.su
    )
    ev = await next_change(watch)
    assert loop.time() - t0 < DEADLINE_S
    assert ev.revision == first.revision + 1
    assert (ev.invalidation.kind, ev.invalidation.org_id, ev.invalidation.key_id) == (
        KEY,
        org.id,
        created.key.id,
    )
    resolved = await cp.node.ResolveKey(
        node_pb2.ResolveKeyRequest(key_digest=keyformat.digest(cp.secrets.pepper, created.secret)),
        metadata=cp.node_md,
    )
    assert resolved.rejection == node_pb2.KEY_REJECTION_REVOKED and resolved.revision >= ev.revision
    watch.cancel()


async def test_rotation_through_the_admin_api(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    created = await cp.key(org.id)
    watch = cp.node.Watch(node_pb2.WatchRequest(), metadata=cp.node_md)
    first = await next_event(watch)

    async def resolve(secret: str) -> node_pb2.ResolveKeyResponse:
        resp: node_pb2.ResolveKeyResponse = await cp.node.ResolveKey(
            node_pb2.ResolveKeyRequest(key_digest=keyformat.digest(cp.secrets.pepper, secret)),
            metadata=cp.node_md,
        )
        return resp

    rotated = await cp.keys.RotateVirtualKey(
        keys_pb2.RotateVirtualKeyRequest(
            org_id=org.id, id=created.key.id, grace_period=Duration(seconds=3600)
        ),
        metadata=cp.su,
    )
    ev = await next_change(watch)
    assert ev.revision == first.revision + 1 and ev.invalidation.key_id == created.key.id
    old, new = await resolve(created.secret), await resolve(rotated.secret)
    assert old.grant.key_id == new.grant.key_id == created.key.id
    grace_end = old.grant.expire_time.ToDatetime(UTC)
    assert timedelta(minutes=59) < grace_end - datetime.now(UTC) <= timedelta(hours=1)
    assert not new.grant.HasField("expire_time")
    # Rotating again without grace: the first secret and the second stop at once.
    third = await cp.keys.RotateVirtualKey(
        keys_pb2.RotateVirtualKeyRequest(org_id=org.id, id=created.key.id), metadata=cp.su
    )
    assert (await next_change(watch)).revision == first.revision + 2
    assert (await resolve(created.secret)).WhichOneof("result") == "rejection"
    assert (await resolve(rotated.secret)).WhichOneof("result") == "rejection"
    assert (await resolve(third.secret)).grant.key_id == created.key.id
    watch.cancel()


async def test_feed_prunes_old_changes(migrated_db_url: str) -> None:
    async with open_env(migrated_db_url, retention=timedelta(0), prune_every_seconds=0) as env:
        revs = [await record(env, KEY, "org_a", key_id=f"key_{i}") for i in range(3)]
        async with asyncio.timeout(5):
            while True:
                async with env.sm() as s:
                    left = await changes.changes_after(s, 0, 10)
                if [r.revision for r in left] == revs[-1:]:
                    break
                await asyncio.sleep(0.02)
        call = env.stub.Watch(node_pb2.WatchRequest(after_revision=revs[0]))
        ev = await next_event(call)
        assert ev.WhichOneof("event") == "reset" and ev.revision == revs[-1]
        call.cancel()


def _listener_pids(url: str) -> set[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE query = %s AND datname = current_database()",
            (f"LISTEN {CHANNEL}",),
        ).fetchall()
    return {int(r[0]) for r in rows}


@pytest.mark.postgres
async def test_listen_connection_is_re_established(pg_server: PostgresServer) -> None:
    url = pg_server.create_database(migrated=True)
    try:
        async with open_env(url) as env:
            async with asyncio.timeout(5):
                await env.feed.listening.wait()
            (old,) = await asyncio.to_thread(_listener_pids, url)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (old,))
            async with asyncio.timeout(10):
                while not (pids := await asyncio.to_thread(_listener_pids, url)) or old in pids:
                    await asyncio.sleep(0.05)
                await env.feed.listening.wait()
            call = env.stub.Watch(node_pb2.WatchRequest())
            await next_event(call)
            async with env.sm() as s:
                rev = await _record_without_poke(s, "key_after_reconnect")
            assert (await next_change(call)).revision == rev
            call.cancel()
    finally:
        pg_server.drop_database(url)


async def test_a_hole_in_the_log_becomes_a_reset_not_a_silent_gap(env: Env) -> None:
    # Replicas' clocks differ, so pruning by time can remove a change from the middle.
    revs = [await record(env, KEY, "org_a", key_id=f"key_{i}") for i in range(4)]
    async with env.sm() as s, s.begin():
        await s.execute(delete(ChangeRow).where(ChangeRow.revision == revs[2]))
    call = env.stub.Watch(node_pb2.WatchRequest(after_revision=revs[0]))
    assert (await next_change(call)).revision == revs[1]
    ev = await next_change(call)
    assert ev.WhichOneof("event") == "reset" and ev.revision == revs[3]
    nxt = await record(env, KEY, "org_a", key_id="key_next")
    assert (await next_change(call)).revision == nxt
    call.cancel()
