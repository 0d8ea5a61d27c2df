"""Precomputed provider answers for the fake upstream: realistic shapes, realistic usage fields.

Everything is built once at start-up, so serving a request costs a dictionary lookup and a
socket write. Shapes follow the providers' documented wire formats (the same shapes
tests/fakes/ checks against the official SDKs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

CREATED = 1_750_000_000
OPENAI_MODEL = "gpt-4.1-mini-2025-04-14"
ANTHROPIC_MODEL = "claude-sonnet-4-5-20250929"
PROMPT_TOKENS = 42
DEFAULT_EVENTS = 20  # content deltas per stream
EMBEDDING_DIMS = 256


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def _openai_usage(completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _words(n: int) -> list[str]:
    return [f" word{i}" for i in range(n)]


def openai_chat_json(tokens: int = DEFAULT_EVENTS) -> bytes:
    """A non-streamed chat completion."""
    return _dumps({
        "id": "chatcmpl-bench0001",
        "object": "chat.completion",
        "created": CREATED,
        "model": OPENAI_MODEL,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "".join(_words(tokens)), "refusal": None,
                        "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": _openai_usage(tokens),
        "service_tier": "default",
        "system_fingerprint": "fp_bench",
    })  # fmt: skip


def _chunk(choices: list[Any], usage: Any = None, with_usage: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "chatcmpl-bench0001",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": OPENAI_MODEL,
        "service_tier": "default",
        "system_fingerprint": "fp_bench",
        "choices": choices,
    }
    if with_usage:
        out["usage"] = usage
    return out


def openai_chat_events(tokens: int = DEFAULT_EVENTS) -> list[bytes]:
    """A streamed chat completion with ``stream_options.include_usage``: one SSE event per token."""
    events = [_sse(_chunk([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None},
                            "logprobs": None, "finish_reason": None}]))]  # fmt: skip
    for word in _words(tokens):
        events.append(_sse(_chunk([{"index": 0, "delta": {"content": word}, "logprobs": None,
                                    "finish_reason": None}])))  # fmt: skip
    events.append(_sse(_chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])))
    events.append(_sse(_chunk([], _openai_usage(tokens))))
    events.append(_sse("[DONE]"))
    return events


def _anthropic_message(content: list[Any], stop: str | None, output_tokens: int) -> dict[str, Any]:
    return {
        "id": "msg_bench0001", "type": "message", "role": "assistant", "model": ANTHROPIC_MODEL,
        "content": content, "stop_reason": stop, "stop_sequence": None,
        "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": output_tokens,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "service_tier": "standard"},
    }  # fmt: skip


def anthropic_json(tokens: int = DEFAULT_EVENTS) -> bytes:
    """A non-streamed Messages API answer."""
    return _dumps(_anthropic_message([{"type": "text", "text": "".join(_words(tokens))}], "end_turn", tokens))


def anthropic_events(tokens: int = DEFAULT_EVENTS) -> list[bytes]:
    """A streamed Messages API answer: message_start ... message_delta (usage), message_stop."""
    named: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"message": _anthropic_message([], None, 1)}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("ping", {}),
    ]
    for word in _words(tokens):
        named.append(("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": word}}))
    named.append(("content_block_stop", {"index": 0}))
    named.append(("message_delta", {
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": tokens,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    }))  # fmt: skip
    named.append(("message_stop", {}))
    return [_sse({"type": name, **data}, event=name) for name, data in named]


def embeddings_json(dims: int = EMBEDDING_DIMS) -> bytes:
    """An embeddings answer for one input (float vectors, as with encoding_format=float)."""
    vector = [round(((i * 7919) % 1000) / 1000 - 0.5, 6) for i in range(dims)]
    return _dumps(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": vector}],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 8, "total_tokens": 8},
        }
    )


@dataclass(frozen=True)
class Answer:
    """One precomputed answer: a whole body (JSON) or a list of SSE events."""

    body: bytes = b""
    events: tuple[bytes, ...] = ()

    @property
    def streams(self) -> bool:
        return bool(self.events)


def answers(tokens: int = DEFAULT_EVENTS) -> dict[tuple[str, bool], Answer]:
    """Every answer by (endpoint kind, streamed)."""
    return {
        ("chat", False): Answer(body=openai_chat_json(tokens)),
        ("chat", True): Answer(events=tuple(openai_chat_events(tokens))),
        ("messages", False): Answer(body=anthropic_json(tokens)),
        ("messages", True): Answer(events=tuple(anthropic_events(tokens))),
        ("embeddings", False): Answer(body=embeddings_json()),
    }
