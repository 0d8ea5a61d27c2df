"""The strict Gemini request validator rejects what Gemini rejects (so translator tests can fail)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tests.fakes.gemini_generate import Script, generate, problems, text
from tests.fakes.reply import Ask, JsonReply, StreamReply

GOOD: dict[str, Any] = {
    "systemInstruction": {"parts": [{"text": "Be brief."}]},
    "contents": [
        {"role": "user", "parts": [{"text": "Weather?"}, {"inlineData": {"mimeType": "image/png", "data": "iVBO"}}]},
        {"role": "model", "parts": [{"functionCall": {"name": "w", "args": {"city": "Oslo"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "w", "response": {"t": 1}}}]},
    ],
    "tools": [{"functionDeclarations": [{"name": "w", "parameters": {
        "type": "OBJECT", "properties": {"city": {"type": "STRING"}, "days": {"type": "ARRAY", "items": {
            "type": "INTEGER", "format": "int32"}}}, "required": ["city"]}}]}],
    "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["w"]}},
    "generationConfig": {"stopSequences": ["x"] * 5, "candidateCount": 2, "maxOutputTokens": 10,
                         "responseMimeType": "text/x.enum", "responseSchema": {"type": "STRING",
                                                                                    "format": "enum",
                                                                                    "enum": ["a"]}},
}

Mutation = Callable[[dict[str, Any]], None]


def _set(path: tuple[Any, ...], value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


BAD: dict[str, Mutation] = {
    "unknown top-level field": _set(("max_tokens",), 5),
    "snake_case field": _set(("generation_config",), {}),
    "unknown generation field": _set(("generationConfig", "max_tokens"), 5),
    "role assistant": _set(("contents", 0, "role"), "assistant"),
    "role system": _set(("contents", 0, "role"), "system"),
    "no contents": _set(("contents",), []),
    "empty parts": _set(("contents", 0, "parts"), []),
    "empty text": _set(("contents", 0, "parts", 0), {"text": ""}),
    "two data fields": _set(("contents", 0, "parts", 0), {"text": "a", "inlineData": {"mimeType": "a/b", "data": ""}}),
    "no data field": _set(("contents", 0, "parts", 0), {"thought": True}),
    "unknown part field": _set(("contents", 0, "parts", 0), {"image_url": "https://x"}),
    "inlineData not base64": _set(("contents", 0, "parts", 1, "inlineData", "data"), "not base64!"),
    "functionResponse without a call": _set(("contents", 1, "parts"), [{"text": "hi"}]),
    "functionResponse names another function": _set(("contents", 2, "parts", 0, "functionResponse", "name"), "v"),
    "functionResponse response not an object": _set(("contents", 2, "parts", 0, "functionResponse", "response"),
                                                     "sunny"),
    "unanswered functionCall": _set(("contents", 2, "parts"), [{"text": "next"}]),
    "two responses for one call": _set(("contents", 2, "parts"), [
        {"functionResponse": {"name": "w", "response": {}}}, {"functionResponse": {"name": "w", "response": {}}}]),
    "functionCall in a user turn": _set(("contents", 0, "parts", 0), {"functionCall": {"name": "w", "args": {}}}),
    "function call turn first": _set(("contents",), [{"role": "model", "parts": [
        {"functionCall": {"name": "w", "args": {}}}]}, {"role": "user", "parts": [
            {"functionResponse": {"name": "w", "response": {}}}]}]),
    "additionalProperties": _set(("tools", 0, "functionDeclarations", 0, "parameters", "additionalProperties"), False),
    "$schema": _set(("tools", 0, "functionDeclarations", 0, "parameters", "$schema"), "x"),
    "lowercase array without items": _set(("tools", 0, "functionDeclarations", 0, "parameters", "properties",
                                           "days"), {"type": "array"}),
    "empty properties": _set(("tools", 0, "functionDeclarations", 0, "parameters", "properties"), {}),
    "required not a property": _set(("tools", 0, "functionDeclarations", 0, "parameters", "required"), ["zip"]),
    "unsupported string format": _set(("tools", 0, "functionDeclarations", 0, "parameters", "properties", "city",
                                       "format"), "email"),
    "type list": _set(("tools", 0, "functionDeclarations", 0, "parameters", "type"), ["object", "null"]),
    "integer enum": _set(("generationConfig", "responseSchema"), {"type": "INTEGER", "enum": [1, 2]}),
    "bad function name": _set(("tools", 0, "functionDeclarations", 0, "name"), "get weather"),
    "allowed name not declared": _set(("toolConfig", "functionCallingConfig", "allowedFunctionNames"), ["v"]),
    "allowed names with AUTO": _set(("toolConfig", "functionCallingConfig", "mode"), "AUTO"),
    "six stop sequences": _set(("generationConfig", "stopSequences"), ["x"] * 6),
    "candidateCount 0": _set(("generationConfig", "candidateCount"), 0),
    "responseSchema without JSON": _set(("generationConfig", "responseMimeType"), "text/plain"),
    "tools with JSON output before Gemini 3": _set(("generationConfig", "responseMimeType"), "application/json"),
    "system image": _set(("systemInstruction", "parts"), [{"inlineData": {"mimeType": "image/png", "data": "iVBO"}}]),
}


def test_good_request_passes() -> None:
    assert problems(GOOD) == []


@pytest.mark.parametrize("case", sorted(BAD))
def test_validator_rejects(case: str) -> None:
    doc = copy.deepcopy(GOOD)
    BAD[case](doc)
    assert problems(doc), case


def _ask(payload: dict[str, Any], stream: bool) -> Ask:
    body = orjson.dumps(payload)
    return Ask(family="gemini", path="/v1beta/models/g:generateContent", query={"alt": "sse"} if stream else {},
               body=body, payload=payload, form=[], model="g", stream=stream, prompt_tokens=1, pieces=())


def test_generate_answers_400_for_a_bad_request_and_the_script_otherwise() -> None:
    script = Script((text("a", "b"),))
    bad = copy.deepcopy(GOOD)
    BAD["empty text"](bad)
    rejected = generate(_ask(bad, False), script)
    assert isinstance(rejected, JsonReply) and rejected.status == 400
    assert rejected.body["error"]["status"] == "INVALID_ARGUMENT" and "empty text" in rejected.body["error"]["message"]
    whole = generate(_ask(GOOD, False), script)
    assert isinstance(whole, JsonReply) and whole.status == 200
    assert whole.body["candidates"][0]["content"]["parts"] == [{"text": "a"}, {"text": "b"}]
    streamed = generate(_ask(GOOD, True), Script((text("a", "b"),), error_after=1))
    assert isinstance(streamed, StreamReply) and len(streamed.frames) == 2
    assert b'"UNAVAILABLE"' in streamed.frames[-1] and streamed.frames[0].endswith(b"\r\n\r\n")
    assert script.seen == [GOOD]
