"""From a request to its usage record, through real planes: the client's x-request-id and the
error code are stored and found with ``odockctl usage list``; an upstream reporting 2^40 output
tokens at $75 per million still gets the client its 200 and exactly one (saturated) record."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from data_plane.usage.meter import FLAG_COST_SATURATED, MAX_COST_PICOS
from odock.v1 import common_pb2, keys_pb2
from tests.data_plane.usage.stack import UsageQueries
from tests.fakes.provider import FakeProvider
from tests.fakes.reply import dumps
from tests.odockctl.runner import Ctl
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned, Provisioner

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

CHAT = {"model": "gpt-chat", "messages": [{"role": "user", "content": "hello"}]}
ERROR = common_pb2.OUTCOME_ERROR


def _headers(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **extra}


async def _post(dp: DataPlaneProcess, key: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=dp.url, timeout=20) as client:
        return await client.post(
            "/v1/chat/completions", content=json.dumps(body), headers=_headers(key, **headers)
        )


async def _odockctl_list(cp: ControlPlaneProcess, *args: str) -> dict[str, Any]:
    """``odockctl --json usage list ARGS`` as a subprocess (off the event loop, where the fake lives)."""
    ctl = Ctl(cp.address, cp.admin_token)
    data: dict[str, Any] = await asyncio.to_thread(ctl.json, "usage", "list", *args)
    return data


async def test_the_client_request_id_finds_exactly_its_record(
    dp: DataPlaneProcess, cp: ControlPlaneProcess, org: Provisioned, fake: FakeProvider, queries: UsageQueries
) -> None:
    fake.reset()
    resp = await _post(dp, org.key, CHAT, **{"x-request-id": "my-id"})
    assert resp.status_code == 200 and resp.headers["x-request-id"] == "my-id"
    rid = resp.headers["x-odock-request-id"]
    other = await _post(dp, org.key, CHAT, **{"x-request-id": "not well formed!"})  # not echoed, not stored
    assert other.status_code == 200
    assert other.headers["x-request-id"] == other.headers["x-odock-request-id"]
    assert (await queries.record(other.headers["x-odock-request-id"])).client_request_id == ""
    await queries.record(rid)

    listed = await _odockctl_list(cp, "--client-request-id", "my-id")
    assert listed["next_page_token"] == ""
    (rec,) = listed["records"]
    assert rec["request_id"] == rid and rec["client_request_id"] == "my-id"
    assert rec["org_id"] == org.org.id and rec["model_name"] == "gpt-chat"
    # Numbers as numbers, zero values present.
    assert rec["http_status"] == 200 and rec["error_code"] == "" and rec["flags"] == 0
    assert isinstance(rec["input_tokens"], int) and rec["output_tokens"] == fake.requests[0].completion_tokens
    assert rec["reasoning_tokens"] == 0 and rec["cached_input_tokens"] == 0
    assert isinstance(rec["cost_picos"], int) and rec["cost_picos"] > 0
    # The gateway's id finds it too; another org's filter does not.
    assert [r["request_id"] for r in (await _odockctl_list(cp, "--request-id", rid))["records"]] == [rid]
    assert (await _odockctl_list(cp, "org_" + "a" * 26, "--client-request-id", "my-id"))["records"] == []


async def test_a_limit_429_record_names_the_error_code(
    dp: DataPlaneProcess, cp: ControlPlaneProcess, org: Provisioned, fake: FakeProvider, queries: UsageQueries
) -> None:
    fake.reset()
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        created = await admin.keys.CreateVirtualKey(
            keys_pb2.CreateVirtualKeyRequest(key=keys_pb2.VirtualKey(
                org_id=org.org.id, name="one-rpm", all_models=True,
                limits=common_pb2.KeyLimits(requests_per_minute=1))),
            metadata=admin.metadata,
        )  # fmt: skip
    refused = None
    for _ in range(4):  # at most one admitted per minute window: a 429 within three tries
        resp = await _post(dp, created.secret, CHAT, **{"x-request-id": "limited-1"})
        if resp.status_code == 429:
            refused = resp
            break
        assert resp.status_code == 200
    assert refused is not None and refused.json()["error"]["code"] == "rate_limit_exceeded"
    rid = refused.headers["x-odock-request-id"]
    rec = await queries.record(rid)
    assert (rec.http_status, rec.outcome, rec.error_code) == (429, ERROR, "rate_limit_exceeded")

    listed = await _odockctl_list(cp, "--request-id", rid)
    (shown,) = listed["records"]
    assert shown["error_code"] == "rate_limit_exceeded" and shown["http_status"] == 429
    assert shown["outcome"] == "OUTCOME_ERROR" and shown["client_request_id"] == "limited-1"


async def test_a_provider_error_is_recorded_as_upstream_error(
    dp: DataPlaneProcess, org: Provisioned, fake: FakeProvider, queries: UsageQueries
) -> None:
    fake.reset()
    fake.knobs.status = 503
    try:
        resp = await _post(dp, org.key, CHAT)
    finally:
        fake.reset()
    assert resp.status_code == 503
    rec = await queries.record(resp.headers["x-odock-request-id"])
    assert (rec.http_status, rec.outcome, rec.error_code) == (503, ERROR, "upstream_error")


async def test_2_to_the_40_output_tokens_at_75_dollars_relays_the_200_and_keeps_one_record(
    dp: DataPlaneProcess, cp: ControlPlaneProcess, org: Provisioned, fake: FakeProvider, queries: UsageQueries
) -> None:
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        await admin.create_model(
            org.org.id, "premium", "openai", "gpt-premium", fake.base_url("openai"), org.credentials["openai"].name,
            pricing=common_pb2.Pricing(input_per_mtok_micros=15_000_000, output_per_mtok_micros=75_000_000),
        )  # fmt: skip
    answer = {
        "id": "chatcmpl-huge", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-premium",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 2**40, "total_tokens": 2**40 + 12},
    }  # fmt: skip
    fake.reset()
    fake.knobs.status, fake.knobs.error_body = 200, dumps(answer)
    started = time.time()
    try:
        resp = await _post(dp, org.key, {**CHAT, "model": "premium"})
    finally:
        fake.reset()
    assert resp.status_code == 200, resp.text  # was a 500, and no record
    assert resp.json() == answer
    rec = await queries.record(resp.headers["x-odock-request-id"])
    assert (rec.http_status, rec.outcome, rec.error_code) == (200, common_pb2.OUTCOME_COMPLETE, "")
    assert (rec.input_tokens, rec.output_tokens) == (12, 2**40)
    assert rec.cost_picos == MAX_COST_PICOS and rec.flags == FLAG_COST_SATURATED

    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started - 5))
    listed = await _odockctl_list(cp, "--model", "premium", "--since", since)
    assert [r["request_id"] for r in listed["records"]] == [rec.request_id]  # exactly one
    assert listed["records"][0]["cost_picos"] == 2**53 and listed["records"][0]["flags"] == 8
    assert "Traceback" not in dp.stderr_text()
