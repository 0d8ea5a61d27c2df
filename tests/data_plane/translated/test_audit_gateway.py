"""Audit of the translated path's gateway side (issue 13): fan-out metering, abusive fields, headers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from data_plane.usage.meter import FLAG_TRANSLATED
from odock.v1 import common_pb2
from tests.data_plane.translated.conftest import Org
from tests.data_plane.usage.stack import UsageQueries
from tests.fakes.anthropic_messages import strict_messages
from tests.fakes.provider import FakeProvider
from tests.fakes.reply import JsonReply
from tests.support.dataplane import DataPlaneProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

MESSAGES: Any = [{"role": "user", "content": "hello"}]


async def post(dp: DataPlaneProcess, org: Org, body: Any, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=dp.url, timeout=15) as http:
        kw: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
        return await http.post(
            "/v1/chat/completions", headers={"Authorization": f"Bearer {org.key}", **headers}, **kw
        )


def _one_broken(calls: list[dict[str, Any]]) -> Any:
    """strict_messages, but the last call's answer (usage intact) has no content list."""

    def build(ask: Any) -> Any:
        reply = strict_messages(ask)
        assert isinstance(reply, JsonReply)
        calls.append(reply.body["usage"])
        if len(calls) == 3:  # the last built, so the last the gateway reads
            return JsonReply({**reply.body, "content": 5})
        return reply

    return build


async def test_fan_out_meters_every_call_when_one_answer_is_untranslatable(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, queries: UsageQueries
) -> None:
    # Before: the failing call reported only its own usage; the calls that had answered were lost.
    calls: list[dict[str, Any]] = []
    fake.builders["anthropic"] = _one_broken(calls)
    resp = await post(dp, org, {"model": "claude-x", "messages": MESSAGES, "n": 3})
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "upstream_untranslatable"
    assert len(calls) == 3
    rec = await queries.record(resp.headers["x-odock-request-id"])
    assert rec.flags & FLAG_TRANSLATED and rec.http_status == 502
    assert rec.input_tokens == sum(u["input_tokens"] for u in calls)
    assert rec.output_tokens == sum(u["output_tokens"] for u in calls)


@pytest.mark.parametrize(("case", "param"), [
    ({"n": "3"}, "n"), ({"n": 3.0}, "n"), ({"n": 0}, "n"), ({"n": -1}, "n"), ({"n": 9}, "n"),
    ({"n": 1e9}, "n"), ({"n": True}, "n"), ({"stream": "true"}, "stream"), ({"stream": 1}, "stream"),
])  # fmt: skip
@pytest.mark.parametrize("model", ["claude-x", "gem-x"])
async def test_bad_n_and_stream_are_400_before_the_upstream(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, case: dict[str, Any], param: str, model: str
) -> None:
    resp = await post(dp, org, {"model": model, "messages": MESSAGES, **case}, **{"x-request-id": "au3-1"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == param
    assert resp.headers["x-request-id"] == "au3-1" and resp.headers["x-odock-request-id"]
    assert fake.requests == []


async def test_duplicate_keys_still_refused_on_the_translated_path(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider
) -> None:
    raw = b'{"model":"claude-x","messages":[{"role":"user","content":"hi"}],"n":2,"n":1}'
    resp = await post(dp, org, raw, **{"Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "duplicate_key"
    assert fake.requests == []


async def test_streamed_fan_out_meters_what_was_read_when_the_client_leaves(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, queries: UsageQueries
) -> None:
    # Before: the client's disconnect skipped the summing of the n native streams' usage (0 tokens).
    single = await post(dp, org, {"model": "claude-x", "messages": MESSAGES})
    per_call = (await queries.record(single.headers["x-odock-request-id"])).input_tokens
    assert per_call > 0
    release = asyncio.Event()
    fake.knobs.hold_last = release  # both streams wait before their last piece
    body = {"model": "claude-x", "messages": MESSAGES, "n": 2, "stream": True}
    async with httpx.AsyncClient(base_url=dp.url, timeout=15) as http, http.stream(
        "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {org.key}"}
    ) as resp:
        request_id = resp.headers["x-odock-request-id"]
        seen = 0
        async for line in resp.aiter_lines():
            seen += line.startswith("data:")
            if seen >= 4:  # both streams have begun: their message_start (input usage) was read
                break
    release.set()
    rec = await queries.record(request_id)
    assert rec.outcome == common_pb2.OUTCOME_CANCELLED
    assert rec.input_tokens == 2 * per_call


@pytest.mark.parametrize("model", ["claude-x", "gem-x"])
@pytest.mark.parametrize("body", [
    {"stream_options": {"include_usage": True}},
    {"stream": False, "stream_options": {"include_usage": True}},
    {"stream": True, "stream_options": "yes"},
])  # fmt: skip
async def test_stream_options_follow_openai_rules(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, model: str, body: dict[str, Any]
) -> None:
    # Before: stream_options without stream was ignored (OpenAI answers 400 param stream_options).
    resp = await post(dp, org, {"model": model, "messages": MESSAGES, **body})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "stream_options"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("model", "family"),
    [("claude-x", common_pb2.PROVIDER_FAMILY_ANTHROPIC), ("gem-x", common_pb2.PROVIDER_FAMILY_GEMINI)],
)
async def test_a_translated_request_refused_before_the_upstream_is_flagged(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, queries: UsageQueries, model: str, family: int
) -> None:
    # Before: a 400 from the translation (here n out of range) left a record without FLAG_TRANSLATED.
    resp = await post(dp, org, {"model": model, "messages": MESSAGES, "n": 9})
    assert resp.status_code == 400 and fake.requests == []
    rec = await queries.record(resp.headers["x-odock-request-id"])
    assert rec.flags & FLAG_TRANSLATED and rec.family == family and rec.http_status == 400
