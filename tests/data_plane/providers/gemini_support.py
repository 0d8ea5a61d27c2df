"""Helpers of the Gemini translator tests: translate through the strict fake, reassemble streams."""

from __future__ import annotations

from typing import Any

import orjson
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from data_plane.providers.gemini_chat import TRANSLATOR
from data_plane.providers.translator import ChatRequest, ReplyIds, TranslatedModel
from tests.fakes import gemini_generate

MODEL = TranslatedModel(name="gem", slug="models/gemini-2.5-flash")
IDS = ReplyIds(id="chatcmpl-test1", created=1_700_000_000, model="gem")


def translate(body: dict[str, Any], *, stream: bool = False, model: TranslatedModel = MODEL) -> dict[str, Any]:
    """The native body for an OpenAI body; it must pass the strict Gemini validator."""
    call = TRANSLATOR.request(ChatRequest(body=body, stream=stream, include_usage=False), model)
    native: dict[str, Any] = orjson.loads(call.body)
    assert gemini_generate.problems(native, model.slug) == [], native
    return native


def answer_of(script: gemini_generate.Script) -> dict[str, Any]:
    """The chat.completion for a scripted whole answer (checked against the OpenAI SDK's model)."""
    out = TRANSLATOR.answer(orjson.dumps(gemini_generate.whole(script)), IDS)
    ChatCompletion.model_validate(out)
    return out


def sse_data(raw: bytes) -> list[bytes]:
    """The ``data:`` payloads of the client-facing SSE bytes (each event must be one data line)."""
    assert raw.endswith(b"\n\n") or raw == b""
    return [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e]


def stream_of(script: gemini_generate.Script, include_usage: bool = True) -> list[bytes]:
    """The client-facing SSE data payloads of a scripted stream, fed event by event."""
    writer = TRANSLATOR.chunks(IDS, include_usage)
    out: list[bytes] = []
    for chunk in gemini_generate.chunks(script):
        event = b"data: " + orjson.dumps(chunk) + b"\r"  # Google ends lines with CRLF
        out.extend(sse_data(writer.feed(event)))
    out.extend(sse_data(writer.close()))
    return out


def reassemble(payloads: list[bytes]) -> tuple[list[dict[str, Any]], Any]:
    """OpenAI-SDK-parsed chunks -> (choices like a chat.completion's, the usage of the last chunk)."""
    assert payloads[-1] == b"[DONE]"
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    ids = set()
    for raw in payloads[:-1]:
        chunk = ChatCompletionChunk.model_validate(orjson.loads(raw))
        ids.add(chunk.id)
        usage = chunk.usage.model_dump(exclude_none=True) if chunk.usage else usage
        for c in chunk.choices:
            state = choices.setdefault(c.index, {"role": None, "content": None, "calls": {}, "finish": None})
            assert state["finish"] is None, "nothing after finish_reason"
            state["role"] = state["role"] or c.delta.role
            if c.delta.content is not None:
                state["content"] = (state["content"] or "") + c.delta.content
            for tc in c.delta.tool_calls or ():
                slot = state["calls"].setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                slot["id"] = slot["id"] or tc.id
                if tc.function is not None:
                    slot["name"] += tc.function.name or ""
                    slot["arguments"] += tc.function.arguments or ""
            state["finish"] = c.finish_reason or state["finish"]
    assert len(ids) == 1
    out = []
    for index in sorted(choices):
        state = choices[index]
        assert state["role"] == "assistant"
        message: dict[str, Any] = {"role": "assistant", "content": state["content"]}
        if state["calls"]:
            message["tool_calls"] = [
                {"id": s["id"], "type": "function", "function": {"name": s["name"], "arguments": s["arguments"]}}
                for _, s in sorted(state["calls"].items())]
        out.append({"index": index, "message": message, "logprobs": None, "finish_reason": state["finish"]})
    return out, usage
