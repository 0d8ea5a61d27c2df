"""The node's gRPC ledger against a real control-plane process over real gRPC (the node's own
link: node token, channel options), and against one that is absent or silent (bounded, typed)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from data_plane.governance.link import ControlPlaneLink
from data_plane.objects.grpc_ledger import GrpcLedger
from data_plane.objects.ledger import MAX_SNAPSHOT_BYTES, Kind, LedgerUnavailable, OwnedObject, Page
from data_plane.settings import Settings
from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.support.provision import Provisioner

TIMEOUT_S = 0.5
# The deadline, plus the loop and the 2-core CI machine's scheduling.
BOUND_S = TIMEOUT_S + 2.0


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    db = tmp_path_factory.mktemp("cp") / "cp.db"
    proc = start_control_plane(f"sqlite:///{db}")
    try:
        yield proc
    finally:
        proc.stop()


def node_settings(address: str, node_token: str, timeout: float = 5.0) -> Settings:
    return Settings.from_env({
        "ODOCK_CP_ADDRESS": address, "ODOCK_NODE_TOKEN": node_token,
        "ODOCK_KEY_PEPPER": base64.b64encode(b"p" * 32).decode(), "ODOCK_CP_RPC_TIMEOUT_SECONDS": str(timeout),
    })  # fmt: skip


@pytest_asyncio.fixture
async def ledger(cp: ControlPlaneProcess) -> AsyncIterator[tuple[GrpcLedger, ControlPlaneLink]]:
    settings = node_settings(cp.address, cp.node_token)
    link = ControlPlaneLink(settings)
    try:
        yield GrpcLedger(link, settings.timeouts.control_plane_rpc), link
    finally:
        await link.close()


async def new_org(cp: ControlPlaneProcess) -> str:
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        return (await admin.create_org()).id


def owned(org_id: str, object_id: str, *, kind: Kind = Kind.FILE, created_at: int = 100, purpose: str = "batch",
          snapshot: bytes = b"{}") -> OwnedObject:  # fmt: skip
    return OwnedObject(kind=kind, id=object_id, org_id=org_id, key_id="key_1", model_name="gpt", deployment="eu",
                       purpose=purpose, created_at=created_at, snapshot=snapshot)  # fmt: skip


async def test_objects_round_trip_and_stay_with_their_org(
    cp: ControlPlaneProcess, ledger: tuple[GrpcLedger, ControlPlaneLink], caplog: pytest.LogCaptureFixture
) -> None:
    objects, link = ledger
    a, b = await new_org(cp), await new_org(cp)
    stored = await objects.put(owned(a, "file-1", snapshot=b'{"id":"file-1"}'))
    assert stored == owned(a, "file-1", snapshot=b'{"id":"file-1"}')
    assert await objects.get(a, Kind.FILE, "file-1") == stored
    # Another org: absent everywhere, and its put takes nothing over.
    assert await objects.get(b, Kind.FILE, "file-1") is None
    assert await objects.put(owned(b, "file-1")) is None
    assert await objects.delete(b, Kind.FILE, "file-1") is None
    assert await objects.list(b, Kind.FILE) == Page((), False)
    assert await objects.get(a, Kind.FILE, "file-1") == stored
    # An id no object can have reads as absent, never as an outage; the node checks ids by the same
    # rule before asking, so a refusal means the two rules disagree: said at WARNING.
    with caplog.at_level(logging.WARNING, "odock.data_plane.objects"):
        assert await objects.get(a, Kind.FILE, "file 1\n") is None
        assert await objects.get(a, Kind.FILE, "f" * 500) is None
        assert await objects.list(a, Kind.FILE, after="not a cursor") == Page((), False)
    refused = [r.getMessage() for r in caplog.records if "refused the request as invalid" in r.getMessage()]
    assert [m.split(":")[0] for m in refused] == ["GetObject", "GetObject", "ListObjects"], refused
    assert await objects.delete(a, Kind.FILE, "file-1") == stored
    assert await objects.get(a, Kind.FILE, "file-1") is None
    assert link.calls["PutObject"] == 2 and link.calls["GetObject"] == 6


async def test_lists_page_newest_first(cp: ControlPlaneProcess, ledger: tuple[GrpcLedger, ControlPlaneLink]) -> None:
    objects, _ = ledger
    a = await new_org(cp)
    for i in range(5):
        await objects.put(owned(a, f"file-{i}", created_at=100 + i, purpose="batch" if i % 2 == 0 else "vision"))
    first = await objects.list(a, Kind.FILE, limit=2)
    assert [o.id for o in first.objects] == ["file-4", "file-3"] and first.has_more
    rest = await objects.list(a, Kind.FILE, after="file-3", limit=10)
    assert [o.id for o in rest.objects] == ["file-2", "file-1", "file-0"] and not rest.has_more
    up = await objects.list(a, Kind.FILE, purpose="batch", ascending=True)
    assert [o.id for o in up.objects] == ["file-0", "file-2", "file-4"]
    # Out-of-range limits are clamped to the control plane's 1..10000, never refused.
    assert [o.id for o in (await objects.list(a, Kind.FILE, limit=0)).objects] == ["file-4"]
    assert len((await objects.list(a, Kind.FILE, limit=50_000)).objects) == 5


async def test_batch_usage_is_claimed_once(cp: ControlPlaneProcess, ledger: tuple[GrpcLedger, ControlPlaneLink]) -> None:
    objects, _ = ledger
    a, b = await new_org(cp), await new_org(cp)
    await objects.put(owned(a, "batch_1", kind=Kind.BATCH, purpose="/v1/chat/completions"))
    claims = await asyncio.gather(*(objects.claim_batch_usage(a, "batch_1") for _ in range(8)))
    assert sorted(claims) == [False] * 7 + [True]
    batch = owned(a, "batch_1", kind=Kind.BATCH, purpose="/v1/chat/completions")
    assert await objects.get(a, Kind.BATCH, "batch_1") == dataclasses.replace(batch, usage_recorded=True)
    assert not await objects.claim_batch_usage(b, "batch_1")  # another org's: nothing to record
    assert not await objects.claim_batch_usage(a, "batch_missing")


async def test_an_oversized_snapshot_is_not_sent_and_the_stored_one_kept(
    cp: ControlPlaneProcess, ledger: tuple[GrpcLedger, ControlPlaneLink]
) -> None:
    objects, _ = ledger
    a = await new_org(cp)
    await objects.put(owned(a, "file-big", snapshot=b'{"v":1}'))
    again = await objects.put(owned(a, "file-big", snapshot=b"x" * (MAX_SNAPSHOT_BYTES + 1)))
    assert again is not None and again.snapshot == b'{"v":1}'


async def test_a_refused_object_is_an_outage_not_an_ownerless_object(
    cp: ControlPlaneProcess, ledger: tuple[GrpcLedger, ControlPlaneLink]
) -> None:
    objects, _ = ledger
    with pytest.raises(LedgerUnavailable, match="PutObject: INVALID_ARGUMENT"):
        await objects.put(owned(await new_org(cp), "file-" + "x" * 200))  # a provider id over 128 characters


async def _every_call_fails(objects: GrpcLedger) -> list[str]:
    """Each ledger call, timed: all must raise LedgerUnavailable within the bound."""
    calls = [
        objects.put(owned("org_x", "file-1")), objects.get("org_x", Kind.FILE, "file-1"),
        objects.list("org_x", Kind.FILE), objects.delete("org_x", Kind.FILE, "file-1"),
        objects.claim_batch_usage("org_x", "batch_1"),
    ]  # fmt: skip
    messages = []
    for call in calls:
        started = time.monotonic()
        with pytest.raises(LedgerUnavailable) as failed:
            await call
        assert time.monotonic() - started < BOUND_S
        messages.append(str(failed.value))
    return messages


async def test_an_absent_control_plane_is_unavailable_within_the_deadline() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    link = ControlPlaneLink(node_settings(f"127.0.0.1:{port}", "node-" + "t" * 40, TIMEOUT_S))
    try:
        messages = await _every_call_fails(GrpcLedger(link, TIMEOUT_S))
    finally:
        await link.close()
    assert all(m.endswith(("UNAVAILABLE", "DEADLINE_EXCEEDED")) for m in messages), messages


async def test_a_silent_control_plane_is_unavailable_within_the_deadline() -> None:
    async def accept_and_say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers the HTTP/2 preface
        writer.close()

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = ControlPlaneLink(node_settings(f"127.0.0.1:{port}", "node-" + "t" * 40, TIMEOUT_S))
    try:
        messages = await _every_call_fails(GrpcLedger(link, TIMEOUT_S))
    finally:
        await link.close()
        server.close()
    assert all(m.endswith(("UNAVAILABLE", "DEADLINE_EXCEEDED")) for m in messages), messages


async def test_a_wrong_node_token_is_an_outage(cp: ControlPlaneProcess) -> None:
    link = ControlPlaneLink(node_settings(cp.address, "node-" + "w" * 40))
    try:
        with pytest.raises(LedgerUnavailable, match="UNAUTHENTICATED"):
            await GrpcLedger(link, 5.0).get("org_x", Kind.FILE, "file-1")
    finally:
        await link.close()
