"""Batches without HTTP: the create body's checks, usage recorded once per batch (with an in-memory
ledger and a list as the usage sink), the batch's cost charged to the limits, list paging parameters."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest

from data_plane.errors import GatewayError
from data_plane.governance.domain import GrantLimits, KeyGrant, Link, Pricing
from data_plane.limits import Estimate, Limiter
from data_plane.limits.charge import charge, month_index
from data_plane.objects import created
from data_plane.objects.batch_body import parse_create
from data_plane.objects.batch_list import stored
from data_plane.objects.batch_sync import synced
from data_plane.objects.batch_usage import (
    Recorder,
    billable,
    finished,
    record_id,
    settle_finished,
    snapshot_of,
)
from data_plane.objects.batches import _record_new
from data_plane.objects.call import Call, outlive_client
from data_plane.objects.ledger import MAX_SNAPSHOT_BYTES, Kind, LedgerUnavailable, OwnedObject
from data_plane.objects.listing import parse_limit
from data_plane.settings import LimitSettings
from data_plane.usage.meter import RequestMeter
from odock.limitmetrics import BUDGET, MONTHLY_SPEND, MONTHLY_TOKENS
from odock.v1 import node_pb2
from tests.data_plane.limits.ledger_source import LedgerSource
from tests.data_plane.objects.memory_ledger import MemoryLedger

PRICING = Pricing(input_per_mtok_micros=2_000_000, output_per_mtok_micros=8_000_000, batch_price_percent=50)


class Sink:
    """The shipper's part: records submitted, and how many of them are in the spool."""

    def __init__(self) -> None:
        self.records: list[node_pb2.UsageRecord] = []
        self.spooled = 0

    def submit_closed(self, meter: RequestMeter) -> None:
        self.records.append(meter.final_record())

    async def durable(self, timeout: float) -> bool:
        await asyncio.sleep(0.01)  # the next commit
        self.spooled = len(self.records)
        return True


def _create(**fields: Any) -> bytes:
    body = {"input_file_id": "file-abc", "endpoint": "/v1/chat/completions", "completion_window": "24h", **fields}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def _refused(raw: bytes) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        parse_create(raw)
    assert info.value.status == 400
    return info.value


def test_create_body_is_checked_like_openai() -> None:
    ask = parse_create(_create(metadata={"k" * 64: "v" * 512}, output_expires_after={"anchor": "created_at",
                                                                                     "seconds": 3600}))
    assert (ask.input_file_id, ask.endpoint) == ("file-abc", "/v1/chat/completions")
    for endpoint in ("/v1/responses", "/v1/embeddings", "/v1/completions", "/v1/moderations"):
        assert parse_create(_create(endpoint=endpoint)).endpoint == endpoint
    assert _refused(_create(input_file_id=...)).param == "input_file_id"
    assert _refused(_create(input_file_id=...)).code == "missing_required_parameter"
    assert _refused(_create(input_file_id=7)).param == "input_file_id"
    assert _refused(_create(endpoint="/v1/images/generations")).param == "endpoint"
    assert _refused(_create(endpoint=...)).param == "endpoint"
    assert _refused(_create(completion_window="48h")).param == "completion_window"
    assert _refused(_create(metadata={str(i): "v" for i in range(17)})).param == "metadata"
    assert _refused(_create(metadata={"k" * 65: "v"})).param == "metadata"
    assert _refused(_create(metadata={"k": "v" * 513})).param == "metadata"
    assert _refused(_create(metadata={"k": 1})).param == "metadata"
    assert _refused(_create(metadata=[])).param == "metadata"
    assert _refused(_create(output_expires_after={"anchor": "created_at", "seconds": 60})).param == (
        "output_expires_after.seconds"
    )
    assert _refused(_create(output_expires_after={"anchor": "now", "seconds": 3600})).param == (
        "output_expires_after.anchor"
    )
    assert _refused(b"[1, 2]").code == "invalid_json"
    assert _refused(b"{nope").code == "invalid_json"
    assert _refused(b"[" * 100_000).code == "invalid_json"  # deep nesting: a 400, not a crash


def test_list_limit_defaults_clamps_and_refuses_what_is_not_a_number() -> None:
    def limit(raw: str | None) -> int:
        return parse_limit({} if raw is None else {"limit": raw}, 20, 100)

    assert limit(None) == limit("") == limit("0") == 20  # openai-python's own tests send limit=0
    assert (limit("1"), limit("100"), limit("0000000000001")) == (1, 100, 1)
    assert limit("101") == limit("9" * 5000) == 100  # clamped, never int() of a huge string
    for bad in ("-1", "abc", "1e2", "٣", " 5"):
        with pytest.raises(GatewayError) as info:
            limit(bad)
        assert info.value.status == 400 and info.value.param == "limit"


def _batch(status: str, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "batch_1", "object": "batch", "endpoint": "/v1/chat/completions", "status": status,
        "created_at": 1_700_000_000, "completed_at": 1_700_000_100 if status == "completed" else None,
        "output_file_id": None, "error_file_id": None,
        "request_counts": {"total": 3, "completed": 0, "failed": 0},
        "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
                  "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
    }  # fmt: skip
    doc.update(fields)
    return doc


USAGE = {"input_tokens": 1000, "output_tokens": 300, "total_tokens": 1300,
         "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 100}}


def test_finished_and_billable() -> None:
    for status in ("validating", "in_progress", "finalizing", "cancelling"):
        assert not finished(_batch(status))
    assert finished(_batch("completed")) and billable(_batch("completed"))
    assert finished(_batch("failed")) and not billable(_batch("failed"))  # failed in validation: no work
    assert billable(_batch("cancelled", request_counts={"total": 3, "completed": 2, "failed": 0}))
    assert billable(_batch("expired", usage=USAGE))
    assert not billable(_batch("expired", usage=None))
    assert record_id("batch_1") == record_id("batch_1") != record_id("batch_2")
    assert record_id("batch_1").startswith("req_") and len(record_id("batch_1")) == 28


async def _owned(ledger: MemoryLedger, batch_id: str = "batch_1") -> OwnedObject:
    obj = OwnedObject(kind=Kind.BATCH, id=batch_id, org_id="org_a", key_id="key_a", model_name="gpt-batch",
                      deployment="primary", purpose="/v1/chat/completions", created_at=1_700_000_000)  # fmt: skip
    await ledger.put(obj)
    return obj


async def _fetch(file_id: str) -> bytes:
    return json.dumps({"id": file_id, "object": "file", "created_at": 1_700_000_200, "purpose": "batch_output"}).encode()


async def test_a_finished_batch_is_recorded_once_with_its_discounted_cost_and_its_files() -> None:
    ledger, sink = MemoryLedger(), Sink()
    rec = Recorder(ledger, sink, None, "node-1")
    obj = await _owned(ledger)
    assert not await settle_finished(rec, obj, _batch("in_progress"), PRICING, "gpt-4o-mini", _fetch)
    assert sink.records == [] and "claim" not in ledger.calls
    done = _batch("completed", usage=USAGE, output_file_id="file-out", error_file_id="file-err",
                  request_counts={"total": 3, "completed": 2, "failed": 1})  # fmt: skip
    assert await settle_finished(rec, obj, done, PRICING, "gpt-4o-mini", _fetch)
    [record] = sink.records
    assert record.batch_id == "batch_1" and record.request_id == record_id("batch_1")
    assert (record.org_id, record.key_id, record.model_name) == ("org_a", "key_a", "gpt-batch")
    assert (record.endpoint, record.upstream_slug, record.deployment) == ("/v1/chat/completions", "gpt-4o-mini",
                                                                          "primary")
    assert (record.input_tokens, record.output_tokens, record.reasoning_tokens) == (1000, 300, 100)
    assert record.cost_picos == (1000 * 2_000_000 + 300 * 8_000_000) // 2  # half price
    assert record.http_status == 200
    for file_id in ("file-out", "file-err"):
        owned = await ledger.get("org_a", Kind.FILE, file_id)
        assert owned is not None
        assert (owned.purpose, owned.model_name, owned.deployment, owned.key_id) == (
            "batch_output", "gpt-batch", "primary", "key_a")
        assert owned.created_at == 1_700_000_200 and json.loads(owned.snapshot)["id"] == file_id
    assert await ledger.get("org_b", Kind.FILE, "file-out") is None
    # Seen again by a reader holding the fresh object: settled, nothing sent.
    fresh = await ledger.get("org_a", Kind.BATCH, "batch_1")
    assert fresh is not None and fresh.usage_recorded
    assert not await settle_finished(rec, fresh, done, PRICING, "gpt-4o-mini", _fetch)
    assert len(sink.records) == 1
    # By one holding the stale object (usage_recorded False): it loses the claim, and the record it
    # sent first is the same record (same id), which the control plane keeps once.
    assert not await settle_finished(rec, obj, done, PRICING, "gpt-4o-mini", _fetch)
    assert [r.request_id for r in sink.records] == [record_id("batch_1")] * 2
    assert _same_usage(*sink.records)


def _same_usage(a: node_pb2.UsageRecord, b: node_pb2.UsageRecord) -> bool:
    """The same record but for when it was made and how long that took."""
    return all(getattr(a, f) == getattr(b, f) for f in ("request_id", "org_id", "key_id", "model_name",
               "input_tokens", "output_tokens", "cost_picos", "batch_id", "endpoint", "deployment"))  # fmt: skip


class _ClaimAfterSpool(MemoryLedger):
    """A ledger that notes, at each claim, whether the batch's record was in the spool by then."""

    def __init__(self, sink: Sink) -> None:
        super().__init__()
        self.sink = sink
        self.spooled_at_claim: list[int] = []

    async def claim_batch_usage(self, org_id: str, batch_id: str) -> bool:
        self.spooled_at_claim.append(self.sink.spooled)
        return await super().claim_batch_usage(org_id, batch_id)


async def test_the_record_is_in_the_spool_before_the_claim_is_asked_for() -> None:
    """A node dying after winning the claim must not take the batch's only record with it."""
    sink = Sink()
    ledger = _ClaimAfterSpool(sink)
    obj = await _owned(ledger)
    assert await settle_finished(Recorder(ledger, sink, None, "node-1"), obj, _batch("completed", usage=USAGE),
                                 PRICING, "s", _fetch)  # fmt: skip
    assert ledger.spooled_at_claim == [1] and len(sink.records) == 1


async def test_a_record_the_spool_cannot_take_is_still_claimed_and_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Failing(Sink):
        async def durable(self, timeout: float) -> bool:
            return False

    ledger, sink = MemoryLedger(), Failing()
    obj = await _owned(ledger)
    assert await settle_finished(Recorder(ledger, sink, None, "node-1"), obj, _batch("completed", usage=USAGE),
                                 PRICING, "s", _fetch)  # fmt: skip
    assert len(sink.records) == 1 and "its usage record is not in the spool yet" in caplog.text


async def test_concurrent_readers_record_a_batch_once() -> None:
    ledger, sink = MemoryLedger(), Sink()
    rec = Recorder(ledger, sink, None, "node-1")
    obj = await _owned(ledger)
    done = _batch("completed", usage=USAGE)
    won = await asyncio.gather(*(settle_finished(rec, obj, done, PRICING, "s", _fetch) for _ in range(20)))
    assert won.count(True) == 1 and len(sink.records) == 1


async def test_a_batch_that_did_nothing_is_settled_without_a_record() -> None:
    ledger, sink = MemoryLedger(), Sink()
    rec = Recorder(ledger, sink, None, "node-1")
    obj = await _owned(ledger)
    failed = _batch("failed", errors={"object": "list", "data": [{"code": "invalid_url", "line": 1}]})
    assert not await settle_finished(rec, obj, failed, PRICING, "s", _fetch)
    assert sink.records == []
    fresh = await ledger.get("org_a", Kind.BATCH, "batch_1")
    assert fresh is not None and fresh.usage_recorded  # never asked again
    cancelled = _batch("cancelled", request_counts={"total": 3, "completed": 1, "failed": 0}, usage=USAGE)
    other = await _owned(ledger, "batch_2")
    assert await settle_finished(rec, other, dict(cancelled, id="batch_2"), PRICING, "s", _fetch)
    assert [r.batch_id for r in sink.records] == ["batch_2"]


def test_snapshot_is_bounded() -> None:
    errors = [{"code": "invalid_url", "line": i, "message": "x" * 200, "param": "url"} for i in range(2000)]
    big = _batch("failed", errors={"object": "list", "data": errors})
    snap = snapshot_of(big)
    assert 0 < len(snap) <= MAX_SNAPSHOT_BYTES
    assert len(json.loads(snap)["errors"]["data"]) == 10
    assert snapshot_of(_batch("failed", metadata={"k": "x" * MAX_SNAPSHOT_BYTES})) == b""
    obj = OwnedObject(kind=Kind.BATCH, id="batch_9", org_id="o", key_id="k", model_name="m", deployment="d",
                      purpose="/v1/embeddings", created_at=5)  # fmt: skip
    assert stored(obj)["id"] == "batch_9" and stored(obj)["endpoint"] == "/v1/embeddings"


def _grant(limits: GrantLimits) -> KeyGrant:
    return KeyGrant(org_id="org_a", org_name="a", key_id="key_a", all_models=True, models=frozenset(),
                    expire_at=None, default_models={}, fail_closed=False, limits=limits)  # fmt: skip


def _limiter(source: LedgerSource) -> Limiter:
    return Limiter(source, Link(connected=True, ever_connected=True), LimitSettings())


async def test_a_charge_without_a_pool_goes_to_the_control_plane_as_an_adjustment() -> None:
    limiter = _limiter(LedgerSource(10**6))
    wall = time.time()
    charge(limiter, "org_a", "key_a", 1300, 2_500_000, wall)  # 2.5 micro-USD: rounded up to 3
    pending = {(r.org_id, r.key_id, int(r.metric), r.window): r.used for r in limiter._leases.pending}
    assert pending == {
        ("org_a", "", MONTHLY_TOKENS, month_index(wall)): 1300,
        ("org_a", "", MONTHLY_SPEND, month_index(wall)): 3,
        ("org_a", "key_a", BUDGET, 0): 3,
    }


async def test_a_charged_batch_exhausts_the_key_budget_held_on_this_node() -> None:
    source = LedgerSource(1000)  # micro-USD
    limiter = _limiter(source)
    grant = _grant(GrantLimits(key_budget_micros=1000))
    first = await limiter.admit(grant, Estimate(tokens=10, picos=1_000_000))
    first.settle(10, 1_000_000)
    await limiter.admit(grant, Estimate(tokens=10, picos=1_000_000))  # the budget still covers a request
    charge(limiter, "org_a", "key_a", 10_000, 999 * 10**6)  # the batch: 999 of the 1000 micro-USD
    # The key's budget is charged to the live pool this node holds, not sent as an adjustment.
    assert [int(r.metric) for r in limiter._leases.pending if r.key_id] == []
    with pytest.raises(GatewayError) as info:
        await limiter.admit(grant, Estimate(tokens=10, picos=1_000_000))
    assert info.value.status == 429 and info.value.code == "budget_exceeded"


class _FlakyLedger(MemoryLedger):
    """Down for the first ``failures`` puts."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def put(self, obj: OwnedObject) -> OwnedObject | None:
        if self.failures > 0:
            self.failures -= 1
            self.calls.append("put")
            raise LedgerUnavailable("down")
        return await super().put(obj)


async def test_a_new_batch_is_recorded_through_a_brief_outage_else_cancelled_and_answered_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    obj = OwnedObject(kind=Kind.BATCH, id="batch_n", org_id="org_a", key_id="key_a", model_name="m",
                      deployment="d", purpose="/v1/embeddings", created_at=1)  # fmt: skip
    undone: list[tuple[str, str]] = []

    async def take_back(call: Call, route: Any, dep: Any, method: str, path: str, what: OwnedObject, why: str) -> bool:
        undone.append((method, path))
        return True

    monkeypatch.setattr(created, "take_back", take_back)
    route = dep = SimpleNamespace()
    flaky = _FlakyLedger(2)
    await _record_new(cast(Call, SimpleNamespace(ledger=flaky)), obj, route, dep)  # type: ignore[arg-type]
    assert await flaky.get("org_a", Kind.BATCH, "batch_n") is not None and undone == []
    down = _FlakyLedger(10)
    with pytest.raises(GatewayError) as info:
        await _record_new(cast(Call, SimpleNamespace(ledger=down)), obj, route, dep)  # type: ignore[arg-type]
    assert info.value.status == 503 and info.value.code == "control_plane_unavailable"
    assert down.calls.count("put") == 3
    assert undone == [("POST", "/batches/batch_n/cancel")]  # not left running (and billing) unrecorded
    taken = MemoryLedger()  # the id is another org's: never handed out as this org's, nor cancelled
    await taken.put(dataclasses.replace(obj, org_id="org_b"))
    with pytest.raises(GatewayError) as info:
        await _record_new(cast(Call, SimpleNamespace(ledger=taken)), obj, route, dep)  # type: ignore[arg-type]
    assert info.value.status == 503 and len(undone) == 1
    assert (await taken.get("org_b", Kind.BATCH, "batch_n")) is not None


class _HeldLedger(MemoryLedger):
    """A put that waits to be let go, then finds the control plane down."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.go = asyncio.Event()

    async def put(self, obj: OwnedObject) -> OwnedObject | None:
        self.entered.set()
        await self.go.wait()
        raise LedgerUnavailable("down")


async def test_a_client_going_away_stops_neither_the_record_nor_the_take_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler is cancelled when its client disconnects; cut short there, a batch the provider
    created would be left running, unrecorded and not cancelled, without a word."""
    obj = OwnedObject(kind=Kind.BATCH, id="batch_c", org_id="org_a", key_id="key_a", model_name="m",
                      deployment="d", purpose="/v1/embeddings", created_at=1)  # fmt: skip
    undone: list[str] = []

    async def take_back(call: Call, route: Any, dep: Any, method: str, path: str, what: OwnedObject, why: str) -> bool:
        undone.append(path)
        return True

    monkeypatch.setattr(created, "take_back", take_back)
    ledger = _HeldLedger()
    caller = asyncio.ensure_future(
        _record_new(cast(Call, SimpleNamespace(ledger=ledger)), obj, SimpleNamespace(), SimpleNamespace())  # type: ignore[arg-type]
    )
    await ledger.entered.wait()
    caller.cancel()  # the client went away while the ledger was being written
    with pytest.raises(asyncio.CancelledError):
        await caller
    ledger.go.set()
    deadline = time.monotonic() + 5
    while not undone and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert undone == ["/batches/batch_c/cancel"]


class _SlowClaim(MemoryLedger):
    def __init__(self) -> None:
        super().__init__()
        self.claiming = asyncio.Event()
        self.release = asyncio.Event()

    async def claim_batch_usage(self, org_id: str, batch_id: str) -> bool:
        won = await super().claim_batch_usage(org_id, batch_id)
        self.claiming.set()
        await self.release.wait()  # the claim is taken; its answer is on its way
        return won


async def test_a_caller_cancelled_after_the_claim_still_gets_the_batch_recorded() -> None:
    ledger, sink = _SlowClaim(), Sink()
    obj = await _owned(ledger)
    settings = SimpleNamespace(usage=SimpleNamespace(metering=True), node_id="node-1")
    state = SimpleNamespace(ledger=ledger, shipper=sink, limiter=None, settings=settings)
    call = cast(Call, SimpleNamespace(ledger=ledger, state=state))
    route = SimpleNamespace(pricing=PRICING)
    dep = SimpleNamespace(upstream_slug="slug", name="primary")
    caller = asyncio.ensure_future(synced(call, obj, route, dep, _batch("completed", usage=USAGE)))  # type: ignore[arg-type]
    await ledger.claiming.wait()
    caller.cancel()  # the client went away (or a list's refresh ran out of time)
    with pytest.raises(asyncio.CancelledError):
        await caller
    ledger.release.set()
    for _ in range(50):
        if sink.records:
            break
        await asyncio.sleep(0.01)
    assert [r.batch_id for r in sink.records] == ["batch_1"]


async def test_work_outliving_its_client_says_when_it_fails(caplog: pytest.LogCaptureFixture) -> None:
    """Nobody awaits the result once the client is gone: a failure must not vanish with it."""
    go = asyncio.Event()

    async def work() -> None:
        await go.wait()
        raise RuntimeError("broken bookkeeping")

    caller = asyncio.ensure_future(outlive_client(work()))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    with caplog.at_level(logging.ERROR, "odock.data_plane.objects"):
        go.set()
        for _ in range(50):
            await asyncio.sleep(0.01)
            if caplog.records:
                break
    assert [r.getMessage() for r in caplog.records] == ["object bookkeeping failed: RuntimeError: broken bookkeeping"]


async def test_work_whose_client_waits_hands_it_the_failure_and_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The waiting caller handles the error (the middleware logs a 500 once): no second report."""

    async def work() -> None:
        raise RuntimeError("broken bookkeeping")

    with caplog.at_level(logging.ERROR, "odock.data_plane.objects"):
        with pytest.raises(RuntimeError, match="broken bookkeeping"):
            await outlive_client(work())
        for _ in range(5):
            await asyncio.sleep(0)
    assert caplog.records == []
