"""Control-plane outages: cached grants keep serving (up to max staleness), unknown keys get 503."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.data_plane.helpers import CHAT_MODEL, FAMILIES, assert_error, chat_call, send
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess, start_data_plane
from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.support.provision import Provisioner, provision_all_families


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def own_cp(tmp_path: Path) -> Iterator[ControlPlaneProcess]:
    """A control plane on a fixed port, so it can be stopped and started again at the same address."""
    listen = f"127.0.0.1:{_free_port()}"
    proc = start_control_plane(f"sqlite:///{tmp_path / 'cp.db'}", extra_env={"ODOCK_CP_LISTEN": listen})
    try:
        yield proc
    finally:
        proc.stop()


def _start_dp(cp: ControlPlaneProcess, **env: str) -> DataPlaneProcess:
    dp = start_data_plane(cp.address, cp.node_token, cp.pepper, extra_env=env)
    dp.wait_connected()
    return dp


async def _wait_status(dp: DataPlaneProcess, state: str, timeout: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    status: dict[str, object] = {}
    while time.monotonic() < deadline:
        status = dp.status()
        if status["control_plane"] == state:
            return status
        await asyncio.sleep(0.02)
    raise AssertionError(f"never {state}: {status}")


async def test_outage_serves_cached_keys_refuses_unknown_ones_and_recovers(
    own_cp: ControlPlaneProcess, fake_provider: FakeProvider
) -> None:
    setup = await provision_all_families(own_cp, fake_provider)
    async with Provisioner.connect(own_cp.address, own_cp.admin_token) as admin:
        _, never_used = await admin.create_key(setup.org.id)
    dp = _start_dp(own_cp)
    try:
        async with httpx.AsyncClient(base_url=dp.url, timeout=10) as client:
            for family in FAMILIES:
                assert (
                    await send(client, chat_call(family, CHAT_MODEL[family], key=setup.key))
                ).status_code == 200
            flushes_before = dp.status()["flushes"]
            assert own_cp.stop() == 0
            status = await _wait_status(dp, "disconnected")
            assert isinstance(status["staleness_seconds"], float) and status["ready"] is True
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json() == {"status": "ready"}  # within staleness
            for family in FAMILIES:
                # cached grant and route: still served while the control plane is away
                assert (
                    await send(client, chat_call(family, CHAT_MODEL[family], key=setup.key))
                ).status_code == 200
                # never seen: fail closed
                resp = await send(client, chat_call(family, CHAT_MODEL[family], key=never_used))
                assert_error(family, resp, 503, "control_plane_unavailable")
                assert int(resp.headers["retry-after"]) > 0
                # malformed keys are still refused offline, not with 503
                assert_error(
                    family, await send(client, chat_call(family, "x", key="odk-bad")), 401, "invalid_api_key"
                )
            # a model never resolved is unknown too
            resp = await send(client, chat_call("openai", "text-embed", key=setup.key))
            assert_error("openai", resp, 503, "control_plane_unavailable")

            restarted = start_control_plane(
                own_cp.env["ODOCK_DATABASE_URL"],
                extra_env={"ODOCK_CP_LISTEN": own_cp.address},
                secrets=own_cp.secrets,
            )
            try:
                await _wait_status(dp, "connected", timeout=15)
                assert int(str(dp.status()["flushes"])) > int(str(flushes_before))  # full flush on reconnect
                resp = await send(client, chat_call("openai", "gpt-chat", key=never_used))
                assert resp.status_code == 200
            finally:
                restarted.stop()
    finally:
        dp.stop()


async def test_cached_grants_expire_after_max_staleness(
    own_cp: ControlPlaneProcess, fake_provider: FakeProvider
) -> None:
    setup = await provision_all_families(own_cp, fake_provider)
    dp = _start_dp(own_cp, ODOCK_MAX_STALENESS_SECONDS="1")
    try:
        async with httpx.AsyncClient(base_url=dp.url, timeout=10) as client:
            call = chat_call("anthropic", "claude", key=setup.key)
            assert (await send(client, call)).status_code == 200
            own_cp.stop()
            await _wait_status(dp, "disconnected")
            assert (await send(client, call)).status_code == 200
            await asyncio.sleep(1.2)
            assert_error("anthropic", await send(client, call), 503, "control_plane_unavailable")
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json() == {"status": "not_ready", "reason": "control_plane_stale"}
    finally:
        dp.stop()


async def test_node_starting_without_control_plane_is_not_ready_and_fails_closed(
    own_cp: ControlPlaneProcess, fake_provider: FakeProvider
) -> None:
    setup = await provision_all_families(own_cp, fake_provider)
    own_cp.stop()
    dp = start_data_plane(own_cp.address, own_cp.node_token, own_cp.pepper)
    try:
        async with httpx.AsyncClient(base_url=dp.url, timeout=10) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json() == {"status": "not_ready", "reason": "control_plane_never_connected"}
            assert (await client.get("/healthz")).status_code == 200
            resp = await send(client, chat_call("gemini", "gemini-flash", key=setup.key))
            assert_error("gemini", resp, 503, "control_plane_unavailable")
    finally:
        dp.stop()


async def test_a_hung_control_plane_is_detected_by_missing_heartbeats(
    own_cp: ControlPlaneProcess, fake_provider: FakeProvider
) -> None:
    setup = await provision_all_families(own_cp, fake_provider)
    async with Provisioner.connect(own_cp.address, own_cp.admin_token) as admin:
        _, never_used = await admin.create_key(setup.org.id)
    # the control plane beats every second (tests/support/planes.py); 2.5 s of silence means dead
    dp = _start_dp(own_cp, ODOCK_WATCH_IDLE_SECONDS="2.5", ODOCK_CP_RPC_TIMEOUT_SECONDS="0.5")
    try:
        async with httpx.AsyncClient(base_url=dp.url, timeout=10) as client:
            call = chat_call("vllm", "llama", key=setup.key)
            assert (await send(client, call)).status_code == 200
            own_cp.process.send_signal(signal.SIGSTOP)  # alive but silent, like a blackholed network
            try:
                await _wait_status(dp, "disconnected", timeout=6)
                assert (await send(client, call)).status_code == 200
                started = time.monotonic()
                resp = await send(client, chat_call("vllm", "llama", key=never_used))
                assert_error("vllm", resp, 503, "control_plane_unavailable")
                assert time.monotonic() - started < 2.0  # bounded by the RPC timeout
            finally:
                own_cp.process.send_signal(signal.SIGCONT)
            await _wait_status(dp, "connected", timeout=15)
            assert (await send(client, chat_call("vllm", "llama", key=never_used))).status_code == 200
    finally:
        dp.stop()
