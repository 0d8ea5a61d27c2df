"""Anthropic Messages API bodies and its named-event SSE stream."""

from __future__ import annotations

from typing import Any

from tests.fakes.reply import Ask, JsonReply, StreamReply, sse


def _usage(ask: Ask, output_tokens: int) -> dict[str, Any]:
    return {"input_tokens": ask.prompt_tokens, "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "service_tier": "standard"}


def _message(ask: Ask, content: list[Any], stop: str | None, output_tokens: int) -> dict[str, Any]:
    return {"id": "msg_fake0001", "type": "message", "role": "assistant", "model": ask.model,
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": _usage(ask, output_tokens)}


def messages(ask: Ask) -> JsonReply | StreamReply:
    """POST /v1/messages; the stream is message_start ... message_delta(usage) message_stop."""
    if not ask.stream:
        return JsonReply(_message(ask, [{"type": "text", "text": ask.text}], "end_turn", ask.completion_tokens))
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"message": _message(ask, [], None, 1)}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("ping", {}),
    ]
    for piece in ask.pieces:
        events.append(("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}}))
    last = len(events) - 1
    events.append(("content_block_stop", {"index": 0}))
    events.append(("message_delta", {
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"input_tokens": ask.prompt_tokens, "output_tokens": ask.completion_tokens,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    }))
    events.append(("message_stop", {}))
    frames = [sse({"type": name, **data}, event=name) for name, data in events]
    return StreamReply(frames, last)
