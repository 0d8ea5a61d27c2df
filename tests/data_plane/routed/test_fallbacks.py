"""Fallback models in the attempt loop: tried in order once the model's deployments failed, skipped
when not servable, never followed further; what the answer and the record say; which routes qualify."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, cast

import httpx

from data_plane.governance.domain import ControlPlaneUnavailable, KeyGrant, Route, RouteUnusable
from data_plane.native import fallback_route
from data_plane.state import NodeState
from data_plane.usage.meter import COMPLETE
from tests.data_plane.routed.harness import Harness, Step, dep, route

Serve = Callable[..., Awaitable[Harness]]
BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
ERR_500 = Step(500, chunks=(b'{"error": {"message": "boom"}}',))


async def post(h: Harness) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(h.served.url, content=BODY)


async def test_fallbacks_are_tried_in_order_skipping_those_that_cannot_serve(serve: Serve) -> None:
    primary = route("m", dep("a"), fallbacks=("gone", "other", "good"), price=1)
    fallbacks = {"gone": None, "other": route("other", dep("x")), "good": route("good", dep("g"), price=7)}
    h = await serve({"a": [ERR_500], "x": [ERR_500], "g": [Step()]}, primary, fallbacks=fallbacks)
    resp = await post(h)
    assert resp.status_code == 200 and h.transport.hosts() == ["a", "x", "g"]
    assert b'"model": "slug-g"' in (h.transport.calls[2].body or b"")
    assert resp.headers["x-odock-model"] == "good" and resp.headers["x-odock-deployment"] == "g"
    assert resp.headers["x-odock-attempts"] == "3"
    meter = h.served.meters[0]
    assert (meter.model_name, meter.requested_model, meter.pricing.input_per_mtok_micros) == ("good", "m", 7)
    assert (meter.status, meter.outcome) == (200, COMPLETE)
    record = meter.record()
    assert (record.model_name, record.requested_model, record.deployment, record.upstream_attempts) == (
        "good", "m", "g", 3,
    )  # fmt: skip


async def test_a_fallbacks_own_fallbacks_are_not_followed(serve: Serve) -> None:
    primary = route("m", dep("a"), fallbacks=("other",))
    fallbacks = {"other": route("other", dep("x"), fallbacks=("third",)), "third": route("third", dep("t"))}
    h = await serve({"a": [ERR_500], "x": [Step(503, chunks=(b'{"from": "x"}',))], "t": [Step()]}, primary,
                    fallbacks=fallbacks)  # fmt: skip
    resp = await post(h)
    assert h.transport.hosts() == ["a", "x"]
    assert resp.status_code == 503 and resp.json() == {"from": "x"}  # the last answer, from the fallback
    assert resp.headers["x-odock-model"] == "other"


async def test_fallbacks_count_toward_the_attempt_bound(serve: Serve) -> None:
    primary = route("m", dep("a"), dep("b", priority=1), fallbacks=("other",))
    h = await serve({"a": [ERR_500], "b": [ERR_500], "x": [Step()]}, primary,
                    fallbacks={"other": route("other", dep("x"))}, max_attempts=2)  # fmt: skip
    resp = await post(h)
    assert resp.status_code == 500 and h.transport.hosts() == ["a", "b"]
    assert "x-odock-model" not in resp.headers
    meter = h.served.meters[0]
    assert (meter.model_name, meter.requested_model) == ("m", "")


async def test_a_non_retryable_answer_does_not_reach_the_fallbacks(serve: Serve) -> None:
    primary = route("m", dep("a"), fallbacks=("other",))
    h = await serve({"a": [Step(404, chunks=(b"{}",))], "x": [Step()]}, primary,
                    fallbacks={"other": route("other", dep("x"))})  # fmt: skip
    assert (await post(h)).status_code == 404 and h.transport.hosts() == ["a"]


class Cache:
    def __init__(self, routes: dict[str, Route | Exception | None]) -> None:
        self.routes = routes
        self.asked: list[str] = []

    async def route(self, org_id: str, name: str) -> Route | None:
        self.asked.append(name)
        found = self.routes.get(name)
        if isinstance(found, Exception):
            raise found
        return found


async def test_fallback_route_skips_missing_disabled_forbidden_and_unusable() -> None:
    good = route("good", dep("g"))
    disabled = Route(**{**{f: getattr(good, f) for f in good.__slots__}, "enabled": False, "model_name": "off"})
    cache = Cache({"good": good, "off": disabled, "nope": None, "cp": ControlPlaneUnavailable("x"),
                   "sealed": RouteUnusable("x"), "secret": good})  # fmt: skip
    state = cast(NodeState, SimpleNamespace(cache=cache))
    grant = KeyGrant("org", "acme", "key", False, frozenset({"good", "off", "nope", "cp", "sealed"}), None, {}, False)
    found: dict[str, Any] = {n: await fallback_route(state, grant, n) for n in
                             ("good", "off", "nope", "cp", "sealed", "secret", "bad/name")}  # fmt: skip
    assert found == {"good": good, "off": None, "nope": None, "cp": None, "sealed": None, "secret": None,
                     "bad/name": None}  # fmt: skip
    assert "secret" not in cache.asked and "bad/name" not in cache.asked  # the key's permission first
