"""Control plane killed mid-traffic (issue 11, "fail-open closes after about two seconds"):
fail-closed orgs are refused; fail-open orgs keep being served on local limits from the last
known state — beyond them 429, never 503 — each such admission counted; when the control plane
returns the node leaves degraded mode and the long windows' spend reaches the ledger.

Before, a fail-open org was served only while its leases lasted (about ``ODOCK_LIMIT_LEASE_SECONDS``
of traffic), then got 503 ``control_plane_unavailable``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from odock.v1 import common_pb2
from tests.data_plane.limits.stack import (
    DP_ENV,
    MINUTE_SECONDS,
    error_code,
    free_port,
    limited_org,
    limits_status,
    post_chat,
    start_cp,
    start_dp,
)
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess

pytestmark = pytest.mark.asyncio(loop_scope="module")

QUOTA = 4000
RPM = 40
# Longer than a lease lasts (ODOCK_LIMIT_LEASE_SECONDS of traffic) plus the wait for a call.
LEASE_SECONDS = float(DP_ENV["ODOCK_LIMIT_LEASE_SECONDS"])


def _wait_disconnected(dp: DataPlaneProcess, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while dp.status().get("control_plane") != "disconnected":
        assert time.monotonic() < deadline, "the node never noticed the control plane was gone"
        time.sleep(0.05)


async def _wait_window_start(margin: float = 0.3) -> float:
    """Sleep to just after the start of the next per-minute window; returns that window's end."""
    now = time.time()
    start = (int(now // MINUTE_SECONDS) + 1) * MINUTE_SECONDS
    await asyncio.sleep(start + margin - now)
    return start + MINUTE_SECONDS


def _degraded_metric(dp: DataPlaneProcess, source: str) -> float:
    text = httpx.get(f"{dp.metrics_url}/metrics", timeout=5).text
    name = f'odock_dp_limit_degraded_admissions_total{{source="{source}"}}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def _held_tokens(dp: DataPlaneProcess, scope: str) -> int:
    pools = [
        p
        for p in limits_status(dp)["pools"]
        if p["scope"] == scope and p["metric"].endswith("MONTHLY_TOKENS")
    ]
    return sum(int(p["available"]) for p in pools)


async def test_killed_control_plane_fail_open_served_on_its_local_share_fail_closed_503_then_back(
    fake: FakeProvider, tmp_path: Path
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    cp = start_cp(tmp_path / "cp.db", listen)
    secrets = cp.secrets
    dp = start_dp(cp, tmp_path / "spool")
    try:
        opened = await limited_org(cp, fake, common_pb2.Limits(requests_per_minute=RPM))
        closed = await limited_org(cp, fake, common_pb2.Limits(requests_per_minute=RPM), fail_closed=True)
        _, open_key = await opened.key()
        _, closed_key = await closed.key()
        async with httpx.AsyncClient(timeout=20) as client:
            for key in (open_key, open_key, closed_key):
                resp = await post_chat(client, dp.url, "openai", key)
                assert resp.status_code == 200, resp.text[:300]

            cp.kill()  # SIGKILL: no goodbye on the streams
            _wait_disconnected(dp)
            await asyncio.sleep(LEASE_SECONDS + 1.0)  # whatever was leased is past its horizon

            resp = await post_chat(client, dp.url, "openai", closed_key)
            assert resp.status_code == 503 and error_code("openai", resp) == "control_plane_unavailable"

            # A fresh window with the control plane away: this node was the org's only one, so its
            # share is the whole limit (docs/limits.md, "Control plane unreachable").
            window_end = await _wait_window_start()
            served = 0
            for _ in range(3 * RPM):
                resp = await post_chat(client, dp.url, "openai", open_key)
                if resp.status_code != 200:
                    assert resp.status_code == 429, resp.text[:300]
                    assert error_code("openai", resp) == "rate_limit_exceeded"
                    assert 0 < int(resp.headers["retry-after"]) <= MINUTE_SECONDS
                    break
                served += 1
            else:
                raise AssertionError("no local limit while the control plane was away")
            assert time.time() < window_end, "the burst spilled into the next window: the machine is too slow"
            assert served == RPM
            # The outage goes on: the next window is served again.
            await _wait_window_start()
            resp = await post_chat(client, dp.url, "openai", open_key)
            assert resp.status_code == 200, resp.text[:300]

            status = limits_status(dp)
            assert status["degraded"] is True and status["outages"] == 1
            assert status["degraded_local"] >= RPM + 1
            assert _degraded_metric(dp, "local") >= RPM + 1
            assert dp.stderr_text().count("control plane away") == 1  # one log line per outage
            print(f"\noutage: {served} of {RPM} per window served on the local share, then 429")

            cp = start_cp(tmp_path / "cp.db", listen, secrets)
            dp.wait_connected()
            status = limits_status(dp)
            assert status["degraded"] is False, status
            assert "control plane back" in dp.stderr_text()
            resp = await post_chat(client, dp.url, "openai", closed_key)
            assert resp.status_code == 200, resp.text[:300]
    finally:
        dp.stop()
        cp.stop()


async def test_outage_monthly_quota_served_up_to_the_last_known_remaining_then_reconciled(
    fake: FakeProvider, tmp_path: Path
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    cp = start_cp(tmp_path / "cp.db", listen)
    secrets = cp.secrets
    dp = start_dp(cp, tmp_path / "spool", ODOCK_LIMIT_IDLE_RETURN_SECONDS="60")
    try:
        opened = await limited_org(cp, fake, common_pb2.Limits(monthly_token_quota=QUOTA))
        _, open_key = await opened.key()
        fake.reset()
        async with httpx.AsyncClient(timeout=20) as client:
            for _ in range(2):
                resp = await post_chat(client, dp.url, "openai", open_key)
                assert resp.status_code == 200, resp.text[:300]
            used = sum(r.prompt_tokens + r.completion_tokens for r in fake.requests)
            held = _held_tokens(dp, opened.org.id)
            assert held > 0

            cp.kill()
            _wait_disconnected(dp)
            n_before = len(fake.requests)
            served = 0
            for _ in range(400):
                resp = await post_chat(client, dp.url, "openai", open_key)
                if resp.status_code != 200:
                    assert resp.status_code == 429, resp.text[:300]  # never 503: fail-open
                    assert error_code("openai", resp) == "quota_exceeded"
                    break
                served += 1
            else:
                raise AssertionError("the quota never stopped the key while the control plane was away")
            outage_tokens = sum(r.prompt_tokens + r.completion_tokens for r in fake.requests[n_before:])
            assert outage_tokens > held  # beyond the leases: on what was left at the last answer
            used += outage_tokens
            print(f"\noutage: {served} requests ({outage_tokens} tokens) with {held} leased tokens")

            # Same database: the node gives the outage's spend back to the ledger, so the quota
            # continues where it was instead of granting it a second time.
            cp = start_cp(tmp_path / "cp.db", listen, secrets)
            dp.wait_connected()
            n_before = len(fake.requests)
            for _ in range(400):
                resp = await post_chat(client, dp.url, "openai", open_key)
                if resp.status_code == 429:
                    assert error_code("openai", resp) == "quota_exceeded"
                    break
                assert resp.status_code == 200, resp.text[:300]
            else:
                raise AssertionError("the quota never stopped the key after the restart")
            used += sum(r.prompt_tokens + r.completion_tokens for r in fake.requests[n_before:])
    finally:
        dp.stop()
        cp.stop()
    one_request = max(r.prompt_tokens + r.completion_tokens for r in fake.requests)
    reservation = one_request * 2  # prompt estimate (bytes/3) + max_tokens, well under twice the actual
    print(f"quota {QUOTA}: used {used} in total across the outage and the restart")
    assert used <= QUOTA
    assert QUOTA - used < reservation
