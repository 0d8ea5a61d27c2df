"""OpenAI chat completions -> Anthropic Messages requests (issue 13), checked by a strict validator.

Every translated request must pass ``tests.fakes.anthropic_messages.problems`` (the real API's
rules); ``test_validator_*`` prove the validator refuses what Anthropic refuses.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from data_plane.providers import ANTHROPIC, TRANSLATORS
from data_plane.providers.anthropic_chat import TRANSLATOR
from data_plane.providers.anthropic_reply import JSON_TOOL
from data_plane.providers.translator import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    ChatRequest,
    TranslatedModel,
    TranslationError,
)
from tests.fakes.anthropic_messages import problems

MODEL = TranslatedModel(name="claude", slug="claude-sonnet-4-5")
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
WEATHER: dict[str, Any] = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}  # fmt: skip
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


def translate(
    body: dict[str, Any], *, stream: bool = False, model: TranslatedModel = MODEL
) -> dict[str, Any]:
    call = TRANSLATOR.request(ChatRequest(body=body, stream=stream, include_usage=False), model)
    assert call.path == "/v1/messages"
    assert call.stream is stream
    out: dict[str, Any] = orjson.loads(call.body)
    assert problems(out) == []
    return out


def refused(body: dict[str, Any]) -> TranslationError:
    with pytest.raises(TranslationError) as info:
        TRANSLATOR.request(ChatRequest(body=body, stream=False, include_usage=False), MODEL)
    return info.value


def user(text: str = "hello") -> dict[str, Any]:
    return {"role": "user", "content": text}


def call(i: int, name: str = "get_weather", arguments: str = '{"city": "Paris"}') -> dict[str, Any]:
    return {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": arguments}}


def test_registered_under_the_anthropic_family() -> None:
    assert TRANSLATORS[ANTHROPIC] is TRANSLATOR


def test_plain_chat_uses_the_slug_default_max_tokens_and_system() -> None:
    out = translate({"model": "claude", "messages": [{"role": "system", "content": "Be brief."}, user()]})
    assert out == {
        "model": "claude-sonnet-4-5",
        "max_tokens": DEFAULT_MAX_OUTPUT_TOKENS,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
    }


def test_several_system_and_developer_messages_become_text_blocks_in_order() -> None:
    body = {"messages": [{"role": "system", "content": "A"}, {"role": "developer", "content": [{"type": "text", "text": "B"}]},
                         user(), {"role": "system", "content": ""}]}  # fmt: skip
    assert translate(body)["system"] == [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]


def test_max_tokens_precedence_and_model_default() -> None:
    assert translate({"messages": [user()], "max_tokens": 50})["max_tokens"] == 50
    assert (
        translate({"messages": [user()], "max_tokens": 50, "max_completion_tokens": 70})["max_tokens"] == 70
    )
    own = TranslatedModel(name="c", slug="c", max_output_tokens=8192)
    assert translate({"messages": [user()]}, model=own)["max_tokens"] == 8192
    for bad in (0, -3, 1.5, "10", True):
        assert refused({"messages": [user()], "max_tokens": bad}).param == "max_tokens"


def test_temperature_is_clamped_to_anthropic_range_and_wins_over_top_p() -> None:
    assert translate({"messages": [user()], "temperature": 1.7})["temperature"] == 1.0
    assert translate({"messages": [user()], "temperature": 0.3})["temperature"] == 0.3
    both = translate({"messages": [user()], "temperature": 0.5, "top_p": 0.9})
    assert both["temperature"] == 0.5 and "top_p" not in both
    assert translate({"messages": [user()], "top_p": 0.9})["top_p"] == 0.9
    for name, bad in (("temperature", 2.5), ("temperature", -0.1), ("temperature", "hot"), ("top_p", 1.5)):
        assert refused({"messages": [user()], name: bad}).param == name


def test_stop_string_or_list_blank_ones_dropped() -> None:
    assert translate({"messages": [user()], "stop": "END"})["stop_sequences"] == ["END"]
    assert translate({"messages": [user()], "stop": ["a", " ", "", "b"]})["stop_sequences"] == ["a", "b"]
    assert "stop_sequences" not in translate({"messages": [user()], "stop": []})
    assert refused({"messages": [user()], "stop": [1]}).param == "stop"


def test_unsupported_and_unknown_fields_are_dropped() -> None:
    body = {"messages": [user()], "seed": 1, "logprobs": True, "top_logprobs": 2, "user": "u1",
            "presence_penalty": 0.5, "frequency_penalty": 0.5, "n": 3, "stream_options": {"include_usage": True},
            "metadata": {"a": "b"}, "logit_bias": {"1": 2}, "store": True, "whatever": {"x": 1},
            "response_format": {"type": "text"}}  # fmt: skip
    assert set(translate(body, stream=True)) == {"model", "max_tokens", "messages", "stream"}
    assert translate(body, stream=True)["stream"] is True


def test_images_data_url_and_https_url() -> None:
    parts = [{"type": "text", "text": "What is this?"},
             {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
             {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]  # fmt: skip
    blocks = translate({"messages": [{"role": "user", "content": parts}]})["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    assert blocks[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "http://example.com/cat.jpg"}},
        {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "data:image/png,AAAA"}},
        {"type": "image_url", "image_url": {}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ],
)
def test_unusable_content_parts_are_refused_naming_the_part(part: dict[str, Any]) -> None:
    err = refused({"messages": [user(), {"role": "assistant", "content": "ok"},
                                {"role": "user", "content": [{"type": "text", "text": "x"}, part]}]})  # fmt: skip
    assert err.param is not None and err.param.startswith("messages[2].content[1]")


@pytest.mark.parametrize("content", [None, "", "Let me look."])
def test_tool_calls_and_results_become_a_valid_second_turn(content: str | None) -> None:
    body = {"messages": [user("Weather and time in Paris?"),
                         {"role": "assistant", "content": content, "tool_calls": [call(1), call(2, "get_time", "")]},
                         {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                         {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
                         user("thanks")],
            "tools": [WEATHER, TIME]}  # fmt: skip
    out = translate(body)["messages"]
    assert [m["role"] for m in out] == ["user", "assistant", "user"]
    uses = [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}]  # fmt: skip
    assert out[1]["content"] == ([{"type": "text", "text": content}] if content else []) + uses
    assert out[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "noon"},
        {"type": "text", "text": "thanks"},
    ]


def test_third_turn_and_results_given_after_user_text_still_come_first() -> None:
    body = {"messages": [user("a"), {"role": "assistant", "tool_calls": [call(1)]}, user("also"),
                         {"role": "tool", "tool_call_id": "call_1", "content": ""},
                         {"role": "assistant", "content": "It is sunny."}, user("and now?"),
                         {"role": "assistant", "content": None, "tool_calls": [call(2)]},
                         {"role": "tool", "tool_call_id": "call_2", "content": "rain"}]}  # fmt: skip
    out = translate(body)["messages"]
    assert out[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1"},
        {"type": "text", "text": "also"},
    ]
    assert out[-1]["content"] == [{"type": "tool_result", "tool_use_id": "call_2", "content": "rain"}]


def test_odd_tool_call_ids_are_mapped_the_same_on_both_sides() -> None:
    body = {"messages": [user(), {"role": "assistant", "tool_calls": [{**call(1), "id": "call:1/x"}]},
                         {"role": "tool", "tool_call_id": "call:1/x", "content": "ok"}]}  # fmt: skip
    out = translate(body)["messages"]
    assert out[1]["content"][0]["id"] == out[2]["content"][0]["tool_use_id"] == "call_1_x"


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (
            [user(), {"role": "assistant", "tool_calls": [call(1, arguments="{oops")]}],
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            [user(), {"role": "assistant", "tool_calls": [call(1, arguments="[1]")]}],
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            [user(), {"role": "assistant", "tool_calls": [call(1, name="bad name")]}],
            "messages[1].tool_calls[0].function.name",
        ),
        (
            [user(), {"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {}}]}],
            "messages[1].tool_calls[0]",
        ),
        (
            [user(), {"role": "assistant", "tool_calls": [call(1)]}, {"role": "tool", "content": "x"}],
            "messages[2].tool_call_id",
        ),
        (
            [
                user(),
                {"role": "assistant", "tool_calls": [call(1)]},
                {"role": "tool", "tool_call_id": "call_9", "content": "x"},
            ],
            "messages[2].tool_call_id",
        ),
        ([user(), {"role": "tool", "tool_call_id": "call_1", "content": "x"}], "messages[1].tool_call_id"),
        (
            [
                user(),
                {"role": "assistant", "tool_calls": [call(1), call(2)]},
                {"role": "tool", "tool_call_id": "call_1", "content": "x"},
            ],
            "messages[1].tool_calls[1]",
        ),
        (
            [user(), {"role": "assistant", "tool_calls": [call(1)]}, {"role": "assistant", "content": "x"}],
            "messages[1].tool_calls[0]",
        ),
        ([user(), {"role": "assistant", "tool_calls": [call(1), call(1)]}], "messages[1].tool_calls[1].id"),
        ([{"content": "x"}], "messages[0].role"),
        ([user(), {"role": "robot", "content": "x"}], "messages[1].role"),
        ([user(), "hi"], "messages[1]"),
        ([{"role": "assistant", "content": "I start"}, user()], "messages[0].role"),
        ([{"role": "system", "content": "only system"}], "messages"),
        ([user(""), user("  ")], "messages"),
        ([{"role": "user", "content": 42}], "messages[0].content"),
        ([], "messages"),
    ],
)
def test_bad_conversations_are_refused_naming_the_param(messages: list[Any], param: str) -> None:
    assert refused({"messages": messages}).param == param


def test_messages_must_be_an_array() -> None:
    assert refused({"messages": "hi"}).param == "messages"
    assert refused({}).param == "messages"


def test_same_role_turns_merge_and_empty_text_is_never_sent() -> None:
    body = {"messages": [user("a"), user(""), {"role": "assistant", "content": ""}, user("b"),
                         {"role": "assistant", "content": [{"type": "text", "text": "c"}, {"type": "text", "text": ""}]},
                         {"role": "assistant", "content": "d"}, user("e")]}  # fmt: skip
    out = translate(body)["messages"]
    assert out == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}]},
        {"role": "user", "content": [{"type": "text", "text": "e"}]},
    ]


def test_a_final_assistant_prefill_loses_trailing_whitespace_only() -> None:
    out = translate({"messages": [user(), {"role": "assistant", "content": "The answer is "}]})["messages"]
    assert out[-1] == {"role": "assistant", "content": [{"type": "text", "text": "The answer is"}]}


def test_tools_become_input_schemas() -> None:
    out = translate(
        {"messages": [user()], "tools": [WEATHER, TIME, {"type": "function", "function": {"name": "ping"}}]}
    )
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather in a city",
            "input_schema": WEATHER["function"]["parameters"],
        },
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in out


@pytest.mark.parametrize(
    ("tool", "param"),
    [
        ({"type": "function", "function": {"name": "has space"}}, "tools[0].function.name"),
        ({"type": "function", "function": {"name": JSON_TOOL}}, "tools[0].function.name"),
        (
            {"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}},
            "tools[0].function.parameters",
        ),
        ({"type": "custom", "custom": {"name": "f"}}, "tools[0]"),
    ],
)
def test_bad_tools_are_refused(tool: dict[str, Any], param: str) -> None:
    assert refused({"messages": [user()], "tools": [tool]}).param == param


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "get_time"}}, None, {"type": "tool", "name": "get_time"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tool_choice_and_parallel_tool_calls(
    choice: object, parallel: bool | None, expected: dict[str, Any]
) -> None:
    body: dict[str, Any] = {"messages": [user()], "tools": [WEATHER, TIME]}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert translate(body).get("tool_choice", {"type": "auto"}) == expected


def test_tool_choice_errors_and_without_tools_it_is_dropped() -> None:
    assert "tool_choice" not in translate({"messages": [user()], "tool_choice": "required"})
    named = {"type": "function", "function": {"name": "nope"}}
    assert (
        refused({"messages": [user()], "tools": [WEATHER], "tool_choice": named}).param
        == "tool_choice.function.name"
    )
    assert refused({"messages": [user()], "tools": [WEATHER], "tool_choice": "always"}).param == "tool_choice"


def test_json_object_and_json_schema_force_the_json_tool() -> None:
    out = translate({"messages": [user()], "response_format": {"type": "json_object"}})
    assert out["tools"] == [
        {"name": JSON_TOOL, "description": "Answer with a JSON object.", "input_schema": {"type": "object"}}
    ]
    assert out["tool_choice"] == {"type": "tool", "name": JSON_TOOL}
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "count", "strict": True, "schema": schema}}
    out = translate({"messages": [user()], "response_format": fmt})
    assert out["tools"][0]["input_schema"] == schema and out["tool_choice"]["name"] == JSON_TOOL


def test_json_output_beside_client_tools_is_offered_not_forced() -> None:
    out = translate({"messages": [user()], "tools": [WEATHER], "response_format": {"type": "json_object"}})
    assert [t["name"] for t in out["tools"]] == ["get_weather", JSON_TOOL]
    assert "tool_choice" not in out  # auto
    off = translate(
        {
            "messages": [user()],
            "tools": [WEATHER],
            "tool_choice": "none",
            "response_format": {"type": "json_object"},
        }
    )
    assert [t["name"] for t in off["tools"]] == ["get_weather"]


@pytest.mark.parametrize(
    ("fmt", "param"),
    [
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array"}}},
            "response_format.json_schema.schema",
        ),
        ({"type": "xml"}, "response_format"),
        ("json", "response_format"),
    ],
)
def test_bad_response_formats_are_refused(fmt: object, param: str) -> None:
    assert refused({"messages": [user()], "response_format": fmt}).param == param


def test_tool_history_without_tools_defines_stub_tools_the_model_may_not_call() -> None:
    body = {"messages": [user(), {"role": "assistant", "tool_calls": [call(1)]},
                         {"role": "tool", "tool_call_id": "call_1", "content": "ok"}]}  # fmt: skip
    out = translate(body)
    assert out["tools"] == [{"name": "get_weather", "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "none"}
