"""``--workers N``: N processes share one port; SIGTERM stops them all."""

from __future__ import annotations

import httpx
import pytest

from tests.data_plane.helpers import chat_call, send
from tests.support.dataplane import start_data_plane
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned


@pytest.mark.slow
async def test_two_workers_share_one_port(cp: ControlPlaneProcess, org: Provisioned) -> None:
    dp = start_data_plane(cp.address, cp.node_token, cp.pepper, workers=2)
    try:
        nodes: set[str] = set()
        for _ in range(60):
            # a fresh connection each time: the kernel spreads them over the workers' sockets
            async with httpx.AsyncClient(base_url=dp.url) as client:
                status = (await client.get("/readyz")).json()
                if status["control_plane"] == "connected":
                    nodes.add(status["node_id"])
                    assert (
                        await send(client, chat_call("openai", "gpt-chat", key=org.key))
                    ).status_code == 200
            if len(nodes) == 2:
                break
        assert len(nodes) == 2, nodes
        assert all(n.endswith(("-w0", "-w1")) for n in nodes)
    finally:
        assert dp.stop() == 0
