"""One record per authenticated request whatever happens: client disconnects after 0, 1 and 5
chunks, upstream cuts, provider and gateway errors; flags; request ids; include_usage stripping."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from odock.v1 import common_pb2
from tests.data_plane.usage.stack import PRICES, UsageQueries, cost, provision_priced
from tests.fakes.provider import FakeProvider
from tests.fakes.reply import dumps
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

GEMINI_SSE = "/v1beta/models/gemini-flash:streamGenerateContent?alt=sse"
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "stream please"}]}]}
MSGS = [{"role": "user", "content": "hello"}]


def _headers(org: Provisioned, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {org.key}", "Content-Type": "application/json", **extra}


async def _read_events_then_leave(
    dp: DataPlaneProcess, path: str, body: dict[str, Any], org: Provisioned, events: int
) -> str:
    """Stream ``path``, read ``events`` SSE events, then drop the connection; the record id."""
    async with (
        httpx.AsyncClient(base_url=dp.url, timeout=15) as client,
        client.stream("POST", path, content=json.dumps(body), headers=_headers(org)) as resp,
    ):
        assert resp.status_code == 200
        seen = 0
        if events:
            async for line in resp.aiter_lines():
                seen += line == ""
                if seen == events:
                    break
        return resp.headers["x-odock-request-id"]


@pytest.mark.parametrize("events", [0, 1, 5])
async def test_client_disconnect_mid_stream_is_cancelled_with_tokens_seen(
    events: int, dp: DataPlaneProcess, org: Provisioned, fake: FakeProvider, queries: UsageQueries
) -> None:
    fake.reset()
    # Exactly ``events`` frames, then the fake holds its last piece until the client has gone.
    fake.knobs.chunks = events + 1
    fake.knobs.hold_last = asyncio.Event()
    rid = await _read_events_then_leave(dp, GEMINI_SSE, GEMINI_BODY, org, events)
    rec = await queries.record(rid)
    sent = fake.last()
    await asyncio.wait_for(sent.finished.wait(), 10)
    assert sent.disconnected and sent.frames_sent == events
    assert rec.outcome == common_pb2.OUTCOME_CANCELLED and rec.http_status == 200 and rec.streamed
    # Gemini reports cumulative usage on every chunk: the last one relayed is what was used.
    want_in = sent.prompt_tokens if events else 0
    assert (rec.input_tokens, rec.output_tokens) == (want_in, events)
    assert rec.cost_picos == cost(PRICES["gemini-flash"], want_in, events)
    assert (rec.time_to_first_byte_us > 0) is (events > 0)


async def test_client_disconnect_before_headers_and_anthropic_input_from_message_start(
    cp: ControlPlaneProcess, dp: DataPlaneProcess, fake: FakeProvider, queries: UsageQueries
) -> None:
    org = await provision_priced(cp, fake)  # its own org: totals count only this test's requests
    fake.reset()
    fake.knobs.delay_before_headers = 30
    async with httpx.AsyncClient(base_url=dp.url, timeout=0.5) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                "/v1/messages",
                headers=_headers(org, **{"x-request-id": "mine-1"}),
                content=json.dumps({"model": "claude", "messages": MSGS, "max_tokens": 9}),
            )
    await fake.wait_for_requests(1)
    await asyncio.wait_for(fake.last().finished.wait(), 10)
    totals = await queries.wait_requests(org.org.id, 1)
    assert totals.outcomes.cancelled == 1 and totals.input_tokens == 0

    fake.reset()
    fake.knobs.chunks = 4
    fake.knobs.hold_last = asyncio.Event()
    rid = await _read_events_then_leave(
        dp, "/v1/messages", {"model": "claude", "messages": MSGS, "max_tokens": 9, "stream": True}, org, 2
    )
    rec = await queries.record(rid)
    assert rec.outcome == common_pb2.OUTCOME_CANCELLED
    assert (rec.input_tokens, rec.output_tokens) == (fake.last().prompt_tokens, 1)  # message_start's counts


@pytest.mark.parametrize(
    ("path", "body", "model", "frames", "want_out"),
    [
        (GEMINI_SSE, GEMINI_BODY, "gemini-flash", 3, 3),
        (
            "/v1/messages",
            {"model": "claude", "messages": MSGS, "max_tokens": 9, "stream": True},
            "claude",
            4,
            1,
        ),
    ],
)
async def test_upstream_cut_mid_stream_is_partial(
    path: str,
    body: dict[str, Any],
    model: str,
    frames: int,
    want_out: int,
    dp: DataPlaneProcess,
    org: Provisioned,
    fake: FakeProvider,
    queries: UsageQueries,
) -> None:
    fake.reset()
    fake.knobs.chunks = 8
    fake.knobs.reset_after = frames
    async with httpx.AsyncClient(base_url=dp.url, timeout=15) as client:
        resp = await client.post(path, content=json.dumps(body), headers=_headers(org))
    assert resp.status_code == 200 and "error" in resp.text  # the gateway's closing error event
    rec = await queries.record(resp.headers["x-odock-request-id"])
    assert rec.outcome == common_pb2.OUTCOME_PARTIAL and rec.http_status == 200
    assert (rec.input_tokens, rec.output_tokens) == (fake.last().prompt_tokens, want_out)
    assert rec.cost_picos == cost(PRICES[model], rec.input_tokens, want_out)


@pytest.mark.parametrize(
    ("status", "path", "body"),
    [
        (429, "/v1/chat/completions", {"model": "gpt-chat", "messages": MSGS}),
        (500, GEMINI_SSE, GEMINI_BODY),
        (529, "/v1/messages", {"model": "claude", "messages": MSGS, "max_tokens": 9, "stream": True}),
    ],
)
async def test_provider_error_is_an_error_record_with_its_status(
    status: int,
    path: str,
    body: dict[str, Any],
    dp: DataPlaneProcess,
    org: Provisioned,
    fake: FakeProvider,
    queries: UsageQueries,
) -> None:
    fake.reset()
    fake.knobs.status = status
    async with httpx.AsyncClient(base_url=dp.url, timeout=15) as client:
        resp = await client.post(path, content=json.dumps(body), headers=_headers(org))
    assert resp.status_code == status
    rec = await queries.record(resp.headers["x-odock-request-id"])
    assert rec.outcome == common_pb2.OUTCOME_ERROR and rec.http_status == status
    assert (rec.input_tokens, rec.output_tokens, rec.cost_picos) == (0, 0, 0)
    assert rec.upstream_slug and rec.upstream_latency_us > 0


async def test_gateway_errors_after_auth_are_recorded_and_before_auth_are_not(
    dp: DataPlaneProcess, org: Provisioned, fake: FakeProvider, queries: UsageQueries
) -> None:
    fake.reset()
    async with httpx.AsyncClient(base_url=dp.url, timeout=15) as client:
        missing = await client.post(
            "/v1/chat/completions",
            headers=_headers(org),
            content=json.dumps({"model": "no-such-model", "messages": MSGS}),
        )
        broken = await client.post("/v1/messages", headers=_headers(org), content=b'{"model": "claude",')
        no_key = await client.post(
            "/v1/chat/completions", content=b"{}", headers={"Authorization": "Bearer odk-nope"}
        )
    assert (missing.status_code, broken.status_code, no_key.status_code) == (404, 400, 401)
    assert "x-odock-request-id" not in no_key.headers
    rec = await queries.record(missing.headers["x-odock-request-id"])
    assert (rec.outcome, rec.http_status, rec.model_name, rec.upstream_slug) == (
        common_pb2.OUTCOME_ERROR,
        404,
        "no-such-model",
        "",
    )
    rec = await queries.record(broken.headers["x-odock-request-id"])
    assert (rec.outcome, rec.http_status, rec.endpoint) == (common_pb2.OUTCOME_ERROR, 400, "/v1/messages")
    assert fake.requests == []


async def test_a_reused_client_request_id_never_hides_a_record(
    dp: DataPlaneProcess, org: Provisioned, fake: FakeProvider, queries: UsageQueries
) -> None:
    fake.reset()
    body = json.dumps({"model": "gpt-chat", "messages": MSGS})
    async with httpx.AsyncClient(base_url=dp.url, timeout=15) as client:
        resps = [
            await client.post(
                "/v1/chat/completions",
                content=body,
                headers=_headers(org, **{"x-request-id": "client-chosen-1"}),
            )
            for _ in range(2)
        ]
        plain = await client.post("/v1/chat/completions", content=body, headers=_headers(org))
    assert [r.headers["x-request-id"] for r in resps] == ["client-chosen-1"] * 2
    ids = [r.headers["x-odock-request-id"] for r in resps]
    assert len(set(ids)) == 2
    for rid in ids:
        assert (await queries.record(rid)).outcome == common_pb2.OUTCOME_COMPLETE
    # Without a client id, x-request-id is the record id itself.
    assert plain.headers["x-request-id"] == plain.headers["x-odock-request-id"]


async def test_malformed_usage_is_flagged_and_cached_input_uses_the_cached_price(
    dp: DataPlaneProcess, org: Provisioned, fake: FakeProvider, queries: UsageQueries
) -> None:
    fake.reset()
    fake.knobs.status = 200
    fake.knobs.error_body = dumps({"id": "x", "choices": [], "usage": {"prompt_tokens": "lots"}})
    body = json.dumps({"model": "gpt-chat", "messages": MSGS})
    async with httpx.AsyncClient(base_url=dp.url, timeout=15) as client:
        bad = await client.post("/v1/chat/completions", content=body, headers=_headers(org))
        fake.knobs.error_body = dumps(
            {
                "id": "x",
                "choices": [],
                "usage": {
                    "prompt_tokens": 1000,
                    "completion_tokens": 50,
                    "prompt_tokens_details": {"cached_tokens": 600},
                    "completion_tokens_details": {"reasoning_tokens": 20},
                },
            }
        )
        cached = await client.post("/v1/chat/completions", content=body, headers=_headers(org))
    rec = await queries.record(bad.headers["x-odock-request-id"])
    assert (rec.outcome, rec.flags, rec.input_tokens, rec.cost_picos) == (
        common_pb2.OUTCOME_COMPLETE,
        1,
        0,
        0,
    )
    rec = await queries.record(cached.headers["x-odock-request-id"])
    assert (rec.input_tokens, rec.cached_input_tokens, rec.output_tokens, rec.reasoning_tokens) == (
        1000,
        600,
        50,
        20,
    )
    price = PRICES["gpt-chat"]
    assert (
        rec.cost_picos
        == 400 * price.input_per_mtok_micros
        + 600 * price.cached_input_per_mtok_micros
        + 50 * price.output_per_mtok_micros
    )


def _chunks(raw: bytes) -> list[Any]:
    out = []
    for event in raw.decode().split("\n\n"):
        for line in event.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(json.loads(line[6:]))
    return out


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/vllm/chat/completions"])
async def test_the_client_sees_usage_chunks_only_when_it_asked(
    path: str, dp: DataPlaneProcess, org: Provisioned, fake: FakeProvider, queries: UsageQueries
) -> None:
    model = "llama" if "vllm" in path else "gpt-chat"
    base: dict[str, Any] = {"model": model, "stream": True}
    base.update(
        {"prompt": "hi"} if path.endswith("/completions") and "chat" not in path else {"messages": MSGS}
    )
    async with httpx.AsyncClient(base_url=dp.url, timeout=15) as client:
        fake.reset()
        quiet = await client.post(path, content=json.dumps(base), headers=_headers(org))
        upstream_asked = fake.last().json()["stream_options"]
        fake.reset()
        asked = await client.post(
            path,
            content=json.dumps({**base, "stream_options": {"include_usage": True}}),
            headers=_headers(org),
        )
    assert upstream_asked == {"include_usage": True}  # the gateway asked upstream on the client's behalf
    quiet_chunks, asked_chunks = _chunks(quiet.content), _chunks(asked.content)
    assert quiet.text.rstrip().endswith("data: [DONE]")
    assert all(c["choices"] and "usage" not in c for c in quiet_chunks)
    assert asked_chunks[-1]["choices"] == [] and asked_chunks[-1]["usage"]["completion_tokens"] == 3
    assert len(asked_chunks) == len(quiet_chunks) + 1
    for resp in (quiet, asked):
        rec = await queries.record(resp.headers["x-odock-request-id"])
        assert rec.output_tokens == 3 and rec.input_tokens > 0 and rec.flags == 0
