"""The strict Anthropic Messages fake refuses what the real API refuses (so its approval means something)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from tests.fakes.anthropic_messages import problems, scripted_reply, stream_events

VALID: dict[str, Any] = {
    "model": "claude-x",
    "max_tokens": 100,
    "system": "s",
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
    ],
    "tools": [{"name": "f", "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "auto"},
}


def _set(path: str, value: object) -> dict[str, Any]:
    body = copy.deepcopy(VALID)
    *head, last = path.split(".")
    target: Any = body
    for key in head:
        target = target[int(key)] if key.isdigit() else target[key]
    if value is _DELETE:
        del target[int(last) if last.isdigit() else last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return body


_DELETE = object()


def test_validator_accepts_the_valid_body() -> None:
    assert problems(VALID) == []


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        ("frequency_penalty", 0.5, "Extra inputs"),
        ("max_tokens", _DELETE, "max_tokens"),
        ("temperature", 1.5, "temperature"),
        ("messages.0.role", "system", "role"),
        ("messages.0.content.0.text", "", "non-whitespace"),
        ("messages.0.content.0.text", "  ", "non-whitespace"),
        ("messages.0.content.0.extra", 1, "unexpected keys"),
        ("messages.0.name", "bob", "exactly role and content"),
        ("messages.1.content.0.name", "bad name", "name"),
        ("messages.1.content.0.id", "call:1", "id"),
        ("messages.2.content.0.tool_use_id", "t2", "no tool_use"),
        ("messages.2.content", [{"type": "text", "text": "no result"}], "need exactly one tool_result"),
        (
            "messages.2.content",
            [{"type": "text", "text": "x"}, {"type": "tool_result", "tool_use_id": "t1"}],
            "first",
        ),
        ("messages.2.role", "assistant", "alternate"),
        ("messages.0", {"role": "assistant", "content": "x"}, "first message"),
        ("messages.2", {"role": "assistant", "content": "done "}, "trailing whitespace"),
        (
            "messages.0.content",
            [{"type": "image", "source": {"type": "url", "url": "http://x/a.png"}}],
            "https",
        ),
        (
            "messages.0.content",
            [{"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "A"}}],
            "base64",
        ),
        ("messages.0.content", [], "non-empty"),
        ("tools.0.name", "has space", "tools.0.name"),
        ("tools.0.input_schema", {"type": "array"}, "input_schema"),
        ("tool_choice", {"type": "required"}, "tool_choice"),
        ("tool_choice", {"type": "tool", "name": "g"}, "tool_choice.name"),
        ("stop_sequences", [" "], "stop_sequences"),
        ("system", [{"type": "text", "text": ""}], "system.0"),
    ],
)
def test_validator_rejects_what_anthropic_rejects(path: str, value: object, says: str) -> None:
    found = problems(_set(path, value))
    assert found and any(says in p for p in found), found


def test_validator_rejects_tool_choice_without_tools_and_unanswered_final_tool_use() -> None:
    assert problems(_set("tools", _DELETE))
    body = copy.deepcopy(VALID)
    body["messages"].pop()
    assert any("no tool_result" in p for p in problems(body))


TOOLS = [{"name": "f", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}},
         {"name": "g", "input_schema": {"type": "object"}}]  # fmt: skip
ASK = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_scripted_replies_are_real_messages_and_their_streams_real_events() -> None:
    json_tool = {
        "name": "json_answer",
        "input_schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
    }
    cases = [
        ({"model": "m", "max_tokens": 9, "messages": ASK}, ["text"], "end_turn"),
        ({"model": "m", "max_tokens": 9, "messages": ASK, "tools": TOOLS}, ["text", "tool_use", "tool_use"], "tool_use"),
        ({"model": "m", "max_tokens": 9, "messages": ASK, "tools": TOOLS,
          "tool_choice": {"type": "any", "disable_parallel_tool_use": True}}, ["tool_use"], "tool_use"),
        ({"model": "m", "max_tokens": 9, "messages": ASK, "tools": [json_tool],
          "tool_choice": {"type": "tool", "name": "json_answer"}}, ["tool_use"], "tool_use"),
        ({"model": "m", "max_tokens": 9, "messages": ASK, "tools": TOOLS, "tool_choice": {"type": "none"}}, ["text"], "end_turn"),
    ]  # fmt: skip
    events = TypeAdapter(RawMessageStreamEvent)
    for body, kinds, stop in cases:
        assert problems(body) == []
        reply = scripted_reply(body, cache_read=2)
        message = Message.model_validate(reply)
        assert [b.type for b in message.content] == kinds and message.stop_reason == stop
        for name, data in stream_events(reply):
            if name != "ping":
                events.validate_python({"type": name, **data})
    answered = scripted_reply({"model": "m", "max_tokens": 9, "tools": TOOLS, "messages": [
        *ASK, {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"}]}]})  # fmt: skip
    assert answered["stop_reason"] == "end_turn"
    assert scripted_reply(cases[3][0])["content"][0]["input"] == {"n": 7}
