"""The official openai SDK against Anthropic and Gemini models through /v1/chat/completions (issue 13):
plain and streamed chat, tools over two turns, JSON output, images, n, dropped fields, usage records."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai import AsyncOpenAI

from data_plane.usage.meter import FLAG_TRANSLATED
from odock.v1 import common_pb2
from tests.data_plane.translated.conftest import Org, script_gemini
from tests.data_plane.usage.stack import UsageQueries
from tests.fakes import gemini_generate
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
}
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


IMAGE_MESSAGES: Any = [
    {
        "role": "user",
        "content": [{"type": "text", "text": "count"}, {"type": "image_url", "image_url": {"url": PNG}}],
    }
]


def client(dp: DataPlaneProcess, org: Org) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{dp.url}/v1", api_key=org.key, max_retries=0, timeout=15)


async def record_of(queries: UsageQueries, request_id: str) -> Any:
    rec = await queries.record(request_id)
    assert rec.flags & FLAG_TRANSLATED
    assert rec.endpoint == "/v1/chat/completions"
    return rec


async def test_anthropic_plain_chat_usage_record_and_request_id(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, queries: UsageQueries
) -> None:
    raw = await client(dp, org).chat.completions.with_raw_response.create(
        model="claude-x",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}],
        max_tokens=50, temperature=0.5, top_p=0.9, stop=["END"], seed=7, user="u1", logprobs=False,
        presence_penalty=0.1, frequency_penalty=0.2, extra_body={"some_unknown_field": {"x": 1}},
    )  # fmt: skip
    answer = raw.parse()
    assert answer.usage is not None
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.model == "claude-x"
    assert answer.choices[0].message.content == "You said: hello there"
    assert answer.choices[0].finish_reason == "stop"
    sent = fake.last().json()
    assert sent["model"] == "claude-sonnet-4-5" and sent["system"] == "Be brief." and sent["max_tokens"] == 50
    assert "seed" not in sent and "user" not in sent and "some_unknown_field" not in sent
    native = fake.last()
    assert native.headers["x-api-key"] == fake.secret("anthropic") and "authorization" not in native.headers
    assert native.headers["anthropic-version"]
    request_id = raw.headers["x-request-id"]
    record_id = raw.headers["x-odock-request-id"]
    assert request_id and record_id
    rec = await record_of(queries, record_id)
    assert rec.family == common_pb2.PROVIDER_FAMILY_ANTHROPIC and rec.model_name == "claude-x"
    assert rec.outcome == common_pb2.OUTCOME_COMPLETE and rec.http_status == 200 and not rec.streamed
    assert (rec.input_tokens, rec.output_tokens) == (
        answer.usage.prompt_tokens,
        answer.usage.completion_tokens,
    )
    assert (
        rec.input_tokens > 0
        and rec.cost_picos == rec.input_tokens * 3_000_000 + rec.output_tokens * 15_000_000
    )


async def test_anthropic_stream_equals_plain_answer_with_usage_chunk(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, queries: UsageQueries
) -> None:
    oai = client(dp, org)
    messages: Any = [{"role": "user", "content": "stream me a reply please"}]
    plain = await oai.chat.completions.create(model="claude-x", messages=messages)
    assert plain.usage is not None
    raw = await oai.chat.completions.with_raw_response.create(
        model="claude-x", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["content-type"] == "text/event-stream" and raw.headers["x-request-id"]
    # Proxies must neither cache nor buffer the stream.
    assert (raw.headers["cache-control"], raw.headers["x-accel-buffering"]) == ("no-cache", "no")
    text, finish, usage, ids, roles = "", None, None, set(), 0
    async for chunk in raw.parse():
        ids.add(chunk.id)
        if chunk.choices:
            delta = chunk.choices[0].delta
            roles += delta.role == "assistant"
            text += delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        else:
            usage = chunk.usage
    assert text == plain.choices[0].message.content and finish == "stop" and len(ids) == 1 and roles == 1
    assert usage is not None and usage.prompt_tokens == plain.usage.prompt_tokens
    rec = await record_of(queries, raw.headers["x-odock-request-id"])
    assert rec.streamed and rec.outcome == common_pb2.OUTCOME_COMPLETE
    assert (rec.input_tokens, rec.output_tokens) == (usage.prompt_tokens, usage.completion_tokens)
    # The SDK's stream helper reassembles the same answer.
    async with oai.chat.completions.stream(model="claude-x", messages=messages) as stream:
        final = await stream.get_final_completion()
    assert final.choices[0].message.content == plain.choices[0].message.content


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_tools_two_turns(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, stream: bool
) -> None:
    oai = client(dp, org)
    messages: list[Any] = [{"role": "user", "content": "Weather and time in Berlin?"}]
    first: Any
    if stream:
        async with oai.chat.completions.stream(
            model="claude-x", messages=messages, tools=[WEATHER, TIME]
        ) as s:
            first = await s.get_final_completion()
    else:
        first = await oai.chat.completions.create(model="claude-x", messages=messages, tools=[WEATHER, TIME])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls: list[Any] = list(choice.message.tool_calls or [])
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0].function.arguments) == {"city": "text"} and len({c.id for c in calls}) == 2
    messages.append(choice.message.model_dump(exclude_none=True))
    for c in calls:
        messages.append({"role": "tool", "tool_call_id": c.id, "content": f"result of {c.function.name}"})
    second = await oai.chat.completions.create(model="claude-x", messages=messages, tools=[WEATHER, TIME])
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content
    turn = fake.last().json()["messages"]
    assert [m["role"] for m in turn] == ["user", "assistant", "user"]
    assert [b["type"] for b in turn[2]["content"]] == ["tool_result", "tool_result"]


@pytest.mark.parametrize(
    ("choice", "names"),
    [("auto", ["get_weather", "get_time"]), ("required", ["get_weather", "get_time"]), ("none", []),
     ({"type": "function", "function": {"name": "get_time"}}, ["get_time"])],
)  # fmt: skip
async def test_anthropic_tool_choice(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, choice: Any, names: list[str]
) -> None:
    answer = await client(dp, org).chat.completions.create(
        model="claude-x",
        messages=[{"role": "user", "content": "go"}],
        tools=[WEATHER, TIME],
        tool_choice=choice,
    )
    calls: list[Any] = list(answer.choices[0].message.tool_calls or [])
    assert [c.function.name for c in calls] == names


async def test_anthropic_json_schema_and_image(dp: DataPlaneProcess, org: Org, fake: FakeProvider) -> None:
    schema: Any = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    answer = await client(dp, org).chat.completions.create(
        model="claude-x",
        messages=IMAGE_MESSAGES,
        response_format={"type": "json_schema", "json_schema": {"name": "count", "schema": schema}},
    )  # fmt: skip
    assert json.loads(answer.choices[0].message.content or "") == {"n": 7}
    assert answer.choices[0].finish_reason == "stop"
    blocks = fake.last().json()["messages"][0]["content"]
    assert [b["type"] for b in blocks] == ["text", "image"]


async def test_anthropic_n_makes_n_calls_and_sums_usage(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, queries: UsageQueries
) -> None:
    oai = client(dp, org)
    messages: Any = [{"role": "user", "content": "twice"}]
    one = await oai.chat.completions.create(model="claude-x", messages=messages)
    raw = await oai.chat.completions.with_raw_response.create(model="claude-x", messages=messages, n=2)
    two = raw.parse()
    assert [c.index for c in two.choices] == [0, 1] and len(fake.requests) == 3
    assert two.usage is not None and one.usage is not None
    assert two.usage.prompt_tokens == 2 * one.usage.prompt_tokens
    rec = await record_of(queries, raw.headers["x-odock-request-id"])
    assert (rec.input_tokens, rec.output_tokens) == (two.usage.prompt_tokens, two.usage.completion_tokens)
    with pytest.raises(Exception) as caught:
        await oai.chat.completions.create(model="claude-x", messages=messages, n=9)
    assert getattr(caught.value, "status_code", None) == 400
    assert len(fake.requests) == 3
    # Streamed: the two upstream streams interleaved, one id, one usage chunk with the sums.
    raw_stream = await oai.chat.completions.with_raw_response.create(
        model="claude-x", messages=messages, n=2, stream=True, stream_options={"include_usage": True}
    )
    texts: list[str] = ["", ""]
    finishes: list[str | None] = [None, None]
    usages: list[Any] = []
    ids: set[str] = set()
    async for chunk in raw_stream.parse():
        ids.add(chunk.id)
        if not chunk.choices:
            usages.append(chunk.usage)
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            finishes[c.index] = c.finish_reason or finishes[c.index]
    assert texts == [c.message.content for c in two.choices] and finishes == ["stop", "stop"]
    assert len(ids) == 1 and len(usages) == 1 and usages[0] is not None
    assert usages[0].prompt_tokens == two.usage.prompt_tokens and len(fake.requests) == 5
    rec = await record_of(queries, raw_stream.headers["x-odock-request-id"])
    assert rec.streamed and rec.outcome == common_pb2.OUTCOME_COMPLETE
    assert (rec.input_tokens, rec.output_tokens) == (two.usage.prompt_tokens, two.usage.completion_tokens)
    # Without include_usage: no usage anywhere, both choices still there.
    plain_stream = await oai.chat.completions.create(model="claude-x", messages=messages, n=2, stream=True)
    seen = [chunk async for chunk in plain_stream]
    assert all(chunk.choices and chunk.usage is None for chunk in seen)
    assert {c.index for chunk in seen for c in chunk.choices} == {0, 1}


async def test_gemini_plain_stream_tools_and_n(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, queries: UsageQueries
) -> None:
    oai = client(dp, org)
    script = gemini_generate.Script(candidates=(gemini_generate.text("Hel", "lo ", "there"),))
    script_gemini(fake, script)
    messages: Any = [{"role": "developer", "content": "Be kind."}, {"role": "user", "content": "hi"}]
    raw = await oai.chat.completions.with_raw_response.create(model="gem-x", messages=messages, max_tokens=20)
    plain = raw.parse()
    assert plain.choices[0].message.content == "Hello there" and plain.choices[0].finish_reason == "stop"
    assert fake.last().native_path.endswith("/v1beta/models/gemini-2.5-flash:generateContent")
    rec = await record_of(queries, raw.headers["x-odock-request-id"])
    assert rec.family == common_pb2.PROVIDER_FAMILY_GEMINI and (rec.input_tokens, rec.output_tokens) == (
        11,
        7,
    )

    raw_stream = await oai.chat.completions.with_raw_response.create(
        model="gem-x", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    pieces, usage = [], None
    async for chunk in raw_stream.parse():
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        else:
            usage = chunk.usage
    assert "".join(pieces) == "Hello there" and usage is not None and usage.prompt_tokens == 11
    assert "alt=sse" in fake.last().path or fake.last().query.get("alt") == "sse"
    rec = await record_of(queries, raw_stream.headers["x-odock-request-id"])
    assert rec.streamed and (rec.input_tokens, rec.output_tokens) == (11, 7)

    calls = gemini_generate.Script(
        candidates=(gemini_generate.Candidate((gemini_generate.call("get_weather", {"city": "Paris"}),)),)
    )
    script_gemini(fake, calls)
    answer = await oai.chat.completions.create(model="gem-x", messages=messages, tools=[WEATHER])
    call: Any = (answer.choices[0].message.tool_calls or [])[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    history: Any = [*messages, answer.choices[0].message.model_dump(exclude_none=True),
                    {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]  # fmt: skip
    script_gemini(fake, script)
    second = await oai.chat.completions.create(model="gem-x", messages=history, tools=[WEATHER])
    assert second.choices[0].message.content == "Hello there"

    two = gemini_generate.Script(candidates=(gemini_generate.text("a"), gemini_generate.text("b")))
    script_gemini(fake, two)
    before = len(fake.requests)
    answer = await oai.chat.completions.create(model="gem-x", messages=messages, n=2)
    assert [c.message.content for c in answer.choices] == ["a", "b"] and len(fake.requests) == before + 1
    assert fake.last().json()["generationConfig"]["candidateCount"] == 2


@pytest.mark.parametrize(
    ("choice", "mode"),
    [("auto", "AUTO"), ("required", "ANY"), ("none", "NONE"),
     ({"type": "function", "function": {"name": "get_time"}}, "ANY")],
)  # fmt: skip
async def test_gemini_tool_choice_json_schema_and_image(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, choice: Any, mode: str
) -> None:
    script_gemini(fake, gemini_generate.Script(candidates=(gemini_generate.text('{"n": 7}'),)))
    schema: Any = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    answer = await client(dp, org).chat.completions.create(
        model="gem-x",
        messages=IMAGE_MESSAGES,
        tools=[WEATHER, TIME],
        tool_choice=choice,
        parallel_tool_calls=False,
        response_format={"type": "json_schema", "json_schema": {"name": "count", "schema": schema}},
    )
    assert json.loads(answer.choices[0].message.content or "") == {"n": 7}
    sent = fake.last().json()
    assert sent["toolConfig"]["functionCallingConfig"]["mode"] == mode
    # gemini-2.5 refuses tools with JSON output ("Tool use with a response mime type ... is unsupported")
    assert "responseMimeType" not in sent.get("generationConfig", {})
    assert [list(p) for p in sent["contents"][0]["parts"]] == [["text"], ["inlineData"]]
