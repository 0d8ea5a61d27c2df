"""Where each native endpoint's answer carries its usage, and whole-body extraction.

A shape names the usage dialect of one endpoint: which JSON key holds it,
how it reads, and which stream events can carry it (see ``stream.py``).
Whole bodies are decoded into tiny msgspec structs that keep only the usage
member: every other member is skipped at C speed, never built as objects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import msgspec

from data_plane.usage.tokens import (
    MalformedUsage,
    Usage,
    anthropic_usage,
    gemini_usage,
    openai_usage,
    tokenize_usage,
)

Shape = Literal["openai_chat", "openai_responses", "openai", "anthropic", "gemini", "tokenize", "none"]

_SHAPES: dict[str, Shape] = {
    "/v1/chat/completions": "openai_chat",
    "/v1/completions": "openai_chat",
    "/v1/responses": "openai_responses",
    "/v1/embeddings": "openai",
    "/v1/images/generations": "openai",
    "/v1/images/edits": "openai",
    "/v1/images/variations": "openai",
    "/v1/messages": "anthropic",
    "/v1beta/models/{model}:generateContent": "gemini",
    "/v1beta/models/{model}:streamGenerateContent": "gemini",
    "/v1/vllm/chat/completions": "openai_chat",
    "/v1/vllm/completions": "openai_chat",
    "/v1/vllm/responses": "openai_responses",
    "/v1/vllm/embeddings": "openai",
    "/v1/vllm/audio/transcriptions": "openai",
    "/v1/vllm/audio/translations": "openai",
    "/v1/vllm/tokenize": "tokenize",
    "/v1/vllm/detokenize": "none",
    "/v1/vllm/pooling": "openai",
    "/v1/vllm/classify": "openai",
    "/v1/vllm/score": "openai",
    "/v1/vllm/rerank": "openai",
}
# Endpoints whose streams report usage only when asked (stream_options.include_usage).
INJECTABLE = frozenset(name for name, shape in _SHAPES.items() if shape == "openai_chat")


def shape_of(endpoint_name: str) -> Shape:
    """The usage shape of an endpoint (``none`` for one this module does not know)."""
    return _SHAPES.get(endpoint_name, "none")


class _Usage(msgspec.Struct):
    usage: Any = None


class _Gemini(msgspec.Struct):
    usageMetadata: Any = None  # the provider's member name


class _Count(msgspec.Struct):
    count: Any = None


_USAGE = msgspec.json.Decoder(_Usage)
_GEMINI = msgspec.json.Decoder(_Gemini)
_COUNT = msgspec.json.Decoder(_Count)


def _some(raw: object, read: Callable[[Any], Usage | None]) -> Usage | None:
    return None if raw is None else read(raw)


_READERS: dict[str, Callable[[bytes], Usage | None]] = {
    "anthropic": lambda body: _some(_USAGE.decode(body).usage, anthropic_usage),
    "gemini": lambda body: _some(_GEMINI.decode(body).usageMetadata, gemini_usage),
    "tokenize": lambda body: _some(_COUNT.decode(body).count, tokenize_usage),
}


def _openai_reader(body: bytes) -> Usage | None:
    return _some(_USAGE.decode(body).usage, openai_usage)


def body_usage(shape: Shape, body: bytes) -> Usage | None:
    """The usage in a complete JSON answer; None when it carries none. Raises MalformedUsage."""
    if shape == "none":
        return None
    try:
        return _READERS.get(shape, _openai_reader)(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise MalformedUsage("answer is not a JSON object") from None


def value_usage(shape: Shape, raw: bytes) -> Usage | None:
    """Usage from the raw JSON of a usage value found inside a streamed body (``jsonscan``)."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise MalformedUsage("usage is not valid JSON") from None
    if shape == "anthropic":
        return anthropic_usage(value)
    if shape == "gemini":
        return gemini_usage(value)
    return openai_usage(value)


def streamed_key(shape: Shape) -> bytes:
    """The member holding usage in a (non-SSE) streamed JSON body of this shape."""
    return b"usageMetadata" if shape == "gemini" else b"usage"
