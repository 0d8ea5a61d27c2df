"""Control plane stopped mid-traffic: fail-closed orgs are refused, fail-open orgs are served from
the leases they hold (each such admission counted), and the quota's state survives the restart."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from odock.v1 import common_pb2

from tests.fakes.provider import FakeProvider
from tests.limits.stack import (
    error_code,
    free_port,
    limited_org,
    limits_status,
    post_chat,
    start_cp,
    start_dp,
)
from tests.support.dataplane import DataPlaneProcess

pytestmark = pytest.mark.asyncio(loop_scope="module")

QUOTA = 4000


def _wait_disconnected(dp: DataPlaneProcess, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while dp.status().get("control_plane") != "disconnected":
        assert time.monotonic() < deadline, "the node never noticed the control plane was gone"
        time.sleep(0.05)


def _held_tokens(dp: DataPlaneProcess, scope: str) -> int:
    pools = [
        p
        for p in limits_status(dp)["pools"]
        if p["scope"] == scope and p["metric"].endswith("MONTHLY_TOKENS")
    ]
    return sum(int(p["available"]) for p in pools)


async def test_outage_fail_closed_refused_fail_open_served_up_to_leases_then_state_survives_restart(
    fake: FakeProvider, tmp_path: Path
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    cp = start_cp(tmp_path / "cp.db", listen)
    secrets = cp.secrets
    dp = start_dp(cp, tmp_path / "spool", ODOCK_LIMIT_IDLE_RETURN_SECONDS="60")
    try:
        closed = await limited_org(cp, fake, common_pb2.Limits(monthly_token_quota=QUOTA), fail_closed=True)
        opened = await limited_org(cp, fake, common_pb2.Limits(monthly_token_quota=QUOTA))
        _, closed_key = await closed.key()
        _, open_key = await opened.key()
        fake.reset()
        used = 0
        async with httpx.AsyncClient(timeout=20) as client:
            for key in (closed_key, open_key, open_key):
                resp = await post_chat(client, dp.url, "openai", key)
                assert resp.status_code == 200, resp.text[:300]
            used += sum(r.prompt_tokens + r.completion_tokens for r in fake.requests[1:])
            held = _held_tokens(dp, opened.org.id)
            assert held > 0
            before = limits_status(dp)["degraded_admissions"]

            cp.stop()
            _wait_disconnected(dp)
            resp = await post_chat(client, dp.url, "openai", closed_key)
            assert resp.status_code == 503 and error_code("openai", resp) == "control_plane_unavailable"
            n_before = len(fake.requests)
            served = 0
            for _ in range(200):
                resp = await post_chat(client, dp.url, "openai", open_key)
                if resp.status_code != 200:
                    assert resp.status_code == 503, resp.text[:300]
                    assert error_code("openai", resp) == "control_plane_unavailable"
                    break
                served += 1
            else:
                raise AssertionError("fail-open org served without end while the control plane was down")
            outage_tokens = sum(r.prompt_tokens + r.completion_tokens for r in fake.requests[n_before:])
            assert served > 0
            assert outage_tokens <= held  # never beyond the leases held
            assert limits_status(dp)["degraded_admissions"] - before == served
            used += outage_tokens
            print(f"\noutage: {served} requests ({outage_tokens} tokens) served from {held} leased tokens")

            # Same database, same address: the node reconnects; the quota continues where it was.
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
