"""OpenAI (and vLLM's OpenAI-compatible) response bodies and SSE streams."""

from __future__ import annotations

import base64
import struct
from typing import Any

from tests.fakes.multipart import field
from tests.fakes.reply import CREATED, Ask, JsonReply, StreamReply, sse

# 1x1 transparent PNG: the "generated image".
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def _usage(ask: Ask) -> dict[str, Any]:
    return {
        "prompt_tokens": ask.prompt_tokens,
        "completion_tokens": ask.completion_tokens,
        "total_tokens": ask.total_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _chunk(ask: Ask, choices: list[Any], usage: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "chatcmpl-fake0001",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": ask.model,
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
        "choices": choices,
    }
    if ask.include_usage:
        out["usage"] = usage
    return out


def chat(ask: Ask) -> JsonReply | StreamReply:
    """POST /v1/chat/completions."""
    if not ask.stream:
        return JsonReply({
            "id": "chatcmpl-fake0001",
            "object": "chat.completion",
            "created": CREATED,
            "model": ask.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": ask.text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }],
            "usage": _usage(ask),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        })
    frames = [sse(_chunk(ask, [{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None},
                                "logprobs": None, "finish_reason": None}]))]
    for piece in ask.pieces:
        frames.append(sse(_chunk(ask, [{"index": 0, "delta": {"content": piece}, "logprobs": None,
                                        "finish_reason": None}])))
    last = len(frames) - 1
    frames.append(sse(_chunk(ask, [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])))
    if ask.include_usage:
        frames.append(sse(_chunk(ask, [], _usage(ask))))
    frames.append(sse("[DONE]"))
    return StreamReply(frames, last)


def completions(ask: Ask) -> JsonReply | StreamReply:
    """POST /v1/completions (legacy text completions)."""
    usage = {"prompt_tokens": ask.prompt_tokens, "completion_tokens": ask.completion_tokens,
             "total_tokens": ask.total_tokens}

    def body(choices: list[Any], with_usage: Any = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": "cmpl-fake0001", "object": "text_completion", "created": CREATED,
                               "model": ask.model, "system_fingerprint": "fp_fake", "choices": choices}
        if not ask.stream or ask.include_usage:
            out["usage"] = with_usage
        return out

    if not ask.stream:
        return JsonReply(body([{"text": ask.text, "index": 0, "logprobs": None, "finish_reason": "stop"}], usage))
    frames = [sse(body([{"text": p, "index": 0, "logprobs": None, "finish_reason": None}]))
              for p in ask.pieces]
    last = len(frames) - 1
    frames.append(sse(body([{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}])))
    if ask.include_usage:
        frames.append(sse(body([], usage)))
    frames.append(sse("[DONE]"))
    return StreamReply(frames, last)


def _response(ask: Ask, status: str, text: str | None) -> dict[str, Any]:
    output: list[Any] = []
    if text is not None:
        output.append({"id": "msg_fake0001", "type": "message", "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
    done = status == "completed"
    return {
        "id": "resp_fake0001", "object": "response", "created_at": CREATED, "status": status,
        "background": False, "error": None, "incomplete_details": None, "instructions": None,
        "max_output_tokens": ask.payload.get("max_output_tokens"), "model": ask.model, "output": output,
        "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None}, "service_tier": "default", "store": True,
        "temperature": 1.0, "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled",
        "usage": {
            "input_tokens": ask.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": ask.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": ask.total_tokens,
        } if done else None,
        "user": None, "metadata": {},
    }


def responses(ask: Ask) -> JsonReply | StreamReply:
    """POST /v1/responses, streamed as typed events ending with response.completed (no [DONE])."""
    if not ask.stream:
        return JsonReply(_response(ask, "completed", ask.text))
    events: list[tuple[str, dict[str, Any]]] = []
    ref = {"item_id": "msg_fake0001", "output_index": 0, "content_index": 0}
    item = {"id": "msg_fake0001", "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    events.append(("response.created", {"response": _response(ask, "in_progress", None)}))
    events.append(("response.in_progress", {"response": _response(ask, "in_progress", None)}))
    events.append(("response.output_item.added", {"output_index": 0, "item": item}))
    events.append(("response.content_part.added", {
        **ref, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}))
    for piece in ask.pieces:
        events.append(("response.output_text.delta", {**ref, "delta": piece, "logprobs": []}))
    last = len(events) - 1
    part = {"type": "output_text", "text": ask.text, "annotations": [], "logprobs": []}
    events.append(("response.output_text.done", {**ref, "text": ask.text, "logprobs": []}))
    events.append(("response.content_part.done", {**ref, "part": part}))
    events.append(("response.output_item.done", {"output_index": 0, "item": {
        **item, "status": "completed", "content": [part]}}))
    events.append(("response.completed", {"response": _response(ask, "completed", ask.text)}))
    frames = [sse({"type": name, "sequence_number": i, **data}, event=name)
              for i, (name, data) in enumerate(events)]
    return StreamReply(frames, last)


def _inputs(value: Any) -> list[Any]:
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return value
    return [value]


def _vector(i: int, dims: int = 8) -> list[float]:
    return [round((i + 1) * 0.125 + d * 0.015625, 6) for d in range(dims)]


def embeddings(ask: Ask) -> JsonReply:
    """POST /v1/embeddings; honours ``encoding_format=base64`` (the openai SDK's default)."""
    data: list[Any] = []
    for i, _ in enumerate(_inputs(ask.payload.get("input"))):
        vec = _vector(i)
        emb: Any = vec
        if ask.payload.get("encoding_format") == "base64":
            emb = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")
        data.append({"object": "embedding", "index": i, "embedding": emb})
    usage = {"prompt_tokens": ask.prompt_tokens, "total_tokens": ask.prompt_tokens}
    body: dict[str, Any] = {"object": "list", "data": data, "model": ask.model, "usage": usage}
    if ask.family == "vllm":
        body = {"id": "embd-fake0001", "created": CREATED, **body,
                "usage": {**usage, "completion_tokens": 0, "prompt_tokens_details": None}}
    return JsonReply(body)


def images(ask: Ask) -> JsonReply:
    """POST /v1/images/generations|edits|variations (JSON or multipart)."""
    n_field = field(ask.form, "n")
    raw_n = n_field.data.decode() if n_field is not None else ask.payload.get("n", 1)
    n = int(raw_n) if str(raw_n).isdigit() else 1
    b64 = base64.b64encode(PNG).decode("ascii")
    return JsonReply({
        "created": CREATED,
        "data": [{"b64_json": b64, "revised_prompt": None} for _ in range(n)],
        "usage": {"total_tokens": ask.total_tokens, "input_tokens": ask.prompt_tokens,
                  "output_tokens": ask.completion_tokens,
                  "input_tokens_details": {"text_tokens": ask.prompt_tokens, "image_tokens": 0}},
    })


def models(ask: Ask) -> JsonReply:
    """GET /v1/models."""
    entry: dict[str, Any] = {"id": "fake-model", "object": "model", "created": CREATED, "owned_by": "openai"}
    if ask.family == "vllm":
        entry.update(owned_by="vllm", root="fake-model", parent=None, max_model_len=8192, permission=[])
    return JsonReply({"object": "list", "data": [entry]})
