"""The request bodies and headers each scenario sends, per target (direct, floor, gateway).

Direct and floor requests carry a provider-style key so that every target sees headers of
about the same size; the gateway's carry the virtual key and name the gateway's model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from scripts.benchmark.provision import CHAT_MODEL, CLAUDE_MODEL, CLAUDE_OPENAI_MODEL, ROUTED_MODEL

UPSTREAM_CHAT_MODEL = "gpt-4.1-mini"
UPSTREAM_CLAUDE_MODEL = "claude-sonnet-4-5"
_SYSTEM = "You are a concise assistant. Answer in one short paragraph and cite no sources."
_USER = "Summarise the trade-offs between latency and throughput in an API gateway in three sentences."


@dataclass(frozen=True)
class Call:
    """One request: path, body and headers (Content-Type is added by the senders)."""

    path: str
    body: bytes
    headers: dict[str, str]


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def chat_body(model: str, *, stream: bool = False, pad_to: int = 0) -> bytes:
    """An OpenAI chat request; ``pad_to`` grows the user message until the body has that many bytes."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": _USER}],
        "temperature": 0.2,
        "max_tokens": 256,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    raw = _dumps(body)
    if pad_to > len(raw):
        filler = "lorem ipsum " * ((pad_to - len(raw)) // 12)
        filler += "." * (pad_to - len(raw) - len(filler) - 1)  # exactly pad_to bytes (ASCII)
        body["messages"][1]["content"] = _USER + " " + filler
        raw = _dumps(body)
    return raw


def messages_body(model: str, *, stream: bool = True) -> bytes:
    """An Anthropic Messages request."""
    body: dict[str, Any] = {"model": model, "max_tokens": 256, "system": _SYSTEM,
                            "messages": [{"role": "user", "content": _USER}]}  # fmt: skip
    if stream:
        body["stream"] = True
    return _dumps(body)


def chat_call(
    target: str, key: str, *, stream: bool = False, pad_to: int = 0, extra: dict[str, str] | None = None
) -> Call:
    """POST /v1/chat/completions for ``target``."""
    model = CHAT_MODEL if target.startswith("gateway") else UPSTREAM_CHAT_MODEL
    secret = key if target.startswith("gateway") else "sk-bench-openai-0123456789"
    headers = {"Authorization": f"Bearer {secret}", **(extra or {})}
    return Call("/v1/chat/completions", chat_body(model, stream=stream, pad_to=pad_to), headers)


def messages_call(target: str, key: str, *, stream: bool = True, extra: dict[str, str] | None = None) -> Call:
    """POST /v1/messages for ``target``."""
    model = CLAUDE_MODEL if target.startswith("gateway") else UPSTREAM_CLAUDE_MODEL
    secret = key if target.startswith("gateway") else "sk-ant-bench-0123456789"
    headers = {"x-api-key": secret, "anthropic-version": "2023-06-01", **(extra or {})}
    return Call("/v1/messages", messages_body(model, stream=stream), headers)


def translated_call(key: str) -> Call:
    """POST /v1/chat/completions (streamed) for the Anthropic model opted in to OpenAI format: the
    gateway translates the request to Messages and the Anthropic stream back to chat chunks."""
    headers = {"Authorization": f"Bearer {key}"}
    return Call("/v1/chat/completions", chat_body(CLAUDE_OPENAI_MODEL, stream=True), headers)


def routed_call(key: str) -> Call:
    """POST /v1/chat/completions for the chat model's twin behind three deployments and a fallback."""
    return Call("/v1/chat/completions", chat_body(ROUTED_MODEL), {"Authorization": f"Bearer {key}"})
