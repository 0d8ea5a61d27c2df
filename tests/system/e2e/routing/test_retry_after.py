"""Retry-After (seconds, HTTP date, OpenAI's reset header; none: the 1 s default) takes a
deployment out of choice for that long on this node, and no other request pays for it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.system.e2e.routing.conftest import RACE_S, MakeUpstream
from tests.system.e2e.routing.stack import Dep, World, sdk, steady

# (mode, status, hint seconds, style, nothing before (s), traffic again by (s)); margins for 2 cores.
CASES: list[Any] = [
    pytest.param("rate_limited", 429, 2, "seconds", 1.7, 3.5, id="429-seconds"),
    # The date is a whole second: 2 s from the next whole second is 2 to 3 s away.
    pytest.param("rate_limited", 429, 2, "date", 1.7, 4.5, id="429-http-date"),
    pytest.param("rate_limited", 429, 2, "openai", 1.7, 3.5, id="429-x-ratelimit-reset-requests"),
    pytest.param("rate_limited", 429, None, "seconds", 0.7, 2.5, id="429-no-hint"),
    pytest.param("error", 503, 2, "seconds", 1.7, 3.5, id="503-seconds"),
]


@pytest.mark.parametrize(("mode", "status", "hint", "style", "quiet", "back_by"), CASES)
async def test_retry_after_is_respected(gateway: str, world: World, upstream: MakeUpstream, mode: Any,
                                        status: int, hint: float | None, style: Any, quiet: float,
                                        back_by: float) -> None:
    limited, other = await upstream("limited"), await upstream("other")
    await world.model("ra", [Dep(limited), Dep(other)])
    await limited.switch(mode, status=status, retry_after=hint, style=style, times=1)

    def back() -> bool:
        told = limited.hits[0].ended if limited.hits else None
        return told is not None and limited.hits[-1].at > told + RACE_S

    async with sdk(gateway, world.key) as client:
        # Until it has had a request after the hint expired (or long after it should have).
        replies = await steady(client, "ra", back_by + 0.7, concurrency=2, pause=0.03, until=back)
    assert {r.status for r in replies} == {200}
    assert limited.hits[0].mode == mode and limited.hits[0].status == status
    told_at = limited.hits[0].ended
    assert told_at is not None
    later = [h.at - told_at for h in limited.hits[1:]]
    assert len([t for t in later if t <= RACE_S]) <= 1  # sent before the answer was read
    later = [t for t in later if t > RACE_S]
    assert later, "never chosen again"
    assert min(later) >= quiet, f"chosen again {min(later):.2f}s after a {hint}s hint"
    assert min(later) <= back_by, f"out of choice for {min(later):.2f}s after a {hint}s hint"
    # Only the request that met the 429/503 made a second attempt.
    assert sorted(r.attempts or 0 for r in replies) == [1] * (len(replies) - 1) + [2]
    assert [r.deployment for r in replies if r.attempts == 2] == ["other"]
