"""Provider usage objects -> normalised counts and cost (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from data_plane.governance.domain import Pricing
from data_plane.providers.anthropic import anthropic_usage
from data_plane.providers.gemini import USAGE as GEMINI_USAGE
from data_plane.providers.gemini import gemini_usage
from data_plane.providers.openai import USAGE as OPENAI_USAGE
from data_plane.providers.openai import openai_usage
from data_plane.providers.vllm import TOKENIZE_USAGE
from data_plane.usage.meter import cost_picos
from data_plane.usage.shapes import NO_USAGE, body_usage
from data_plane.usage.tokens import MalformedUsage, Usage
from tests.fakes.reply import dumps


def test_openai_chat_usage_keeps_cached_and_reasoning_inside_totals() -> None:
    raw = {
        "prompt_tokens": 100,
        "completion_tokens": 40,
        "total_tokens": 140,
        "prompt_tokens_details": {"cached_tokens": 64},
        "completion_tokens_details": {"reasoning_tokens": 30},
    }
    assert openai_usage(raw) == Usage(input=100, output=40, cached=64, reasoning=30)


def test_openai_responses_and_images_usage() -> None:
    raw = {
        "input_tokens": 12,
        "output_tokens": 7,
        "input_tokens_details": {"cached_tokens": 2},
        "output_tokens_details": {"reasoning_tokens": 5},
        "total_tokens": 19,
    }
    assert openai_usage(raw) == Usage(input=12, output=7, cached=2, reasoning=5)
    # Audio billed by duration (issue 15): milliseconds of input audio, no tokens.
    assert openai_usage({"type": "duration", "seconds": 3}) == Usage(audio_ms=3000)


def test_anthropic_cache_reads_and_writes_are_input() -> None:
    raw = {
        "input_tokens": 10,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 20,
        "output_tokens": 8,
    }
    assert anthropic_usage(raw) == Usage(input=130, output=8, cached=100)


def test_gemini_thoughts_are_output_and_tool_prompts_input() -> None:
    raw = {
        "promptTokenCount": 50,
        "cachedContentTokenCount": 30,
        "candidatesTokenCount": 10,
        "thoughtsTokenCount": 25,
        "toolUsePromptTokenCount": 4,
        "totalTokenCount": 89,
    }
    assert gemini_usage(raw) == Usage(input=54, output=35, cached=30, reasoning=25)


@pytest.mark.parametrize(
    "raw",
    [
        {"prompt_tokens": "12", "completion_tokens": 1},
        {"prompt_tokens": -1, "completion_tokens": 1},
        {"prompt_tokens": 1.5, "completion_tokens": 1},
        {"prompt_tokens": True, "completion_tokens": 1},
        {"prompt_tokens": 2, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 3}},
        {"prompt_tokens": 2, "completion_tokens": 1, "prompt_tokens_details": []},
        [1, 2],
        {"nothing": 1},
    ],
)
def test_malformed_openai_usage(raw: Any) -> None:
    with pytest.raises(MalformedUsage):
        openai_usage(raw)


def test_body_usage_per_shape() -> None:
    assert body_usage(
        OPENAI_USAGE, dumps({"data": [], "usage": {"prompt_tokens": 3, "total_tokens": 3}})
    ) == Usage(3)
    assert body_usage(
        GEMINI_USAGE, dumps({"usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1}})
    ) == Usage(2, 1)
    assert body_usage(TOKENIZE_USAGE, dumps({"count": 9, "tokens": [1] * 9})) == Usage(9)
    assert body_usage(NO_USAGE, b"{}") is None
    assert body_usage(OPENAI_USAGE, b'{"data": []}') is None
    with pytest.raises(MalformedUsage):
        body_usage(OPENAI_USAGE, b"[1]")
    with pytest.raises(MalformedUsage):
        body_usage(OPENAI_USAGE, b"not json")


def test_cost_prices_cached_input_at_the_cached_price_when_set() -> None:
    usage = Usage(input=1000, output=200, cached=600)
    assert cost_picos(usage, Pricing(3_000_000, 15_000_000)) == 1000 * 3_000_000 + 200 * 15_000_000
    assert (
        cost_picos(usage, Pricing(3_000_000, 15_000_000, 300_000))
        == 400 * 3_000_000 + 600 * 300_000 + 200 * 15_000_000
    )
