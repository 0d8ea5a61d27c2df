"""OpenAI chat completions <-> Gemini generateContent: requests (through the strict fake), answers, errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from data_plane.providers import GEMINI, TRANSLATORS
from data_plane.providers.gemini_chat import TRANSLATOR
from data_plane.providers.gemini_schema import clean_schema
from data_plane.providers.translator import ChatRequest, TranslatedModel, TranslationError
from tests.data_plane.providers.gemini_support import MODEL, answer_of, translate
from tests.fakes.gemini_generate import Candidate, Script, call, text

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"], "additionalProperties": False}}}


def _call(call_id: str, name: str, args: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def test_listed_in_translators() -> None:
    assert TRANSLATORS[GEMINI] is TRANSLATOR


@pytest.mark.parametrize(("slug", "stream", "path"), [
    ("models/gemini-2.5-flash", False, "/v1beta/models/gemini-2.5-flash:generateContent"),
    ("gemini-2.5-pro", True, "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"),
    ("tuned/../x y", False, "/v1beta/models/tuned%2F..%2Fx%20y:generateContent"),
])
def test_path(slug: str, stream: bool, path: str) -> None:
    req = ChatRequest(body={"messages": [{"role": "user", "content": "hi"}]}, stream=stream, include_usage=False)
    upstream = TRANSLATOR.request(req, TranslatedModel(name="g", slug=slug))
    assert (upstream.path, upstream.stream) == (path, stream)


def test_roles_system_and_merging() -> None:
    native = translate({"model": "gem", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
        {"role": "user", "content": "Hi"},
        {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]})
    assert native["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Use metric."}]}
    assert native["contents"] == [
        {"role": "user", "parts": [{"text": "Hi"}, {"text": "there"}]},
        {"role": "model", "parts": [{"text": "Hello"}]},
        {"role": "user", "parts": [{"text": "Bye"}]},
    ]
    assert "generationConfig" not in native


def test_images_audio_and_files() -> None:
    native = translate({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?size=2"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/photo"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
    ]}]})
    assert native["contents"][0]["parts"][1:] == [
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?size=2"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]


def test_tool_turns_second_and_third() -> None:
    native = translate({"messages": [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            _call("c1", "get_weather", '{"city":"Paris"}'), _call("c2", "get_weather", '{"city": "Oslo"}')]},
        {"role": "tool", "tool_call_id": "c2", "content": '{"temp": -3}'},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "sunny, 21"}]},
        {"role": "assistant", "content": "Let me check the time.", "tool_calls": [_call("c3", "clock", "")]},
        {"role": "tool", "tool_call_id": "c3", "content": "[1, 2]"},
        {"role": "user", "content": "Thanks"},
    ], "tools": [WEATHER, {"type": "function", "function": {"name": "clock"}}]})
    assert native["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris and Oslo?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                                    {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp": -3}}},
            {"functionResponse": {"name": "get_weather", "response": {"content": "sunny, 21"}}}]},
        {"role": "model", "parts": [{"text": "Let me check the time."}, {"functionCall": {"name": "clock", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "clock", "response": {"content": "[1, 2]"}}},
                                   {"text": "Thanks"}]},
    ]
    assert native["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather of a city",
         "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}},
        {"name": "clock"}]}]


@pytest.mark.parametrize(("choice", "config"), [
    ("auto", {"mode": "AUTO"}),
    ("none", {"mode": "NONE"}),
    ("required", {"mode": "ANY"}),
    ({"type": "function", "function": {"name": "get_weather"}}, {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
])
def test_tool_choice(choice: Any, config: dict[str, Any]) -> None:
    native = translate({"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER], "tool_choice": choice,
                        "parallel_tool_calls": False})
    assert native["toolConfig"] == {"functionCallingConfig": config}


def test_parameters_and_dropped_fields() -> None:
    native = translate({"messages": [{"role": "user", "content": "x"}], "temperature": 0.2, "top_p": 0.9,
                        "max_tokens": 50, "max_completion_tokens": 70, "stop": ["a", "b"], "n": 3,
                        "seed": 7, "logprobs": True, "top_logprobs": 2, "user": "u1", "presence_penalty": 0.5,
                        "frequency_penalty": 0.5, "stream_options": {"include_usage": True}, "metadata": {"a": "b"},
                        "store": True, "reasoning_effort": "low", "some_future_field": {"x": 1}})
    assert set(native) == {"contents", "generationConfig"}
    assert native["generationConfig"] == {"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 70,
                                          "stopSequences": ["a", "b"], "candidateCount": 3}


def test_output_cap_defaults() -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "stop": "END", "n": 1}
    assert translate(body)["generationConfig"] == {"stopSequences": ["END"]}
    capped = translate(body, model=TranslatedModel(name="g", slug="gemini-x", max_output_tokens=99))
    assert capped["generationConfig"] == {"stopSequences": ["END"], "maxOutputTokens": 99}
    assert translate({**body, "max_tokens": 5})["generationConfig"]["maxOutputTokens"] == 5


def test_response_formats() -> None:
    base = {"messages": [{"role": "user", "content": "x"}]}
    assert "generationConfig" not in translate({**base, "response_format": {"type": "text"}})
    assert translate({**base, "response_format": {"type": "json_object"}})["generationConfig"] == {
        "responseMimeType": "application/json"}
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "strict": True,
              "additionalProperties": False, "$defs": {"Tag": {"type": "string", "enum": ["a", "b"]}},
              "properties": {"name": {"type": ["string", "null"], "format": "email", "minLength": 1},
                             "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}},
                             "kind": {"const": "person"},
                             "age": {"anyOf": [{"type": "integer", "format": "int32"}, {"type": "null"}]},
                             "score": {"oneOf": [{"type": "number"}, {"type": "string"}]},
                             "level": {"type": "integer", "enum": [1, 2]},
                             "meta": {"type": "object", "additionalProperties": True}},
              "required": ["name", "tags", "missing"]}
    config = translate({**base, "response_format": {"type": "json_schema", "json_schema": {
        "name": "person", "strict": True, "schema": schema}}})["generationConfig"]
    assert config == {"responseMimeType": "application/json", "responseSchema": {
        "type": "OBJECT", "required": ["name", "tags"], "properties": {
            "name": {"type": "STRING", "nullable": True, "minLength": 1},
            "tags": {"type": "ARRAY", "items": {"type": "STRING", "format": "enum", "enum": ["a", "b"]}},
            "kind": {"type": "STRING", "format": "enum", "enum": ["person"]},
            "age": {"type": "INTEGER", "format": "int32", "nullable": True},
            "score": {"anyOf": [{"type": "NUMBER"}, {"type": "STRING"}]},
            "level": {"type": "INTEGER"},
            "meta": {}}}}  # Gemini refuses an OBJECT without properties: left untyped


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "system", "content": "only"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "wizard", "content": "x"}]}, "messages[1].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "video", "video": "x"}]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"messages": [{"role": "assistant", "tool_calls": [_call("a", "f", "{not json")]}]},
     "messages[0].tool_calls[0].function.arguments"),
    ({"messages": [{"role": "assistant", "tool_calls": [_call("a", "f", "[1]")]}]},
     "messages[0].tool_calls[0].function.arguments"),
    ({"messages": [{"role": "assistant", "tool_calls": [_call("a", "f", "{}")]}, {"role": "user", "content": "x"}]},
     "messages[1].role"),
    ({"messages": [{"role": "assistant", "tool_calls": [_call("a", "f", "{}")]}]}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": ["1", "2", "3", "4", "5", "6"]}, "stop"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": 5}, "stop"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": True}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "custom", "custom": {}}]}, "tools[0].type"),
    ({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}, "tool_choice"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER],
      "tool_choice": {"type": "function", "function": {"name": "other"}}}, "tool_choice"),
    ({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}}, "response_format.type"),
    ({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {
        "schema": {"$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}},
                   "$ref": "#/$defs/N"}}}}, "response_format.json_schema.schema"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"allOf": [{"type": "object"}, {"type": "object"}]}}}]},
     "tools[0].function.parameters"),
])
def test_bad_requests_name_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as caught:
        TRANSLATOR.request(ChatRequest(body=body, stream=False, include_usage=False), MODEL)
    assert caught.value.param == param


# --- answers -------------------------------------------------------------------------------


def test_answer_text_and_usage() -> None:
    out = answer_of(Script((text("Hel", "lo"),), prompt_tokens=9, candidates_tokens=4, thoughts_tokens=3,
                           cached_tokens=2))
    assert out["id"] == "chatcmpl-test1" and out["object"] == "chat.completion" and out["model"] == "gem"
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "logprobs": None,
                               "finish_reason": "stop"}]
    assert out["usage"] == {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16,
                            "prompt_tokens_details": {"cached_tokens": 2},
                            "completion_tokens_details": {"reasoning_tokens": 3}}


def test_answer_tool_calls_and_candidates() -> None:
    calls = Candidate((call("get_weather", {"city": "Paris"}), call("get_weather", {"city": "Oslo"})))
    out = answer_of(Script((calls, text("Sure", finish="MAX_TOKENS"), text("no", finish="SAFETY"))))
    first = out["choices"][0]
    assert first["finish_reason"] == "tool_calls" and first["message"]["content"] is None
    tool_calls = first["message"]["tool_calls"]
    assert [orjson.loads(c["function"]["arguments"]) for c in tool_calls] == [{"city": "Paris"}, {"city": "Oslo"}]
    assert {c["type"] for c in tool_calls} == {"function"} and len({c["id"] for c in tool_calls}) == 2
    assert all(c["id"].startswith("call_") for c in tool_calls)
    assert [(c["index"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "tool_calls"), (1, "length"), (2, "content_filter")]


def test_answer_thoughts_are_not_content() -> None:
    cand = Candidate(({"text": "thinking...", "thought": True}, {"text": "42"}))
    assert answer_of(Script((cand,)))["choices"][0]["message"]["content"] == "42"


@pytest.mark.parametrize("reason", ["SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "OTHER"])
def test_answer_blocked_prompt(reason: str) -> None:
    out = answer_of(Script(block_reason=reason, candidates_tokens=0))
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": None}, "logprobs": None,
                               "finish_reason": "content_filter"}]


# --- errors --------------------------------------------------------------------------------


def _gemini_error(code: int, status: str, message: str, reason: str = "") -> bytes:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if reason:
        err["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}]
    return orjson.dumps({"error": err})


@pytest.mark.parametrize(("status", "body", "expected"), [
    (400, _gemini_error(400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum number of "
                                                 "tokens allowed (1048576)."),
     (400, "invalid_request_error", "context_length_exceeded")),
    (400, _gemini_error(400, "INVALID_ARGUMENT", "Invalid value at 'contents[0]'"), (400, "invalid_request_error", None)),
    (404, _gemini_error(404, "NOT_FOUND", "models/x is not found for API version v1beta"),
     (404, "invalid_request_error", "model_not_found")),
    (429, _gemini_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded"), (429, "rate_limit_error", "rate_limit_exceeded")),
    (500, _gemini_error(500, "INTERNAL", "oops"), (500, "server_error", "server_error")),
    (503, _gemini_error(503, "UNAVAILABLE", "The model is overloaded."), (503, "server_error", "server_error")),
    (529, b"<html>busy</html>", (502, "server_error", "server_error")),
    (502, b"", (502, "server_error", "server_error")),
    (413, b"not json", (413, "invalid_request_error", None)),
])
def test_errors(status: int, body: bytes, expected: tuple[int, str, str | None]) -> None:
    err = TRANSLATOR.error(status, body)
    assert (err.status, err.type, err.code) == expected
    assert err.message and len(err.message) <= 512
    assert set(err.body()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(("status", "body", "expected"), [
    (400, _gemini_error(400, "INVALID_ARGUMENT", "API key not valid: AIzaSyA1234567890abcdefghijklmnopqrstu",
                        "API_KEY_INVALID"), 401),
    (401, _gemini_error(401, "UNAUTHENTICATED", "key=AIzaSyA1234567890abcdefghijklmnopqrstu rejected"), 401),
    (403, _gemini_error(403, "PERMISSION_DENIED", "key sk-secret-value has no access"), 403),
])
def test_auth_errors_use_the_gateway_wording(status: int, body: bytes, expected: int) -> None:
    err = TRANSLATOR.error(status, body)
    assert err.status == expected
    assert "AIza" not in err.message and "secret" not in err.message and "gateway" in err.message


def test_error_messages_bounded_and_keys_masked() -> None:
    err = TRANSLATOR.error(400, _gemini_error(400, "INVALID_ARGUMENT", "x" * 5000 + " AIzaSyA1234567890abcdefghijkl"))
    assert len(err.message) == 512 and err.message.endswith("...")
    err = TRANSLATOR.error(400, _gemini_error(400, "INVALID_ARGUMENT", "bad AIzaSyA1234567890abcdefghijklmnop"))
    assert "AIza" not in err.message and "[redacted]" in err.message


def test_string_enum_on_a_formatted_type_becomes_a_string_enum() -> None:
    # found by the schema property test: the integer's format stayed on the STRING enum
    assert clean_schema({"type": "integer", "format": "int32", "enum": ["a"]}, "p") == {
        "type": "STRING", "format": "enum", "enum": ["a"]}
