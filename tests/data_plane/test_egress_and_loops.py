"""Over-privileged admins and loops, through both planes: the node enforces the egress policy at
connect time, and a model pointed back at the gateway costs one nested request, not a loop."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess, start_data_plane
from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.support.provision import ModelSpec, Provisioner, provision_org

CHAT = "/v1/chat/completions"
BODY = {"model": "looped", "messages": [{"role": "user", "content": "hi"}]}


def _requests_seen(dp: DataPlaneProcess, endpoint: str) -> dict[str, float]:
    """The node's request counter for ``endpoint``, by status code (from its /metrics)."""
    text = httpx.get(f"{dp.metrics_url}/metrics", timeout=5).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("odock_dp_requests_total{") and f'endpoint="{endpoint}"' in line:
            code = re.search(r'code="(\d+)"', line)
            assert code is not None, line
            counts[code.group(1)] = counts.get(code.group(1), 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


async def test_a_model_pointing_back_at_the_gateway_costs_one_nested_request(
    cp: ControlPlaneProcess, dp: DataPlaneProcess
) -> None:
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        org = await admin.create_org(tier="enterprise")
        await admin.create_credential(org.id, "openai", "sk-anything-but-a-gateway-key", name="self")
        # loopback is allowed in the tests (tests/support/planes.py): the gateway's own address
        await admin.create_model(org.id, "looped", "openai", "gpt", f"{dp.url}/v1", "self")
        _, key = await admin.create_key(org.id)
    before = _requests_seen(dp, CHAT)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=dp.url, timeout=30) as client:
        resp = await client.post(CHAT, headers={"Authorization": f"Bearer {key}"}, json=BODY)
    elapsed = time.monotonic() - started
    assert resp.status_code == 508, resp.text
    error = resp.json()["error"]
    assert error["code"] == "loop_detected" and "points back at a gateway" in error["message"]
    assert elapsed < 5.0
    after = _requests_seen(dp, CHAT)
    # the client's request and exactly one nested one, both answered 508
    assert {c: after.get(c, 0.0) - before.get(c, 0.0) for c in after} == {"508": 2.0}, (before, after)


async def test_a_client_sending_the_hop_header_is_refused_before_auth(dp: DataPlaneProcess) -> None:
    async with httpx.AsyncClient(base_url=dp.url, timeout=10) as client:
        resp = await client.post(
            "/v1/messages", headers={"x-odock-hop": "1", "x-api-key": "odk-whatever"}, json={}
        )
    assert resp.status_code == 508
    assert resp.json() == {"type": "error", "error": {
        "type": "api_error", "code": "loop_detected",
        "message": "This request was forwarded by an Odock gateway; a model's base URL points back at a gateway",
    }}  # fmt: skip


async def test_the_node_refuses_an_upstream_the_tightened_policy_forbids(
    tmp_path: Path, fake_provider: FakeProvider
) -> None:
    """A model created while loopback was allowed; the operator then removed loopback from
    ODOCK_EGRESS_ALLOW. The node learns the policy from the control plane and never connects."""
    db = f"sqlite:///{tmp_path / 'cp.db'}"
    loose = start_control_plane(db)  # the test starters allow loopback
    try:
        async with Provisioner.connect(loose.address, loose.admin_token) as admin:
            setup = await provision_org(
                admin, fake_provider, [ModelSpec("gpt-chat", "openai", "gpt-4.1-mini")]
            )
    finally:
        assert loose.stop() == 0
    strict = start_control_plane(db, secrets=loose.secrets, extra_env={"ODOCK_EGRESS_ALLOW": ""})
    dp = start_data_plane(strict.address, strict.node_token, strict.pepper)
    try:
        dp.wait_connected()
        async with httpx.AsyncClient(base_url=dp.url, timeout=10) as client:
            resp = await client.post(
                CHAT, headers={"Authorization": f"Bearer {setup.key}"},
                json={"model": "gpt-chat", "messages": [{"role": "user", "content": "hi"}]},
            )  # fmt: skip
        assert resp.status_code == 502, resp.text
        assert resp.json()["error"]["code"] == "egress_denied"
        assert fake_provider.requests == []  # not a byte reached it
    finally:
        dp.stop()
        strict.stop()
    log = dp.stderr_text()
    assert "egress denied: upstream host 127.0.0.1" in log
    assert fake_provider.secret("openai") not in log
