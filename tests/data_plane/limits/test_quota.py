"""Monthly token quota and spend cap across 2 data-plane nodes: where the key stops, and by how much
a cap can be overshot when requests use more than their reservation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from odock.v1 import common_pb2
from tests.data_plane.limits.drain import drain
from tests.data_plane.limits.stack import CHAT_PRICE, free_port, limited_org, start_cp, start_dp
from tests.fakes.provider import FakeProvider

pytestmark = pytest.mark.asyncio(loop_scope="module")

QUOTA = 100_000
OUTPUT_TOKENS = 200
PROMPT_BYTES = 4000
BYTES_PER_TOKEN = 3.0  # the nodes' prompt estimate (the default)


def _served_tokens(fake: FakeProvider) -> list[int]:
    return [r.prompt_tokens + r.completion_tokens for r in fake.requests]


async def test_monthly_token_quota_stops_within_one_request_across_2_nodes(
    fake: FakeProvider, tmp_path: Path
) -> None:
    cp = start_cp(tmp_path / "cp.db", f"127.0.0.1:{free_port()}")
    nodes = []
    try:
        nodes = [start_dp(cp, tmp_path / f"spool{i}") for i in range(2)]
        org = await limited_org(cp, fake, common_pb2.Limits(monthly_token_quota=QUOTA))
        _, key = await org.key()
        fake.reset()
        fake.knobs.chunks = OUTPUT_TOKENS  # completion tokens per answer
        result = await drain([n.url for n in nodes], key, per_node=2, max_tokens=OUTPUT_TOKENS,
                             text_bytes=PROMPT_BYTES)  # fmt: skip
    finally:
        for node in nodes:
            node.stop()
        cp.stop()
    tokens = _served_tokens(fake)
    total = sum(tokens)
    assert result.served == len(tokens) > 50
    assert set(result.codes) == {"quota_exceeded"}, result.codes
    # One request: the largest actual usage, and its reservation (prompt estimate + max_tokens).
    body_bytes = max(len(r.body) for r in fake.requests)
    reservation = math.ceil(body_bytes / BYTES_PER_TOKEN) + OUTPUT_TOKENS
    print(f"\nquota {QUOTA}: used {total} in {len(tokens)} requests (one request ~{max(tokens)} tokens,"
          f" reserved {reservation}); short of the quota by {QUOTA - total}")  # fmt: skip
    assert total <= QUOTA
    assert QUOTA - total < reservation


async def test_spend_cap_overshoot_stays_within_the_documented_bound(
    fake: FakeProvider, tmp_path: Path
) -> None:
    """Prompts estimated at a quarter of their real size: every request spends more than it reserved,
    the worst case for overshoot. Bound (docs/limits.md): nodes x in-flight per node x (actual - reserved)."""
    cap_micros = 300_000
    per_node, node_count = 4, 2
    cp = start_cp(tmp_path / "cp.db", f"127.0.0.1:{free_port()}")
    nodes = []
    try:
        env = {"ODOCK_LIMIT_BYTES_PER_TOKEN": str(BYTES_PER_TOKEN * 4)}
        nodes = [start_dp(cp, tmp_path / f"spool{i}", **env) for i in range(node_count)]
        org = await limited_org(cp, fake, common_pb2.Limits(monthly_spend_cap_micros=cap_micros), priced=True)
        _, key = await org.key()
        fake.reset()
        fake.knobs.chunks = OUTPUT_TOKENS
        result = await drain([n.url for n in nodes], key, per_node=per_node, max_tokens=OUTPUT_TOKENS,
                             text_bytes=PROMPT_BYTES)  # fmt: skip
    finally:
        for node in nodes:
            node.stop()
        cp.stop()
    assert set(result.codes) == {"budget_exceeded"}, result.codes
    costs = [
        r.prompt_tokens * CHAT_PRICE.input_per_mtok_micros
        + r.completion_tokens * CHAT_PRICE.output_per_mtok_micros
        for r in fake.requests
    ]
    spent_micros = sum(costs) / 1e6
    body_bytes = max(len(r.body) for r in fake.requests)
    reserved = (math.ceil(body_bytes / (BYTES_PER_TOKEN * 4)) * CHAT_PRICE.input_per_mtok_micros
                + OUTPUT_TOKENS * CHAT_PRICE.output_per_mtok_micros) / 1e6  # fmt: skip
    error = max(costs) / 1e6 - reserved  # per request: actual - reserved
    bound = node_count * per_node * error
    overshoot = spent_micros - cap_micros
    print(f"\nspend cap {cap_micros} micro-USD: spent {spent_micros:.0f} in {len(costs)} requests; overshoot "
          f"{overshoot:.0f} micro-USD; bound N*F*E = {node_count}*{per_node}*{error:.0f} = {bound:.0f}")  # fmt: skip
    assert error > 0
    assert overshoot <= bound
    assert spent_micros >= cap_micros - max(costs) / 1e6 - reserved  # and it did run up to the cap
