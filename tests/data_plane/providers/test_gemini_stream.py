"""Gemini SSE -> OpenAI chat.completion.chunk: incremental, SDK-parseable, reassembling to the whole answer."""

from __future__ import annotations

import orjson
import pytest

from data_plane.providers.gemini_chat import TRANSLATOR
from tests.data_plane.providers.gemini_support import IDS, answer_of, reassemble, sse_data, stream_of
from tests.fakes.gemini_generate import Candidate, Script, call, chunks, text

SCRIPTS = {
    "text": Script((text("Hel", "lo", " world"),), prompt_tokens=5, candidates_tokens=3, cached_tokens=1),
    "one_call": Script((Candidate((call("get_weather", {"city": "Paris"}),)),)),
    "text_then_calls": Script((Candidate(({"text": "Checking."}, call("a", {"x": [1, {"y": None}]}),
                                          call("b", {}))),), thoughts_tokens=4),
    "candidates": Script((text("a", "b", "c"), Candidate((call("f", {"k": "v"}),)), text("x", finish="MAX_TOKENS"))),
    "safety": Script((text("so", finish="SAFETY"),)),
    "blocked": Script(block_reason="SAFETY", candidates_tokens=0),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_stream_reassembles_to_the_answer(name: str) -> None:
    script = SCRIPTS[name]
    whole = answer_of(script)
    choices, usage = reassemble(stream_of(script))
    assert choices == whole["choices"]
    assert usage == whole["usage"]


def test_text_arrives_as_it_comes() -> None:
    writer = TRANSLATOR.chunks(IDS, False)
    events = [b"data: " + orjson.dumps(c) for c in chunks(SCRIPTS["text"])]
    first = [orjson.loads(d) for d in sse_data(writer.feed(events[0]))]
    assert [c["choices"][0]["delta"] for c in first] == [{"role": "assistant", "content": "Hel"}]
    assert "usage" not in first[0]
    second = [orjson.loads(d) for d in sse_data(writer.feed(events[1]))]
    assert [c["choices"][0]["delta"] for c in second] == [{"content": "lo"}]
    last = [orjson.loads(d) for d in sse_data(writer.feed(events[2]))]
    assert last[0]["choices"][0]["finish_reason"] == "stop"
    assert sse_data(writer.close()) == [b"[DONE]"]


def test_usage_null_then_usage_chunk() -> None:
    payloads = stream_of(SCRIPTS["text"], include_usage=True)
    parsed = [orjson.loads(p) for p in payloads[:-1]]
    assert all(p["usage"] is None for p in parsed[:-1])
    assert parsed[-1]["choices"] == [] and parsed[-1]["usage"]["prompt_tokens"] == 5
    assert parsed[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 1}


def test_tool_calls_have_distinct_indexes_and_whole_arguments() -> None:
    payloads = stream_of(SCRIPTS["text_then_calls"], include_usage=False)
    calls = [tc for p in payloads[:-1] for c in orjson.loads(p)["choices"] for tc in c["delta"].get("tool_calls", ())]
    assert [tc["index"] for tc in calls] == [0, 1]
    assert [orjson.loads(tc["function"]["arguments"]) for tc in calls] == [{"x": [1, {"y": None}]}, {}]


def test_comments_and_blank_events_say_nothing() -> None:
    writer = TRANSLATOR.chunks(IDS, False)
    assert writer.feed(b": keep-alive") == b""
    assert writer.feed(b"") == b""


@pytest.mark.parametrize("event", [
    b'data: {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}',
    b"data: {not json",
])
def test_error_mid_stream_ends_without_done(event: bytes) -> None:
    writer = TRANSLATOR.chunks(IDS, True)
    assert writer.feed(b"data: " + orjson.dumps(chunks(SCRIPTS["text"])[0]))
    out = sse_data(writer.feed(event))
    assert len(out) == 1
    err = orjson.loads(out[0])["error"]
    assert err["type"] == "server_error" and set(err) == {"message", "type", "param", "code"}
    assert writer.feed(b"data: " + orjson.dumps(chunks(SCRIPTS["text"])[1])) == b""
    assert writer.close() == b""


def test_context_overflow_mid_stream() -> None:
    writer = TRANSLATOR.chunks(IDS, False)
    doc = {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                     "message": "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576)."}}
    err = orjson.loads(sse_data(writer.feed(b"data: " + orjson.dumps(doc)))[0])["error"]
    assert (err["code"], err["type"]) == ("context_length_exceeded", "invalid_request_error")


def test_stream_without_finish_reason_is_closed_with_stop() -> None:
    writer = TRANSLATOR.chunks(IDS, False)
    writer.feed(b'data: {"candidates": [{"content": {"role": "model", "parts": [{"text": "cut"}]}}]}')
    tail = [orjson.loads(d) for d in sse_data(writer.close())[:-1]]
    assert tail[-1]["choices"][0]["finish_reason"] == "stop"
