"""What limits admission costs per request, in microseconds (issue 5: limits on vs off).

Runs the data plane's own ``Limiter`` in-process against an instant lease source that grants
what is asked (every limit at 10^12, as ``scripts/bench-toggles`` provisions them), and times the
per-request work the gateway does for limits, in the order it does it:
``estimate`` → ``Limiter.admit`` → the limit headers stamped on the response
(``Admission.write_headers``, as the app's ``stamp_headers`` calls it) → settlement to the actual usage (``settle_request``'s call).

Run: ``python -m scripts.benchmark.limitcost [--requests 200000] [--rounds 5]``. Prints one JSON
line per case with the median of the rounds (min–max alongside) of microseconds per request.
Point ``PYTHONPATH`` at another checkout to measure its limiter with the same script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from multidict import CIMultiDict

from data_plane.governance.domain import GrantLimits, KeyGrant, Link, Pricing
from data_plane.limits import Limiter, estimate
from data_plane.payload import inspect_json
from data_plane.providers import endpoint_named
from data_plane.settings import LimitSettings
from odock.v1 import node_pb2

HUGE = 10**12
CHAT = endpoint_named("/v1/chat/completions")
BODY = b'{"model": "bench-gpt", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16}'
PRICING = Pricing(input_per_mtok_micros=400_000, output_per_mtok_micros=1_600_000)


class InstantSource:
    """Grants every ask in full at once (a control plane with nothing else to do)."""

    def __init__(self) -> None:
        self.calls = 0

    async def acquire_leases(
        self, asks: list[node_pb2.LeaseAsk], returns: list[node_pb2.LeaseReturn]
    ) -> list[node_pb2.LeaseGrant]:
        self.calls += 1
        now = int(time.time())
        out = []
        for ask in asks:
            grant = node_pb2.LeaseGrant(amount=max(ask.want, ask.need), limit=HUGE, remaining=HUGE, window=1)
            if ask.metric in (
                node_pb2.LIMIT_METRIC_REQUESTS_PER_MINUTE,
                node_pb2.LIMIT_METRIC_TOKENS_PER_MINUTE,
            ):
                grant.window_seconds = 3600
                grant.window_end.FromSeconds(now + 3600)
            else:
                grant.lease_id = f"lse_{self.calls}_{ask.metric}"
                grant.expire_time.FromSeconds(now + 3600)
            out.append(grant)
        return out


class _Response:
    """What stamping the limit headers touches of a response."""

    def __init__(self) -> None:
        self.headers: CIMultiDict[str] = CIMultiDict(
            {"Content-Type": "application/json", "x-request-id": "req_0123456789abcdef"}
        )


def grant(limits: GrantLimits) -> KeyGrant:
    """A cached key grant with ``limits``."""
    return KeyGrant(org_id="org_bench", org_name="bench", key_id="key_bench", all_models=True, models=frozenset(),
                    expire_at=None, default_models={}, fail_closed=False, limits=limits)  # fmt: skip


CASES: dict[str, GrantLimits] = {
    "all_limits": GrantLimits(
        key_requests_per_minute=HUGE,
        key_tokens_per_minute=HUGE,
        key_budget_micros=HUGE,
        org_requests_per_minute=HUGE,
        org_tokens_per_minute=HUGE,
        org_monthly_token_quota=HUGE,
        org_monthly_spend_cap_micros=HUGE,
    ),
    "key_rpm_only": GrantLimits(key_requests_per_minute=HUGE),
    "no_limits": GrantLimits(),
}


async def one_round(limiter: Limiter, key: KeyGrant, n: int) -> dict[str, float]:
    """Microseconds per request of each step over ``n`` requests."""
    facts = inspect_json(BODY)
    settings = LimitSettings()
    clock = time.perf_counter
    t_est = t_admit = t_headers = t_settle = 0.0
    for _ in range(n):
        t0 = clock()
        est = estimate(CHAT, len(BODY), facts, PRICING,
                       bytes_per_token=settings.bytes_per_token,
                       default_output_tokens=settings.default_output_tokens)  # fmt: skip
        t1 = clock()
        admission = await limiter.admit(key, est)
        t2 = clock()
        response = _Response()
        t3 = clock()
        admission.write_headers(response.headers)
        t4 = clock()
        admission.settle(50, 50 * 1_000_000)
        t5 = clock()
        t_est += t1 - t0
        t_admit += t2 - t1
        t_headers += t4 - t3
        t_settle += t5 - t4
    scale = 1e6 / n
    return {
        "estimate_us": t_est * scale,
        "admit_us": t_admit * scale,
        "headers_us": t_headers * scale,
        "settle_us": t_settle * scale,
        "total_us": (t_est + t_admit + t_headers + t_settle) * scale,
    }


async def run_case(name: str, limits: GrantLimits, requests: int, rounds: int) -> dict[str, Any]:
    """Median (min, max) of ``rounds`` rounds of ``requests`` requests for one case."""
    source = InstantSource()
    link = Link(connected=True, ever_connected=True)
    limiter = Limiter(source, link, LimitSettings())
    key = grant(limits)
    await one_round(limiter, key, 2000)  # warm: leases held, prefetch rates known
    results = []
    for _ in range(rounds):
        results.append(await one_round(limiter, key, requests))
        await asyncio.sleep(0)  # let background prefetches land
    out: dict[str, Any] = {"case": name, "requests": requests, "rounds": rounds, "lease_calls": source.calls}
    for metric in results[0]:
        values = [r[metric] for r in results]
        out[metric] = {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
                       "max": round(max(values), 2)}  # fmt: skip
    await limiter.close(timeout=0.5)
    return out


async def main_async(args: argparse.Namespace, emit: Callable[[str], None]) -> None:
    import data_plane

    emit(json.dumps({"data_plane": data_plane.__file__, "python": sys.version.split()[0]}))
    for name, limits in CASES.items():
        if args.cases and name not in args.cases.split(","):
            continue
        emit(json.dumps(await run_case(name, limits, args.requests, args.rounds)))


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.benchmark.limitcost", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--requests", type=int, default=200_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", default="", help="comma-separated subset of: " + ", ".join(CASES))
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(main_async(args, lambda line: print(line, flush=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
