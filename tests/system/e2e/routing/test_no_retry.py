"""A 4xx other than 429 is the request's fault, not the deployment's: relayed, never retried."""

from __future__ import annotations

import pytest

from tests.system.e2e.routing.conftest import MakeUpstream
from tests.system.e2e.routing.stack import Dep, Usage, World, chat, sdk


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_no_retry_on_a_client_error(gateway: str, world: World, upstream: MakeUpstream, usage: Usage,
                                          status: int) -> None:
    first, second = await upstream("first"), await upstream("second")
    await world.model("strict", [Dep(first, priority=0), Dep(second, priority=1)])
    await first.switch("error", status=status, times=1)
    async with sdk(gateway, world.key) as client:
        refused = await chat(client, "strict")
        after = await chat(client, "strict")
    assert refused.status == status
    assert refused.error()["message"] == f"fake first: upstream error {status}"
    assert (refused.deployment, refused.attempts) == ("first", 1)
    assert second.count() == 0
    assert (after.status, after.deployment, after.attempts) == (200, "first", 1)  # not taken out of choice
    rec = (await usage.wait(world.org_id, 2))[refused.request_id]
    assert (rec.deployment, rec.upstream_attempts, rec.http_status) == ("first", 1, status)
