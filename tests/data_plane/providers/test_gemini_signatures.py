"""Gemini 3 thought signatures survive an OpenAI round trip (in the tool call id), or get Google's sentinel."""

from __future__ import annotations

from typing import Any

import pytest

from data_plane.providers.gemini_chat import NO_SIGNATURE, checks_signatures
from data_plane.providers.translator import TranslatedModel
from tests.data_plane.providers.gemini_support import answer_of, reassemble, stream_of, translate
from tests.fakes.gemini_generate import Candidate, Script, call, problems

GEMINI_3 = TranslatedModel(name="gem", slug="models/gemini-3-pro-preview")
SIGNATURE = "CiQBcsjafX3mI0Jq+/rNv5rTm8Q0Yv1m2XgV7qTz=="
SCRIPT = Script((Candidate((call("a", {"x": 1}, SIGNATURE), call("b", {}))),))


def _history(tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    answers = [{"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in tool_calls]
    return {"messages": [{"role": "user", "content": "go"},
                         {"role": "assistant", "content": None, "tool_calls": tool_calls}, *answers]}


def test_signature_round_trips_through_the_tool_call_id() -> None:
    tool_calls = answer_of(SCRIPT)["choices"][0]["message"]["tool_calls"]
    assert tool_calls[0]["id"].endswith(".ts." + SIGNATURE) and ".ts." not in tool_calls[1]["id"]
    streamed, _ = reassemble(stream_of(SCRIPT))
    assert streamed[0]["message"]["tool_calls"] == tool_calls
    native = translate(_history(tool_calls), model=GEMINI_3)
    assert native["contents"][1]["parts"] == [
        {"functionCall": {"name": "a", "args": {"x": 1}}, "thoughtSignature": SIGNATURE},
        {"functionCall": {"name": "b", "args": {}}}]


def test_unsigned_calls_get_the_sentinel_on_gemini_3_only() -> None:
    calls = [{"id": "toolu_1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
             {"id": "call_00", "type": "function", "function": {"name": "b", "arguments": "{}"}}]
    native = translate(_history(calls), model=GEMINI_3)
    assert [p.get("thoughtSignature") for p in native["contents"][1]["parts"]] == [NO_SIGNATURE, None]
    older = translate(_history(calls))
    assert all("thoughtSignature" not in p for p in older["contents"][1]["parts"])
    # the validator holds a Gemini 3 model to the rule the sentinel satisfies
    native["contents"][1]["parts"][0].pop("thoughtSignature")
    assert problems(native, GEMINI_3.slug) and not problems(native, "gemini-2.5-flash")


def test_a_forged_signature_suffix_is_not_a_signature() -> None:
    calls = [{"id": "call_xyz.ts.AAAA", "type": "function", "function": {"name": "a", "arguments": "{}"}}]
    native = translate(_history(calls), model=GEMINI_3)
    assert native["contents"][1]["parts"][0]["thoughtSignature"] == NO_SIGNATURE


@pytest.mark.parametrize(("slug", "signs"), [
    ("gemini-3-pro-preview", True), ("models/gemini-3.1-flash", True), ("gemini-10-ultra", True),
    ("gemini-2.5-flash", False), ("gemini-1.5-pro", False), ("my-tuned-model", False), ("gemini-" + "9" * 5000, False),
])
def test_which_models_check_signatures(slug: str, signs: bool) -> None:
    assert checks_signatures(slug) is signs
