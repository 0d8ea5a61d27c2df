"""Audit of Gemini models through OpenAI's chat completions (issue 13): the SDK's ``parse`` round trip
with a Pydantic model whose JSON schema Gemini's ``Schema`` cannot take as is."""

from __future__ import annotations

import enum
from typing import Any, Literal

import openai
import pytest
from openai import AsyncOpenAI
from pydantic import BaseModel

from data_plane.providers.gemini_chat import generation_config, request_body
from data_plane.providers.gemini_schema import clean_schema
from data_plane.providers.translator import TranslatedModel
from tests.data_plane.translated.conftest import Org, script_gemini
from tests.fakes import gemini_generate
from tests.fakes.provider import FakeProvider
from tests.fakes.reply import JsonReply
from tests.support.dataplane import DataPlaneProcess


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Inner(BaseModel):
    x: int
    tags: list[str]


class Outer(BaseModel):
    name: str
    color: Color
    inner: Inner
    maybe: Inner | None = None
    items: list[Inner]
    kind: Literal["a", "b"]
    note: str | None
    counts: dict[str, int]  # additionalProperties: an OBJECT without properties


ANSWER = ('{"name": "n", "color": "red", "inner": {"x": 1, "tags": ["t"]}, "maybe": null, "items": [],'
          ' "kind": "a", "note": null, "counts": {"k": 2}}')


def test_free_form_object_is_left_untyped_for_gemini() -> None:
    cleaned = clean_schema({"type": "object", "properties": {
        "d": {"type": "object", "additionalProperties": {"type": "integer"}, "description": "map"},
        "e": {"type": "object", "properties": {}}}}, "p")  # fmt: skip
    assert cleaned["properties"] == {"d": {"description": "map"}, "e": {}}
    # A whole free-form response schema: plain JSON mode, no responseSchema Gemini would refuse.
    config = generation_config({"response_format": {"type": "json_schema", "json_schema": {
        "name": "any", "schema": {"type": "object", "additionalProperties": True}}}},
        TranslatedModel("g", "gemini-2.5-flash"))  # fmt: skip
    assert config == {"responseMimeType": "application/json"}
    body: Any = {"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                 "generationConfig": {"responseMimeType": "application/json", "responseSchema": cleaned}}
    assert gemini_generate.problems(body) == []


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_sdk_parse_pydantic_model_round_trip(dp: DataPlaneProcess, org: Org, fake: FakeProvider) -> None:
    oai = AsyncOpenAI(base_url=f"{dp.url}/v1", api_key=org.key, max_retries=0, timeout=15)
    script_gemini(fake, gemini_generate.Script(candidates=(gemini_generate.text(ANSWER[:30], ANSWER[30:]),)))
    messages: Any = [{"role": "user", "content": "fill it"}]
    parsed = await oai.chat.completions.parse(model="gem-x", messages=messages, response_format=Outer)
    out = parsed.choices[0].message.parsed
    assert out is not None and out.counts == {"k": 2} and out.color is Color.RED and out.inner.tags == ["t"]
    sent = fake.last().json()["generationConfig"]
    assert sent["responseMimeType"] == "application/json"
    assert sent["responseSchema"]["properties"]["maybe"]["nullable"] is True
    async with oai.chat.completions.stream(model="gem-x", messages=messages, response_format=Outer) as stream:
        final = await stream.get_final_completion()
    assert final.choices[0].message.parsed == out


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_rate_limit_retry_delay_becomes_retry_after(dp: DataPlaneProcess, org: Org, fake: FakeProvider) -> None:
    # Gemini's 429 has no Retry-After header: the delay is a RetryInfo detail of the body.
    quota: Any = {"error": {"code": 429, "message": "Quota exceeded for metric generate_content_requests.",
                            "status": "RESOURCE_EXHAUSTED", "details": [
                                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "11.2s"}]}}
    fake.builders["gemini"] = lambda ask: JsonReply(quota, status=429)
    oai = AsyncOpenAI(base_url=f"{dp.url}/v1", api_key=org.key, max_retries=0, timeout=15)
    with pytest.raises(openai.RateLimitError) as caught:
        await oai.chat.completions.create(model="gem-x", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.response.headers["retry-after"] == "12"
    assert caught.value.code == "rate_limit_exceeded"
    quota["error"]["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "soon"}]
    with pytest.raises(openai.RateLimitError) as caught:
        await oai.chat.completions.create(model="gem-x", messages=[{"role": "user", "content": "hi"}])
    assert "retry-after" not in caught.value.response.headers


MCP_TOOL: Any = {"type": "function", "function": {"name": "update_page", "strict": True, "parameters": {
    "type": "object", "additionalProperties": False, "$defs": {"Level": {"type": "integer", "enum": [1, 2]}},
    "properties": {
        "page": {"type": "string", "properties": {"id": {"type": "string"}}, "required": ["id"]},
        "tags": {"type": "string", "items": {"type": "string"}},
        "level": {"anyOf": [{"$ref": "#/$defs/Level"}, {"type": "null"}]},
        "data": {"description": "implicitly an object", "properties": {"x": {"type": "number"}}},
        "opts": {"type": "object", "properties": {}}},
    "required": ["page", "level"]}}}  # fmt: skip


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_tool_schema_keys_of_another_type_are_dropped(dp: DataPlaneProcess, org: Org, fake: FakeProvider) -> None:
    # properties / required on a string, items on a string: JSON Schema ignores them, Gemini refuses them.
    script_gemini(fake, gemini_generate.Script(candidates=(gemini_generate.text("ok"),)))
    oai = AsyncOpenAI(base_url=f"{dp.url}/v1", api_key=org.key, max_retries=0, timeout=15)
    answer = await oai.chat.completions.create(model="gem-x", messages=[{"role": "user", "content": "go"}],
                                               tools=[MCP_TOOL], tool_choice="required")  # fmt: skip
    assert answer.choices[0].message.content == "ok"
    params = fake.last().json()["tools"][0]["functionDeclarations"][0]["parameters"]
    assert params["properties"]["page"] == {"type": "STRING"} and params["properties"]["tags"] == {"type": "STRING"}
    assert params["properties"]["level"] == {"type": "INTEGER", "nullable": True}
    assert params["properties"]["data"]["type"] == "OBJECT" and params["required"] == ["page", "level"]


class Lookup(BaseModel):
    city: str
    days: int | None


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_sdk_strict_pydantic_tool_streamed_with_n(dp: DataPlaneProcess, org: Org, fake: FakeProvider) -> None:
    call = gemini_generate.call("Lookup", {"city": "Oslo", "days": None})
    two = (gemini_generate.Candidate((call,)), gemini_generate.text("no", " tool"))
    script_gemini(fake, gemini_generate.Script(candidates=two))
    oai = AsyncOpenAI(base_url=f"{dp.url}/v1", api_key=org.key, max_retries=0, timeout=15)
    async with oai.chat.completions.stream(model="gem-x", messages=[{"role": "user", "content": "go"}], n=2,
                                           tools=[openai.pydantic_function_tool(Lookup)]) as stream:  # fmt: skip
        final = await stream.get_final_completion()
    first, second = final.choices
    assert first.finish_reason == "tool_calls" and second.finish_reason == "stop"
    assert (first.message.tool_calls or [])[0].function.parsed_arguments == Lookup(city="Oslo", days=None)
    assert second.message.content == "no tool"
    sent = fake.last().json()
    assert sent["generationConfig"]["candidateCount"] == 2
    assert sent["tools"][0]["functionDeclarations"][0]["parameters"]["properties"]["days"]["nullable"] is True


@pytest.mark.parametrize(("slug", "json_mode"), [("gemini-2.5-flash", False), ("gemini-3-pro-preview", True)])
def test_tools_with_json_output_only_from_gemini_3(slug: str, json_mode: bool) -> None:
    body: Any = {"messages": [{"role": "user", "content": "go"}], "tools": [MCP_TOOL],
                 "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": {
                     "type": "object", "properties": {"a": {"type": "string"}}}}}}  # fmt: skip
    native = request_body(body, TranslatedModel("g", slug))
    assert ("responseSchema" in native.get("generationConfig", {})) is json_mode
    assert gemini_generate.problems(native, slug) == []
    without_tools = request_body({**body, "tools": None}, TranslatedModel("g", slug))
    assert without_tools["generationConfig"]["responseMimeType"] == "application/json"
