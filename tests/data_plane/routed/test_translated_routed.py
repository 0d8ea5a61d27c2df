"""Translated requests (OpenAI format to an Anthropic model) through the attempt loop: retried across
deployments and translated for each, a fan-out kept on one deployment, a translated fallback."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any, cast

import httpx
import orjson
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from data_plane import attempts, translated
from data_plane.app import stamp_headers
from data_plane.errors import GatewayError, render
from data_plane.exchange import EXCHANGE, Exchange
from data_plane.governance.domain import Route
from data_plane.native_leg import NativeLeg
from data_plane.payload import inspect_json
from data_plane.providers import ANTHROPIC, DIALECTS, GEMINI, OPENAI
from data_plane.relay import Relay
from data_plane.routing import Health
from data_plane.settings import Settings
from data_plane.state import NodeState
from data_plane.usage.meter import ERROR, FLAG_TRANSLATED, RequestMeter
from data_plane.usage.shapes import NO_USAGE
from tests.data_plane.routed.harness import CHAT, ScriptedTransport, Step, dep, route

ENV = {"ODOCK_NODE_TOKEN": "node-" + "t" * 40, "ODOCK_KEY_PEPPER": base64.b64encode(b"p" * 32).decode()}
MESSAGE = orjson.dumps({
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
    "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 2},
})  # fmt: skip
OVERLOADED = Step(529, chunks=(b'{"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}',))


def claude(name: str, *deps: Any, fallbacks: tuple[str, ...] = ()) -> Route:
    return dataclasses.replace(route(name, *deps, fallbacks=fallbacks), family=ANTHROPIC, openai_compatible=True)


@dataclasses.dataclass
class Served:
    url: str
    transport: ScriptedTransport
    meters: list[RequestMeter]


Start = Callable[..., Awaitable[Served]]


@pytest_asyncio.fixture
async def start() -> AsyncIterator[Start]:
    servers: list[TestServer] = []

    async def run(scripts: dict[str, list[Step]], primary: Route, fallbacks: dict[str, Route] | None = None) -> Served:
        transport = ScriptedTransport(scripts)
        settings = Settings.from_env(ENV)
        state = cast(NodeState, SimpleNamespace(settings=settings, transport=transport,
                                                health=Health(settings.routing)))  # fmt: skip
        meters: list[RequestMeter] = []

        async def handle(request: web.Request) -> web.StreamResponse:
            ex = request[EXCHANGE] = Exchange("rec-1", "rec-1", "", CHAT, 0.0)
            ex.meter = meter = RequestMeter(None, request_id="rec-1", node_id="n", org_id="org", key_id="k",
                                            family=primary.family, endpoint=CHAT.name, shape=NO_USAGE)  # fmt: skip
            meters.append(meter)
            body = await request.read()
            deadline = asyncio.get_running_loop().time() + 30
            try:
                if primary.family != OPENAI:
                    translator = translated.translator_for(primary)
                    assert translator is not None
                    return await translated.serve(request, ex, state, meter, primary, translator, body, deadline)
                relay = Relay(request, meter, family=OPENAI, upstream_idle=10, deadline=deadline, max_buffered=1 << 16)
                leg = NativeLeg(request, relay, transport, primary, CHAT, DIALECTS[OPENAI], body,
                                facts=inspect_json(body), form_facts=None, content_type="", streaming=False,
                                inject=False, idle=10, shape=NO_USAGE)  # fmt: skip

                async def fallback(name: str) -> attempts.Leg | None:
                    found = (fallbacks or {})[name]
                    return translated.fallback_leg(request, ex, state, meter, found, body, deadline)

                return await attempts.run(ex, meter, state.health, settings.routing, leg, deadline, fallback)
            except GatewayError as err:
                meter.settle(err.status, ERROR, err.code)
                return render(OPENAI, err)

        app = web.Application()
        app.on_response_prepare.append(stamp_headers)
        app.router.add_post("/v1/chat/completions", handle)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return Served(str(server.make_url("/v1/chat/completions")), transport, meters)

    yield run
    for server in servers:
        await server.close()


async def post(served: Served, **extra: Any) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(served.url, content=orjson.dumps(body))


async def test_a_translated_request_is_retried_and_translated_for_each_deployment(start: Start) -> None:
    served = await start({"a": [OVERLOADED], "b": [Step(chunks=(MESSAGE,))]},
                         claude("m", dep("a"), dep("b", priority=1)))  # fmt: skip
    resp = await post(served)
    assert resp.status_code == 200, resp.text
    assert resp.json()["object"] == "chat.completion"
    assert resp.json()["choices"][0]["message"]["content"] == "hello"
    assert served.transport.hosts() == ["a", "b"]
    second = served.transport.calls[1]
    assert second.url == "http://b.invalid/v1/messages" and second.headers["x-api-key"] == "sk-b-0123456789abcdef"
    assert orjson.loads(second.body or b"{}")["model"] == "slug-b"
    assert resp.headers["x-odock-attempts"] == "2" and resp.headers["x-odock-deployment"] == "b"


async def test_every_translated_deployment_failing_gives_the_last_error_in_openai_shape(start: Start) -> None:
    limited = Step(429, headers=(("Content-Type", "application/json"), ("Retry-After", "7")),
                   chunks=(b'{"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}',))
    served = await start({"a": [OVERLOADED], "b": [limited]}, claude("m", dep("a"), dep("b", priority=1)))
    resp = await post(served)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "7"
    assert resp.json()["error"]["message"] == "slow down"  # OpenAI's shape, the provider's words
    assert served.transport.hosts() == ["a", "b"]


async def test_a_fan_out_stays_on_one_deployment_and_is_not_retried(start: Start) -> None:
    served = await start({"a": [OVERLOADED], "b": [Step(chunks=(MESSAGE,))]},
                         claude("m", dep("a"), dep("b", priority=1)))  # fmt: skip
    resp = await post(served, n=2)
    assert resp.status_code == 503  # the translator's rendering of Anthropic's 529 overloaded
    assert served.transport.hosts() == ["a", "a"]  # n calls, one deployment, no retry on b
    assert resp.headers["x-odock-attempts"] == "1" and resp.headers["x-odock-deployment"] == "a"


async def test_a_native_model_falls_back_to_a_translated_one(start: Start) -> None:
    primary = route("m", dep("a"), fallbacks=("claude",))
    served = await start({"a": [Step(500, chunks=(b"{}",))], "c": [Step(chunks=(MESSAGE,))]}, primary,
                         {"claude": claude("claude", dep("c"))})  # fmt: skip
    resp = await post(served)
    assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"] == "hello"
    assert served.transport.hosts() == ["a", "c"] and served.transport.calls[1].url == "http://c.invalid/v1/messages"
    assert resp.headers["x-odock-model"] == "claude"
    meter = served.meters[0]
    assert (meter.family, meter.model_name, meter.requested_model) == (ANTHROPIC, "claude", "m")
    assert meter.flags & FLAG_TRANSLATED


GEMINI_ANSWER = orjson.dumps({
    "candidates": [{"content": {"parts": [{"text": "hello"}], "role": "model"}, "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5},
})  # fmt: skip


async def test_a_gemini_retry_puts_the_next_deployments_slug_in_the_path(start: Start) -> None:
    gemini = dataclasses.replace(claude("m", dep("a"), dep("b", priority=1)), family=GEMINI)
    served = await start({"a": [Step(503, chunks=(b'{"error": {"code": 503, "message": "x", "status": "UNAVAILABLE"}}',))],
                          "b": [Step(chunks=(GEMINI_ANSWER,))]}, gemini)  # fmt: skip
    resp = await post(served)
    assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"] == "hello"
    assert [c.url for c in served.transport.calls] == [
        "http://a.invalid/v1beta/models/slug-a:generateContent",
        "http://b.invalid/v1beta/models/slug-b:generateContent",
    ]
    assert served.transport.calls[1].headers["x-goog-api-key"] == "sk-b-0123456789abcdef"
