"""``--workers N``: N processes share one port; SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest

from tests.data_plane.helpers import chat_call, send
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import start_data_plane
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned


@pytest.mark.slow
async def test_two_workers_share_one_port(cp: ControlPlaneProcess, org: Provisioned) -> None:
    dp = start_data_plane(cp.address, cp.node_token, cp.pepper, workers=2)
    try:
        dp.wait_connected()  # both workers (the supervisor's /readyz/details lists each)
        served: dict[str, int] = {}
        for _ in range(60):
            # a fresh connection each time: the kernel spreads them over the workers' sockets
            async with httpx.AsyncClient(base_url=dp.url) as client:
                assert (await send(client, chat_call("openai", "gpt-chat", key=org.key))).status_code == 200
            await asyncio.sleep(0.05)
            workers = dp.status()["workers"]
            assert isinstance(workers, list) and len(workers) == 2
            # a worker that served the key has it cached (statuses are refreshed every second)
            served = {str(w["node_id"]): int(w["cache"]["grants"]) for w in workers}
            if all(served.values()):
                break
        assert all(served.values()), served
        assert sorted(n[-3:] for n in served) == ["-w0", "-w1"]
    finally:
        assert dp.stop() == 0


async def test_sigterm_lets_in_flight_streams_finish(
    cp: ControlPlaneProcess, org: Provisioned, fake_provider: FakeProvider
) -> None:
    dp = start_data_plane(cp.address, cp.node_token, cp.pepper, extra_env={"ODOCK_GRACE_SECONDS": "10"})
    dp.wait_connected()
    release = asyncio.Event()
    fake_provider.knobs.hold_last = release
    call = chat_call("anthropic", "claude", stream=True, key=org.key)
    try:
        async with (
            httpx.AsyncClient(base_url=dp.url, timeout=10) as client,
            client.stream("POST", call.path, content=call.body, headers=call.headers) as resp,
        ):
            chunks = resp.aiter_bytes()
            seen = await anext(chunks)
            dp.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            assert dp.process.poll() is None, "still draining"
            release.set()
            seen += b"".join([c async for c in chunks])
        assert b"message_stop" in seen and fake_provider.last().complete
    finally:
        assert dp.stop() == 0
