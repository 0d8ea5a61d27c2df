"""Token counts as each provider family reports them, normalised to one shape.

Normalised meaning (what a record stores): ``input`` is every input token,
cached ones included; ``cached`` is the part of ``input`` read from a cache;
``output`` is every output token, reasoning included; ``reasoning`` is the
part of ``output`` spent thinking. Providers split these differently:

- OpenAI chat/completions/embeddings (and vLLM): ``prompt_tokens`` (includes
  ``prompt_tokens_details.cached_tokens``), ``completion_tokens`` (includes
  ``completion_tokens_details.reasoning_tokens``).
- OpenAI responses/images, audio ``{"type": "tokens"}``: ``input_tokens`` /
  ``output_tokens`` with ``input_tokens_details.cached_tokens`` and
  ``output_tokens_details.reasoning_tokens``.
- Anthropic: ``input_tokens`` excludes ``cache_read_input_tokens`` and
  ``cache_creation_input_tokens``; all three are input (cache writes are
  priced as ordinary input, reads at the cached price).
- Gemini ``usageMetadata``: ``promptTokenCount`` includes
  ``cachedContentTokenCount``; ``toolUsePromptTokenCount`` is extra input;
  ``thoughtsTokenCount`` is output not included in ``candidatesTokenCount``.
- vLLM ``/tokenize``: ``count`` (input).

Anything that is present but not a non-negative integer, or parts larger
than their whole, is :class:`MalformedUsage`: the caller flags the record and
ignores that report. A count larger than ``MAX_TOKENS`` (a broken or hostile
upstream) is clamped to it and the usage marked ``clamped`` (the record is
flagged); never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Far beyond any real request (about 1.1e12); keeps per-record counters, and sums of
# many records, inside int64. Larger counts are clamped to it.
MAX_TOKENS = 2**40


class MalformedUsage(ValueError):
    """A usage report that cannot be trusted."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Normalised token counts of one request."""

    input: int = 0
    output: int = 0
    cached: int = 0
    reasoning: int = 0
    clamped: bool = False  # some count was above MAX_TOKENS and was clamped to it


def _count(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise MalformedUsage(f"{key}: not a token count")
    return value


def _details(obj: Mapping[str, Any], key: str, field: str) -> int:
    details = obj.get(key)
    if details is None:
        return 0
    if not isinstance(details, dict):
        raise MalformedUsage(f"{key}: not an object")
    return _count(details, field)


def _usage(input: int, output: int = 0, cached: int = 0, reasoning: int = 0, *, parts: bool = True) -> Usage:
    """Usage of raw counts, each clamped to MAX_TOKENS; ``parts``: a part larger than its total is malformed."""
    if parts and (cached > input or reasoning > output):
        raise MalformedUsage("a part is larger than its total")
    if max(input, output) <= MAX_TOKENS:  # parts are at most their totals here
        return Usage(input=input, output=output, cached=cached, reasoning=reasoning)
    m = MAX_TOKENS
    return Usage(input=min(input, m), output=min(output, m), cached=min(cached, m), reasoning=min(reasoning, m),
                 clamped=True)  # fmt: skip


def _mapping(usage: object) -> Mapping[str, Any]:
    if not isinstance(usage, dict):
        raise MalformedUsage("usage is not an object")
    return usage


def openai_usage(raw: object) -> Usage | None:
    """OpenAI-style usage (chat, completions, embeddings, responses, images, audio, vLLM pooling)."""
    u = _mapping(raw)
    if u.get("type") == "duration":
        return None  # audio priced by seconds: no tokens to record
    if "prompt_tokens" in u or "completion_tokens" in u:
        return _usage(
            input=_count(u, "prompt_tokens"),
            output=_count(u, "completion_tokens"),
            cached=_details(u, "prompt_tokens_details", "cached_tokens"),
            reasoning=_details(u, "completion_tokens_details", "reasoning_tokens"),
        )
    if "input_tokens" in u or "output_tokens" in u:
        return _usage(
            input=_count(u, "input_tokens"),
            output=_count(u, "output_tokens"),
            cached=_details(u, "input_tokens_details", "cached_tokens"),
            reasoning=_details(u, "output_tokens_details", "reasoning_tokens"),
        )
    if "total_tokens" in u:
        return _usage(input=_count(u, "total_tokens"))
    raise MalformedUsage("no token counts in usage")


def anthropic_usage(raw: object) -> Usage:
    """Anthropic usage (a message's, or the merged fields of a stream's events)."""
    u = _mapping(raw)
    read = _count(u, "cache_read_input_tokens")
    written = _count(u, "cache_creation_input_tokens")
    return _usage(
        input=_count(u, "input_tokens") + read + written,
        output=_count(u, "output_tokens"),
        cached=read,
        parts=False,
    )


def gemini_usage(raw: object) -> Usage:
    """Gemini ``usageMetadata``."""
    u = _mapping(raw)
    thoughts = _count(u, "thoughtsTokenCount")
    return _usage(
        input=_count(u, "promptTokenCount") + _count(u, "toolUsePromptTokenCount"),
        output=_count(u, "candidatesTokenCount") + thoughts,
        cached=_count(u, "cachedContentTokenCount"),
        reasoning=thoughts,
    )


def tokenize_usage(count: object) -> Usage:
    """vLLM ``/tokenize``: the number of prompt tokens."""
    if type(count) is not int or count < 0:
        raise MalformedUsage("count: not a token count")
    return _usage(input=count)
