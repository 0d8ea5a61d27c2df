"""Audit of Anthropic models through OpenAI's chat completions (issue 13), from the openai SDK's side:
structured output with ``parse`` (nested Pydantic models), answers the strict fake is scripted to
give, image data URLs as clients really write them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai import APIError, AsyncOpenAI, BadRequestError, pydantic_function_tool
from pydantic import BaseModel

from data_plane.usage.meter import FLAG_CLAMPED
from data_plane.usage.tokens import MAX_TOKENS
from tests.data_plane.translated.conftest import Org
from tests.data_plane.usage.stack import UsageQueries
from tests.fakes.anthropic_messages import (
    answered,
    frames,
    invalid,
    problems,
    sample,
    scripted_reply,
    stream_events,
    strict_messages,
)
from tests.fakes.provider import FakeProvider
from tests.fakes.reply import Ask, JsonReply, StreamReply
from tests.support.dataplane import DataPlaneProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

JPEG_1PX = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDA=="


class City(BaseModel):
    name: str
    population: int


class Answer(BaseModel):
    capital: City
    neighbours: list[City]
    note: str | None


def client(dp: DataPlaneProcess, org: Org) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{dp.url}/v1", api_key=org.key, max_retries=0, timeout=15)


def with_text_before_json(ask: Ask) -> JsonReply | StreamReply:
    """Claude, offered the JSON tool beside the client's own tools, often says something first."""
    found = problems(ask.payload)
    if found:
        return JsonReply(invalid("; ".join(found)), status=400)
    reply = scripted_reply(ask.payload)
    json_tool = next(t for t in ask.payload["tools"] if t["name"] == "json_answer")
    reply["content"] = [
        {"type": "text", "text": "Here is the answer."},
        {
            "type": "tool_use",
            "id": "toolu_j1",
            "name": "json_answer",
            "input": sample(json_tool["input_schema"]),
        },
    ]
    reply["stop_reason"] = "tool_use"
    return answered(ask, reply)


@pytest.mark.parametrize("stream", [False, True])
async def test_parse_a_nested_pydantic_model_round_trips(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, stream: bool
) -> None:
    oai = client(dp, org)
    messages: Any = [{"role": "user", "content": "France?"}]
    if stream:
        async with oai.chat.completions.stream(
            model="claude-x", messages=messages, response_format=Answer
        ) as s:
            done = await s.get_final_completion()
    else:
        done = await oai.chat.completions.parse(model="claude-x", messages=messages, response_format=Answer)
    parsed = done.choices[0].message.parsed
    assert isinstance(parsed, Answer) and isinstance(parsed.capital, City) and parsed.neighbours
    assert done.choices[0].finish_reason == "stop" and not done.choices[0].message.tool_calls
    sent = fake.last().json()
    schema = sent["tools"][0]["input_schema"]
    assert sent["tool_choice"] == {"type": "tool", "name": "json_answer"} and "$defs" in schema


async def test_text_beside_the_json_answer_is_not_glued_to_it(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider
) -> None:
    fake.builders["anthropic"] = with_text_before_json
    tool = pydantic_function_tool(City, name="lookup")  # strict: parse accepts only strict tools
    done = await client(dp, org).chat.completions.parse(
        model="claude-x",
        messages=[{"role": "user", "content": "France?"}],
        response_format=Answer,
        tools=[tool],
    )
    assert isinstance(done.choices[0].message.parsed, Answer)
    assert done.choices[0].message.content is not None and done.choices[0].message.content.startswith("{")


@pytest.mark.parametrize("media", ["image/jpg", "IMAGE/JPEG", "image/jpeg"])
async def test_image_jpg_data_url_is_sent_as_jpeg(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, media: str
) -> None:
    assert fake.builders["anthropic"] is strict_messages
    content: Any = [
        {"type": "text", "text": "what is it"},
        {"type": "image_url", "image_url": {"url": f"data:{media};base64,{JPEG_1PX}", "detail": "low"}},
    ]
    done = await client(dp, org).chat.completions.create(
        model="claude-x", messages=[{"role": "user", "content": content}]
    )
    assert done.choices[0].message.content
    source = fake.last().json()["messages"][0]["content"][1]["source"]
    assert source == {"type": "base64", "media_type": "image/jpeg", "data": JPEG_1PX}


def cut_before_message_stop(ask: Ask) -> JsonReply | StreamReply:
    """The stream's body ends cleanly, but before Anthropic's message_stop (a proxy cut it)."""
    out = frames(stream_events(scripted_reply(ask.payload)))
    return StreamReply(out[:-3], len(out) - 4)


@pytest.mark.parametrize("n", [1, 2])
async def test_a_stream_cut_before_message_stop_is_an_error_not_a_finished_answer(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, n: int
) -> None:
    fake.builders["anthropic"] = cut_before_message_stop
    stream = await client(dp, org).chat.completions.create(
        model="claude-x", messages=[{"role": "user", "content": "a long story"}], stream=True, n=n
    )
    finishes: list[str] = []
    with pytest.raises(APIError):
        async for chunk in stream:
            finishes += [c.finish_reason for c in chunk.choices if c.finish_reason]
    assert finishes == []


@pytest.mark.parametrize(
    "url",
    [
        f"data:image/jpeg;name=photo.jpg;base64,{JPEG_1PX}",  # RFC 2397 parameters before base64
        f"data:image/jpeg;base64,{JPEG_1PX[:20]}\n{JPEG_1PX[20:]}",  # MIME-wrapped base64
    ],
)
async def test_data_urls_as_clients_write_them(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, url: str
) -> None:
    content: Any = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}]
    await client(dp, org).chat.completions.create(
        model="claude-x", messages=[{"role": "user", "content": content}]
    )
    source = fake.last().json()["messages"][0]["content"][0]["source"]
    assert source == {"type": "base64", "media_type": "image/jpeg", "data": JPEG_1PX}


def _call(call_id: str, city: str) -> Any:
    arguments = f'{{"city": "{city}"}}'
    return {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}


async def test_tool_call_ids_reused_across_turns_are_made_unique(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider
) -> None:
    # Another provider's model numbered its calls call_0 in each turn; the client switched to Claude.
    messages: Any = [
        {"role": "user", "content": "Weather in Paris, then Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [_call("call_0", "Paris")]},
        {"role": "tool", "tool_call_id": "call_0", "content": "sunny"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [_call("call_0", "Rome"), _call("call.1", "Oslo")],
        },
        {"role": "tool", "tool_call_id": "call.1", "content": [{"type": "text", "text": "snow"}]},
        {"role": "tool", "tool_call_id": "call_0", "content": ""},
    ]
    done = await client(dp, org).chat.completions.create(model="claude-x", messages=messages)
    assert done.choices[0].message.content
    sent = fake.last().json()["messages"]
    uses = [b["id"] for m in sent for b in m["content"] if b["type"] == "tool_use"]
    assert len(uses) == len(set(uses)) == 3 and uses[0] == "call_0"
    results = [b["tool_use_id"] for b in sent[4]["content"]]
    assert sorted(results) == sorted(uses[1:])
    rome = next(b for b in sent[3]["content"] if b["type"] == "tool_use" and b["input"] == {"city": "Rome"})
    empty = next(b for b in sent[4]["content"] if "content" not in b)
    assert empty["tool_use_id"] == rome["id"]


def beyond_64_bits(ask: Ask) -> JsonReply | StreamReply:
    """A broken or hostile upstream: usage counts no 64-bit integer holds."""
    message = scripted_reply(ask.payload)
    message["usage"] = {"input_tokens": 2**64 + 5, "output_tokens": 2**63}
    return answered(ask, message)


@pytest.mark.parametrize("stream", [False, True])
async def test_counts_beyond_64_bits_are_clamped_not_a_failure(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, queries: UsageQueries, stream: bool
) -> None:
    """Once a 500 (the whole answer) or an error chunk instead of the usage chunk (a stream): the
    client sees the usage clamped as the record is."""
    fake.builders["anthropic"] = beyond_64_bits
    messages: Any = [{"role": "user", "content": "hello"}]
    oai = client(dp, org)
    if stream:
        streamed = await oai.chat.completions.with_raw_response.create(
            model="claude-x", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in streamed.parse()]
        usage, record_id = chunks[-1].usage, streamed.headers["x-odock-request-id"]
        assert chunks[-2].choices[0].finish_reason == "stop"
    else:
        whole = await oai.chat.completions.with_raw_response.create(model="claude-x", messages=messages)
        usage, record_id = whole.parse().usage, whole.headers["x-odock-request-id"]
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (MAX_TOKENS, MAX_TOKENS)
    rec = await queries.record(record_id)
    assert (rec.input_tokens, rec.output_tokens) == (MAX_TOKENS, MAX_TOKENS) and rec.flags & FLAG_CLAMPED


@pytest.mark.parametrize("model", ["claude-x", "gem-x"])
async def test_function_arguments_nested_beyond_what_can_be_sent_are_a_400(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, model: str
) -> None:
    """Arguments are a JSON string in the client's body (within the gateway's depth bound), an object
    in the native one: nested 400 deep they cannot be written (orjson stops at 254 levels). Once a
    500 on Anthropic models; now the client's mistake, named, and nothing is sent upstream."""
    deep: Any = {}
    for _ in range(400):
        deep = {"a": deep}
    messages: Any = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": json.dumps(deep)}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]  # fmt: skip
    before = len(fake.requests)
    with pytest.raises(BadRequestError) as caught:
        await client(dp, org).chat.completions.create(model=model, messages=messages)
    assert caught.value.code == "json_too_deep" and "nests too deeply" in caught.value.message
    assert len(fake.requests) == before
