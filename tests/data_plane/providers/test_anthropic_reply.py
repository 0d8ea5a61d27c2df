"""Anthropic Messages answers, streams and errors -> OpenAI's shapes (issue 13), read by the openai SDK;
hypothesis: random conversations pass the strict fake, streams reassemble to the plain answer."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageFunctionToolCall,
)

from data_plane.providers.anthropic_chat import TRANSLATOR
from data_plane.providers.translator import ChatRequest, ReplyIds, TranslatedModel
from tests.fakes.anthropic_messages import frames, problems, scripted_reply, stream_events

IDS = ReplyIds(id="chatcmpl-abc123", created=1_700_000_000, model="claude")
USAGE = {
    "input_tokens": 10,
    "output_tokens": 7,
    "cache_read_input_tokens": 5,
    "cache_creation_input_tokens": 3,
}
OPENAI_USAGE = {
    "prompt_tokens": 18,
    "completion_tokens": 7,
    "total_tokens": 25,
    "prompt_tokens_details": {"cached_tokens": 5},
}
_CLIENT = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9")


def message(content: list[dict[str, Any]], stop: str = "end_turn") -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": content,
            "stop_reason": stop, "stop_sequence": None, "usage": USAGE}  # fmt: skip


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def tool(i: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": args}


def answer(msg: dict[str, Any]) -> ChatCompletion:
    return ChatCompletion.model_validate(TRANSLATOR.answer(orjson.dumps(msg), IDS))


def stream(events: list[tuple[str, dict[str, Any]]], include_usage: bool = False) -> bytes:
    writer = TRANSLATOR.chunks(IDS, include_usage)
    out = b""
    for frame in frames(events):
        out += writer.feed(frame.rstrip(b"\n"))
    return out + writer.close()


def sdk_chunks(data: bytes) -> list[ChatCompletionChunk]:
    """The SSE bytes read by the openai SDK's own stream (raises what the SDK raises)."""
    req = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    resp = httpx2.Response(200, content=data, headers={"content-type": "text/event-stream"}, request=req)
    return list(openai.Stream(cast_to=ChatCompletionChunk, response=resp, client=_CLIENT))


def reassemble(chunks: list[ChatCompletionChunk]) -> ChatCompletion:
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(chunk)
    snapshot = state.current_completion_snapshot  # get_final_completion raises on "length"
    return ChatCompletion.model_validate(snapshot.model_dump())


def function_calls(msg: ChatCompletionMessage) -> list[ChatCompletionMessageFunctionToolCall]:
    found = msg.tool_calls or []
    assert all(isinstance(t, ChatCompletionMessageFunctionToolCall) for t in found)
    return [t for t in found if isinstance(t, ChatCompletionMessageFunctionToolCall)]


def calls(msg: ChatCompletionMessage) -> list[tuple[str, str, Any]]:
    return [(t.id, t.function.name, json.loads(t.function.arguments)) for t in function_calls(msg)]


def test_text_answer_with_usage_cached_tokens_included() -> None:
    got = answer(message([text("Hello"), text(" world")]))
    assert (got.id, got.object, got.created, got.model) == (
        "chatcmpl-abc123",
        "chat.completion",
        1_700_000_000,
        "claude",
    )
    assert got.choices[0].message.content == "Hello world" and got.choices[0].message.tool_calls is None
    assert got.choices[0].finish_reason == "stop"
    assert got.usage is not None and got.usage.model_dump(exclude_none=True) == OPENAI_USAGE


def test_tool_use_answer_has_tool_calls_and_null_content() -> None:
    got = answer(message([tool(1, "get_weather", {"city": "Paris"}), tool(2, "get_time", {})], "tool_use"))
    msg = got.choices[0].message
    assert msg.content is None and got.choices[0].finish_reason == "tool_calls"
    assert msg.tool_calls is not None
    assert calls(msg) == [("toolu_1", "get_weather", {"city": "Paris"}), ("toolu_2", "get_time", {})]


def test_the_json_tool_answer_is_content_and_stop() -> None:
    got = answer(message([tool(1, "json_answer", {"n": 3, "names": ["é"]})], "tool_use"))
    assert got.choices[0].finish_reason == "stop" and got.choices[0].message.tool_calls is None
    assert json.loads(got.choices[0].message.content or "") == {"n": 3, "names": ["é"]}


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
        (None, "stop"),
    ],
)
def test_stop_reasons(stop: str | None, finish: str) -> None:
    msg = message([text("x")])
    msg["stop_reason"] = stop
    assert answer(msg).choices[0].finish_reason == finish


def test_thinking_blocks_are_not_content_and_garbage_is_a_value_error() -> None:
    thinking = {"type": "thinking", "thinking": "hmm", "signature": "s"}
    assert answer(message([thinking, text("ok")])).choices[0].message.content == "ok"
    for garbage in (b"not json", b"[]", b'{"type": "message"}'):
        with pytest.raises(ValueError, match="not a Messages object"):
            TRANSLATOR.answer(garbage, IDS)


def test_stream_text_arrives_event_by_event_and_ends_with_usage_and_done() -> None:
    events = stream_events(message([text("Hello there, friend")]), piece=5)
    writer = TRANSLATOR.chunks(IDS, True)
    out = []
    for frame in frames(events):
        chunk = writer.feed(frame.rstrip(b"\n"))
        name = frame.split(b"\n", 1)[0]
        if name in (b"event: message_start", b"event: content_block_delta"):
            assert chunk, name  # never buffered: something to say at once
        out.append(chunk)
    data = b"".join(out) + writer.close()
    assert data.endswith(b"data: [DONE]\n\n")
    chunks = sdk_chunks(data)
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].delta.content for c in chunks[1:5]] == ["Hello", " ther", "e, fr", "iend"]
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump(exclude_none=True) == OPENAI_USAGE
    assert all(b'"usage":null' in line for line in data.split(b"\n\n")[:-3] if line)


def test_stream_without_include_usage_has_no_usage_key() -> None:
    data = stream(stream_events(message([text("hi")])))
    assert b"usage" not in data and data.endswith(b"data: [DONE]\n\n")


def test_streamed_tool_calls_get_distinct_indexes_and_argument_pieces() -> None:
    msg = message(
        [text("Checking."), tool(1, "get_weather", {"city": "Paris"}), tool(2, "get_time", {})], "tool_use"
    )
    chunks = sdk_chunks(stream(stream_events(msg, piece=3)))
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert [(tc.index, tc.id) for tc in calls if tc.id] == [(0, "toolu_1"), (1, "toolu_2")]
    assert sum(1 for tc in calls if tc.index == 0 and tc.id is None) > 2  # pieces, not one blob
    final = reassemble(chunks)
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.choices[0].message.tool_calls is not None
    got = [(t.function.name, t.function.arguments) for t in function_calls(final.choices[0].message)]
    assert got == [("get_weather", '{"city":"Paris"}'), ("get_time", "{}")]


def test_streamed_json_tool_is_content() -> None:
    msg = message([tool(1, "json_answer", {"answer": 42})], "tool_use")
    final = reassemble(sdk_chunks(stream(stream_events(msg))))
    assert final.choices[0].message.content == '{"answer":42}' and final.choices[0].finish_reason == "stop"


def test_hostile_stream_events_are_ignored_not_fatal() -> None:
    writer = TRANSLATOR.chunks(IDS, False)
    start = writer.feed(b'event: message_start\ndata: {"type":"message_start","message":[]}')
    assert start.startswith(b"data: ")  # the role chunk
    for event in (
        b"data: not json",
        b"data: []",
        b'data: {"type":"content_block_delta","index":[1],"delta":{"type":"input_json_delta","partial_json":"x"}}',
        b'data: {"type":"content_block_stop","index":{"a":1}}',
        b'data: {"type":"content_block_start","index":0,"content_block":"tool_use"}',
        b'data: {"type":"message_delta","delta":null,"usage":7}',
        b"event: ping",
    ):
        assert writer.feed(event) == b"", event
    assert writer.feed(b'event: message_stop\ndata: {"type":"message_stop"}') == b""
    chunks = sdk_chunks(start + writer.close())
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("kind", "said", "code"),
    [
        ("overloaded_error", "Overloaded", "overloaded"),
        ("invalid_request_error", "prompt is too long: 250000 tokens", "context_length_exceeded"),
    ],
)
def test_a_stream_error_event_becomes_an_openai_error_the_sdk_raises(kind: str, said: str, code: str) -> None:
    writer = TRANSLATOR.chunks(IDS, True)
    data = writer.feed(
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":3}}}'
    )
    data += writer.feed(
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}'
    )
    data += writer.feed(
        b"event: error\ndata: " + orjson.dumps({"type": "error", "error": {"type": kind, "message": said}})
    )
    assert writer.feed(b'event: ping\ndata: {"type":"ping"}') == b"" and writer.close() == b""
    assert b"[DONE]" not in data
    with pytest.raises(openai.APIError) as info:
        sdk_chunks(data)
    assert info.value.code == code and said in info.value.message


@pytest.mark.parametrize(
    ("status", "kind", "said", "want"),
    [
        (
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
            (400, "invalid_request_error", "context_length_exceeded"),
        ),
        (
            400,
            "invalid_request_error",
            "max_tokens: Field required",
            (400, "invalid_request_error", "invalid_request_error"),
        ),
        (404, "not_found_error", "model: claude-nope", (404, "invalid_request_error", "model_not_found")),
        (
            413,
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
            (413, "invalid_request_error", "request_too_large"),
        ),
        (
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
            (429, "rate_limit_error", "rate_limit_exceeded"),
        ),
        (529, "overloaded_error", "Overloaded", (503, "server_error", "overloaded")),
        (500, "api_error", "Internal server error", (502, "server_error", "upstream_error")),
        (503, "api_error", "unavailable", (503, "server_error", "overloaded")),
    ],
)
def test_error_mapping(status: int, kind: str, said: str, want: tuple[int, str, str]) -> None:
    err = TRANSLATOR.error(status, orjson.dumps({"type": "error", "error": {"type": kind, "message": said}}))
    assert (err.status, err.type, err.code) == want and err.message == said
    assert set(err.body()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("status", [401, 403])
def test_credential_errors_use_the_gateways_words_never_the_providers(status: int) -> None:
    body = orjson.dumps(
        {
            "type": "error",
            "error": {"type": "authentication_error", "message": "invalid x-api-key sk-ant-SECRET"},
        }
    )
    err = TRANSLATOR.error(status, body)
    assert err.status == 502 and "SECRET" not in err.message and "x-api-key" not in err.message


def test_garbage_and_huge_error_bodies_are_bounded() -> None:
    err = TRANSLATOR.error(502, b"<html>bad gateway</html>")
    assert (err.status, err.type) == (502, "server_error") and "502" in err.message
    huge = TRANSLATOR.error(
        400,
        orjson.dumps(
            {"type": "error", "error": {"type": "invalid_request_error", "message": "x\n" * 10_000}}
        ),
    )
    assert len(huge.message) <= 515 and "\n" not in huge.message


# --- properties ----------------------------------------------------------------------------

_WORDS = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
_NAMES = st.sampled_from(["get_weather", "get_time", "lookup-user", "f"])
_ARGS = st.dictionaries(
    st.sampled_from(["city", "n", "q"]),
    st.one_of(st.integers(-(2**53), 2**53), _WORDS, st.booleans()),
    max_size=3,
)
_IMAGE = st.sampled_from([
    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
])  # fmt: skip
_CONTENT = st.one_of(
    _WORDS, st.lists(st.one_of(_WORDS.map(lambda t: {"type": "text", "text": t}), _IMAGE), max_size=3)
)


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    if draw(st.booleans()):
        msgs.append({"role": draw(st.sampled_from(["system", "developer"])), "content": draw(_WORDS)})
    first = draw(_CONTENT)  # with some text: a conversation of nothing but blanks is refused
    msgs.append(
        {
            "role": "user",
            "content": [*first, {"type": "text", "text": "go"}] if isinstance(first, list) else first + "go",
        }
    )
    for turn in range(draw(st.integers(0, 4))):
        calls = [
            {
                "id": f"call_{turn}_{i}",
                "type": "function",
                "function": {"name": draw(_NAMES), "arguments": json.dumps(draw(_ARGS))},
            }
            for i in range(draw(st.integers(0, 3)))
        ]
        said = draw(st.one_of(st.none(), _WORDS))
        msgs.append({"role": "assistant", "content": said, **({"tool_calls": calls} if calls else {})})
        for c in draw(st.permutations(calls)):
            msgs.append({"role": "tool", "tool_call_id": c["id"], "content": draw(_WORDS)})
        if not calls or draw(st.booleans()):
            msgs.append({"role": "user", "content": draw(_CONTENT)})
    return msgs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations(), st.booleans(), st.sampled_from([None, "auto", "required", "none"]), st.booleans())
def test_random_conversations_translate_to_requests_anthropic_accepts(
    msgs: list[dict[str, Any]], with_tools: bool, choice: str | None, json_mode: bool
) -> None:
    body: dict[str, Any] = {
        "model": "claude",
        "messages": msgs,
        "temperature": 1.3,
        "stop": ["\n\n", " "],
        "seed": 1,
    }
    if with_tools:
        body["tools"] = [
            {"type": "function", "function": {"name": n}}
            for n in ("get_weather", "get_time", "lookup-user", "f")
        ]
        body["tool_choice"] = choice
    if json_mode:
        body["response_format"] = {"type": "json_object"}
    call = TRANSLATOR.request(
        ChatRequest(body, False, False), TranslatedModel(name="claude", slug="claude-x")
    )
    sent = orjson.loads(call.body)
    assert problems(sent) == [] and scripted_reply(sent)["content"]  # the fake answers it too


_BLOCKS = st.lists(
    st.one_of(
        st.text(min_size=1, max_size=30).map(text),
        st.tuples(_NAMES, _ARGS).map(lambda t: {"type": "tool_use", "name": t[0], "input": t[1]}),
        _ARGS.map(lambda a: {"type": "tool_use", "name": "json_answer", "input": a}),
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=150, deadline=None)
@given(_BLOCKS, st.sampled_from(["end_turn", "tool_use", "max_tokens"]), st.integers(1, 9), st.booleans())
def test_streamed_chunks_reassemble_to_the_non_streamed_answer(
    blocks: list[dict[str, Any]], stop: str, piece: int, include_usage: bool
) -> None:
    content = [{**b, "id": f"toolu_{i}"} if b["type"] == "tool_use" else b for i, b in enumerate(blocks)]
    msg = message(content, stop)
    whole = answer(msg)
    chunks = sdk_chunks(stream(stream_events(msg, piece), include_usage))
    final = reassemble(chunks).choices[0]
    want = whole.choices[0]
    assert final.finish_reason == want.finish_reason
    assert calls(final.message) == calls(want.message)
    if any(b["name"] == "json_answer" for b in content if b["type"] == "tool_use"):
        # The JSON output alone is the answer's content; a stream cannot take back the text it
        # already sent before the JSON began (docs/openai-compatibility.md).
        assert want.message.content is not None and (final.message.content or "").endswith(
            want.message.content
        )
    else:
        assert (final.message.content or None) == want.message.content
    if include_usage:
        assert chunks[-1].usage == whole.usage
