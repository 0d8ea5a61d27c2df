"""Any OpenAI chat body, however wrong, is translated or refused with a TranslationError (a 400 naming
the field), for both translators: never another exception, which the gateway would answer 500.

Found this way (issue 16 review): a message whose ``role`` was a list or an object crashed the
Anthropic translator (unhashable), and function arguments nested beyond orjson's 254 levels failed
the native request's serialisation.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_plane.providers import ANTHROPIC, GEMINI, TRANSLATORS
from data_plane.providers.translator import TranslatedModel, TranslationError
from data_plane.translated import parse_chat

MODEL = TranslatedModel(name="m", slug="s", max_output_tokens=100,
                        capabilities=frozenset({"tools", "json_output", "vision", "streaming"}))  # fmt: skip

JUNK: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6), st.sampled_from([[], {}, [1], {"a": 1}]),
)  # fmt: skip


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the right shape, sometimes anything."""
    return st.one_of(strategy, strategy, strategy, JUNK)


KEYS = st.sampled_from(["role", "content", "type", "text", "image_url", "url", "tool_calls", "id", "function",
                        "name", "arguments", "tool_call_id", "parameters", "json_schema", "schema", "properties",
                        "items", "anyOf", "$ref", "$defs", "input_audio", "file", "x"])  # fmt: skip
ANY_JSON: st.SearchStrategy[Any] = st.recursive(
    JUNK, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=5)), max_leaves=20
)
SCHEMA: st.SearchStrategy[Any] = st.recursive(
    st.fixed_dictionaries({}, optional={"type": maybe(st.sampled_from(["object", "string", "integer", "array"])),
                                        "enum": maybe(st.lists(st.text(max_size=3), max_size=3))}),
    lambda inner: st.fixed_dictionaries({"type": maybe(st.sampled_from(["object", "array"]))}, optional={
        "properties": maybe(st.dictionaries(st.text(max_size=4), inner, max_size=3)), "items": maybe(inner),
        "required": maybe(st.lists(st.text(max_size=4), max_size=2)), "anyOf": maybe(st.lists(inner, max_size=2)),
        "$ref": maybe(st.sampled_from(["#/$defs/a", "#", "http://x"])),
        "$defs": maybe(st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2))}),
    max_leaves=8,
)  # fmt: skip
PART = st.fixed_dictionaries({"type": maybe(st.sampled_from(["text", "image_url", "input_audio", "file", "refusal"]))}, optional={
    "text": maybe(st.text(max_size=5)),
    "image_url": maybe(st.fixed_dictionaries({"url": maybe(st.sampled_from(
        ["data:image/png;base64,iVBORw0KGgo=", "https://x/y.png", "data:;base64,", "data:image/png,abc", "ftp://x"]))})),
    "input_audio": maybe(st.fixed_dictionaries({"data": maybe(st.just("UklGRg==")),
                                                "format": maybe(st.sampled_from(["wav", "mp3", "flac"]))})),
    "file": maybe(st.fixed_dictionaries({}, optional={"file_data": maybe(st.sampled_from(["data:application/pdf;base64,JVBERi0=", "x"])),
                                                      "file_id": maybe(st.text(max_size=4))})),
})  # fmt: skip
DEEP_ARGUMENTS = '{"a":' + "[" * 300 + "]" * 300 + "}"
CALL = st.fixed_dictionaries({"id": maybe(st.sampled_from(["c1", "c2"])), "type": maybe(st.just("function")),
    "function": maybe(st.fixed_dictionaries({"name": maybe(st.sampled_from(["f", "g", "bad name"])),
                                             "arguments": maybe(st.sampled_from(["{}", '{"a":1}', "[]", "", "x", DEEP_ARGUMENTS]))}))})  # fmt: skip
MESSAGE = st.fixed_dictionaries({"role": maybe(st.sampled_from(["user", "assistant", "system", "developer", "tool"]))}, optional={
    "content": maybe(st.one_of(st.text(max_size=6), st.lists(maybe(PART), max_size=3))),
    "tool_calls": maybe(st.lists(maybe(CALL), max_size=2)), "tool_call_id": maybe(st.sampled_from(["c1", "c2", "zz"])),
})  # fmt: skip
TOOL = st.fixed_dictionaries({"type": maybe(st.just("function")), "function": maybe(st.fixed_dictionaries(
    {"name": maybe(st.sampled_from(["f", "g", "json_answer"]))}, optional={"parameters": maybe(SCHEMA), "strict": JUNK}))})  # fmt: skip
BODY = st.fixed_dictionaries({"model": st.just("m"), "messages": maybe(st.lists(maybe(MESSAGE), max_size=5))}, optional={
    "tools": maybe(st.lists(maybe(TOOL), max_size=3)),
    "tool_choice": maybe(st.one_of(st.sampled_from(["auto", "none", "required"]), st.fixed_dictionaries(
        {"type": maybe(st.just("function")), "function": maybe(st.fixed_dictionaries({"name": maybe(st.sampled_from(["f", "h"]))}))}))),
    "response_format": maybe(st.fixed_dictionaries({"type": maybe(st.sampled_from(["text", "json_object", "json_schema"]))},
        optional={"json_schema": maybe(st.fixed_dictionaries({"name": maybe(st.text(max_size=3))}, optional={"schema": maybe(SCHEMA)}))})),
    "stop": maybe(st.one_of(st.text(max_size=3), st.lists(st.text(max_size=3), max_size=6))),
    "temperature": JUNK, "top_p": JUNK, "max_tokens": JUNK, "max_completion_tokens": JUNK, "n": JUNK,
    "stream": maybe(st.booleans()), "stream_options": maybe(st.fixed_dictionaries({"include_usage": maybe(st.booleans())})),
    "parallel_tool_calls": JUNK, "seed": JUNK, "user": JUNK, "metadata": ANY_JSON,
    "reasoning_effort": maybe(st.sampled_from(["low", "medium", "high", "minimal"])), "modalities": JUNK, "audio": JUNK,
})  # fmt: skip
# Anything at all where a message's members go (what found the unhashable role).
LOOSE_BODY = st.fixed_dictionaries({"model": st.just("m"), "messages": st.lists(st.dictionaries(KEYS, ANY_JSON, max_size=5), max_size=4)},
                                   optional={k: ANY_JSON for k in ("tools", "tool_choice", "response_format", "stop", "max_tokens")})  # fmt: skip


def translate(body: Any, family: int) -> None:
    try:
        TRANSLATORS[family].request(parse_chat(json.dumps(body).encode()), MODEL)
    except TranslationError:
        pass


@pytest.mark.parametrize("family", [ANTHROPIC, GEMINI])
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=BODY)
def test_a_wrong_body_is_a_translation_error(family: int, body: Any) -> None:
    translate(body, family)


@pytest.mark.parametrize("family", [ANTHROPIC, GEMINI])
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=LOOSE_BODY)
def test_anything_where_messages_go_is_a_translation_error(family: int, body: Any) -> None:
    translate(body, family)


@pytest.mark.parametrize("role", [["user"], {"user": 1}, 7, True])
def test_a_role_that_is_not_a_string_is_named(role: Any) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": role, "content": "hi"}]}).encode()
    with pytest.raises(TranslationError) as caught:
        TRANSLATORS[ANTHROPIC].request(parse_chat(body), MODEL)
    assert caught.value.param == "messages[0].role"
