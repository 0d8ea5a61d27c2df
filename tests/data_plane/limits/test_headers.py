"""Limit headers on every family's endpoints, consistent with what each request consumed."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from odock.v1 import common_pb2
from tests.data_plane.limits.stack import CHAT_PRICE, free_port, limited_org, post_chat, start_cp, start_dp
from tests.fakes.provider import FakeProvider

pytestmark = pytest.mark.asyncio(loop_scope="module")

FAMILIES = ("openai", "anthropic", "gemini", "vllm")
HEADERS = (
    "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
    "x-odock-quota-limit-tokens", "x-odock-quota-remaining-tokens",
    "x-odock-budget-limit-usd", "x-odock-budget-remaining-usd",
)  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
async def test_limit_headers_present_and_consistent(family: str, fake: FakeProvider, tmp_path: Path) -> None:
    cp = start_cp(tmp_path / "cp.db", f"127.0.0.1:{free_port()}", minute=3600)
    try:
        dp = start_dp(cp, tmp_path / "spool")
        try:
            org = await limited_org(
                cp, fake,
                common_pb2.Limits(requests_per_minute=5000, monthly_token_quota=10_000_000,
                                  monthly_spend_cap_micros=90_000_000),
                priced=True,
            )  # fmt: skip
            _, key = await org.key(common_pb2.KeyLimits(requests_per_minute=1000, tokens_per_minute=200_000,
                                                        budget_micros=50_000_000))  # fmt: skip
            async with httpx.AsyncClient(timeout=20) as client:
                first = await post_chat(client, dp.url, family, key)
                used = fake.last().prompt_tokens + fake.last().completion_tokens
                second = await post_chat(client, dp.url, family, key)
        finally:
            assert dp.stop() == 0
    finally:
        cp.stop()
    for resp in (first, second):
        assert resp.status_code == 200, resp.text[:300]
        missing = [h for h in HEADERS if h not in resp.headers]
        assert not missing, missing
        # The key's limits are the tighter ones here.
        assert resp.headers["x-ratelimit-limit-requests"] == "1000"
        assert resp.headers["x-ratelimit-limit-tokens"] == "200000"
        assert resp.headers["x-odock-quota-limit-tokens"] == "10000000"
        assert resp.headers["x-odock-budget-limit-usd"] == "50.000000"
        assert resp.headers["x-ratelimit-reset-requests"].endswith("s")
    h1, h2 = first.headers, second.headers
    # One more request admitted in the same window.
    assert int(h1["x-ratelimit-remaining-requests"]) == 999
    assert int(h1["x-ratelimit-remaining-requests"]) - int(h2["x-ratelimit-remaining-requests"]) == 1
    # Same reservation both times, so the difference is what the first request actually used.
    assert int(h1["x-ratelimit-remaining-tokens"]) - int(h2["x-ratelimit-remaining-tokens"]) == used
    assert int(h1["x-odock-quota-remaining-tokens"]) - int(h2["x-odock-quota-remaining-tokens"]) == used
    last = fake.last()
    cost_usd = Decimal(
        last.prompt_tokens * CHAT_PRICE.input_per_mtok_micros
        + last.completion_tokens * CHAT_PRICE.output_per_mtok_micros
    ) / Decimal(10**12)
    spent = Decimal(h1["x-odock-budget-remaining-usd"]) - Decimal(h2["x-odock-budget-remaining-usd"])
    assert abs(spent - cost_usd) <= Decimal("0.000001")
