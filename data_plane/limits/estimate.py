"""What a request will probably cost, reserved at admission and settled afterwards.

Input tokens: the body size over ``bytes_per_token`` (3 by default: JSON and
markup make bodies larger than their text, so this errs high for most
prompts); 1 for an audio upload (``Endpoint.body_is_text`` false), whose bytes say
nothing about its tokens. Output tokens: the cap the client set (``max_tokens``,
``max_completion_tokens``, ``max_output_tokens`` or Gemini's
``generationConfig.maxOutputTokens``), else ``default_output_tokens``; endpoints
that produce no output (``Endpoint.output`` false: embeddings, tokenizers, pooling,
scoring) reserve none. Cost: those tokens at the model's prices.
"""

from __future__ import annotations

import math

import msgspec

from data_plane.governance.domain import Pricing
from data_plane.payload import JsonFacts
from data_plane.providers import Endpoint


class Estimate(msgspec.Struct, frozen=True):
    """A request's reservation: tokens and cost in pico-USD (a struct: built per request, it
    costs a fraction of a frozen dataclass)."""

    tokens: int
    picos: int


def estimate(
    endpoint: Endpoint,
    body_size: int,
    facts: JsonFacts | None,
    pricing: Pricing,
    *,
    bytes_per_token: float,
    default_output_tokens: int,
) -> Estimate:
    """The reservation for one request (see the module docstring)."""
    input_tokens = max(1, math.ceil(body_size / bytes_per_token)) if body_size and endpoint.body_is_text else 1
    if not endpoint.output:
        output_tokens = 0
    else:
        cap = facts.output_token_limit if facts is not None else None
        output_tokens = cap if cap is not None and cap >= 0 else default_output_tokens
    picos = input_tokens * pricing.input_per_mtok_micros + output_tokens * pricing.output_per_mtok_micros
    return Estimate(tokens=input_tokens + output_tokens, picos=picos)
