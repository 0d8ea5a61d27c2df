"""Small unit tests of the data plane's limits: estimates and pool returns (the control plane's windows and
ledger: tests/control_plane/limits/test_ledger.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from data_plane.governance.domain import Pricing
from data_plane.limits.estimate import estimate
from data_plane.limits.pools import Pool
from data_plane.payload import inspect_json
from data_plane.providers import endpoint_named
from odock.limitmetrics import MONTHLY_SPEND
from odock.v1 import node_pb2


def test_estimate_uses_the_output_cap_of_each_dialect() -> None:
    pricing = Pricing(input_per_mtok_micros=1_000_000, output_per_mtok_micros=2_000_000)
    body = b'{"model": "m", "generationConfig": {"maxOutputTokens": 50}}'
    generate = endpoint_named("/v1beta/models/{model}:generateContent")
    est = estimate(generate, len(body), inspect_json(body), pricing, bytes_per_token=3, default_output_tokens=999)
    assert est.tokens == -(-len(body) // 3) + 50
    assert est.picos == -(-len(body) // 3) * 1_000_000 + 50 * 2_000_000
    plain = b'{"model": "m"}'
    embeddings, chat = endpoint_named("/v1/embeddings"), endpoint_named("/v1/chat/completions")
    assert estimate(embeddings, len(plain), inspect_json(plain), pricing, bytes_per_token=3,
                    default_output_tokens=999).tokens == 5  # fmt: skip
    assert estimate(chat, len(plain), inspect_json(plain), pricing, bytes_per_token=3,
                    default_output_tokens=999).tokens == 5 + 999  # fmt: skip


def _grant(amount: int, lease_id: str) -> node_pb2.LeaseGrant:
    grant = node_pb2.LeaseGrant(amount=amount, lease_id=lease_id, limit=100, remaining=10)
    grant.expire_time.FromDatetime(datetime.now(UTC) + timedelta(seconds=60))
    return grant


def test_pool_returns_spread_spend_and_carry_credits_in_micro_usd() -> None:
    pool = Pool("org_a", "key_b", MONTHLY_SPEND, 7, None, 0.0)
    pool.add(_grant(10, "l1"))
    pool.add(_grant(5, "l2"))
    pool.available -= 12_500_000  # 12.5 micro-USD spent, in pico-USD
    returns = pool.return_all()
    assert [(r.lease_id, r.used) for r in returns] == [("l1", 10), ("l2", 3)]  # rounded up, never down
    credit = Pool("org_a", "", MONTHLY_SPEND, 7, None, 0.0)
    credit.add(_grant(4, "l3"))
    credit.available += 2_700_000  # settled 2.7 micro-USD below reservations of an earlier lease
    assert [(r.lease_id, r.used) for r in credit.return_all()] == [("l3", 0), ("", -2)]
