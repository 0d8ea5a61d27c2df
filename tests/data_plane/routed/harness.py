"""The attempt loop served for real (aiohttp on 127.0.0.1, read with httpx) over a scripted fake transport.

Each deployment is a host (``http://<name>.invalid``); the fake answers each call to a host with
the next step of that host's script: an answer (status, headers, body chunks, optionally cut),
a refusal, or a hang. The handler is the native path's tail: a ``NativeLeg`` per route and
``attempts.run``, the exchange's headers stamped by the app's own ``stamp_headers``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from data_plane import attempts
from data_plane.app import stamp_headers
from data_plane.errors import GatewayError, render
from data_plane.exchange import EXCHANGE, Exchange
from data_plane.governance.domain import Deployment, Pricing, Route
from data_plane.native_leg import NativeLeg
from data_plane.payload import inspect_json
from data_plane.providers import DIALECTS, OPENAI, endpoint_named
from data_plane.relay import Relay
from data_plane.routing import Health
from data_plane.settings import RoutingSettings
from data_plane.upstream.body import BodySource
from data_plane.upstream.errors import UpstreamBroken
from data_plane.upstream.network import Network
from data_plane.upstream.response import UpstreamResponse
from data_plane.usage.meter import ERROR, RequestMeter
from data_plane.usage.shapes import NO_USAGE

CHAT = endpoint_named("/v1/chat/completions")
OK_BODY = b'{"id": "x", "choices": []}'


@dataclass
class Step:
    """What one call to a host gets."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    chunks: tuple[bytes, ...] = (OK_BODY,)
    refuse: bool = False  # connection refused: no answer
    hang: bool = False  # no head ever
    cut: bool = False  # the body breaks after the chunks


@dataclass
class Call:
    host: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    tenant: str
    network: Network | None


class Source:
    paused = False

    def resume(self) -> None:
        pass

    def finished(self, clean: bool) -> None:
        pass


class ScriptedTransport:
    """Answers each host with its script's next step (the last step repeats)."""

    def __init__(self, scripts: Mapping[str, list[Step]]) -> None:
        self.scripts = {host: list(steps) for host, steps in scripts.items()}
        self.calls: list[Call] = []

    def hosts(self) -> list[str]:
        return [c.host for c in self.calls]

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | BodySource | None = None, *,
        tenant: str = "", network: Network | None = None,
    ) -> UpstreamResponse:  # fmt: skip
        host = urlsplit(url).hostname or ""
        if body is not None and not isinstance(body, bytes):  # a streamed body: recorded whole
            body = b"".join([piece async for piece in body.chunks()])
        self.calls.append(Call(host.removesuffix(".invalid"), url, dict(headers), body, tenant, network))
        steps = self.scripts[host.removesuffix(".invalid")]
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if step.refuse:
            raise ConnectionRefusedError("refused")
        if step.hang:
            await asyncio.sleep(3600)
        answer = UpstreamResponse(Source())
        answer.status, answer.reason = step.status, "X"
        answer.raw_headers = list(step.headers)
        answer.content_type = {k.lower(): v for k, v in step.headers}.get("content-type", "application/json")
        for chunk in step.chunks:
            answer.feed_data(chunk)
        if step.cut:
            answer.set_exception(UpstreamBroken("cut"))
        else:
            answer.feed_eof()
        return answer


def dep(name: str, *, priority: int = 0, weight: int = 1, timeout: float = 5.0, slug: str = "") -> Deployment:
    return Deployment(name, f"http://{name}.invalid", slug or f"slug-{name}", timeout, f"cred_{name}",
                      f"sk-{name}-0123456789abcdef".encode(), weight, priority)  # fmt: skip


def route(name: str, *deps: Deployment, fallbacks: tuple[str, ...] = (), price: int = 0) -> Route:
    first = deps[0]
    return Route("org", f"mdl_{name}", name, OPENAI, first.upstream_slug, first.base_url, first.timeout, True,
                 first.credential_id, first.secret, Pricing(price, price), deployments=deps,
                 fallbacks=fallbacks)  # fmt: skip


@dataclass
class Served:
    url: str
    meters: list[RequestMeter] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)


Fallbacks = Mapping[str, Route | None]


@dataclass
class Harness:
    transport: ScriptedTransport
    health: Health
    settings: RoutingSettings
    served: Served


def handler(
    transport: ScriptedTransport, health: Health, settings: RoutingSettings, primary: Route,
    fallbacks: Fallbacks, served: Served, total: float,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:  # fmt: skip
    dialect = DIALECTS[OPENAI]

    async def handle(request: web.Request) -> web.StreamResponse:
        ex = Exchange("rec-1", "rec-1", "", CHAT, 0.0)
        request[EXCHANGE] = ex
        meter = RequestMeter(None, request_id="rec-1", node_id="n", org_id="org", key_id="k", family=OPENAI,
                             endpoint=CHAT.name, shape=NO_USAGE)  # fmt: skip
        meter.model_name, meter.pricing = primary.model_name, primary.pricing
        ex.meter = meter
        served.meters.append(meter)
        served.exchanges.append(ex)
        body = await request.read()
        facts = inspect_json(body)
        deadline = asyncio.get_running_loop().time() + total
        relay = Relay(request, meter, family=OPENAI, upstream_idle=10.0, deadline=deadline, max_buffered=1 << 16)

        def leg(r: Route) -> NativeLeg:
            return NativeLeg(request, relay, transport, r, CHAT, dialect, body, facts=facts, form_facts=None,
                             content_type="", streaming=bool(facts.stream), inject=False, idle=10.0,
                             shape=NO_USAGE)  # fmt: skip

        async def fallback(name: str) -> NativeLeg | None:
            found = fallbacks.get(name)
            return None if found is None else leg(found)

        try:
            return await attempts.run(ex, meter, health, settings, leg(primary), deadline, fallback)
        except GatewayError as err:
            meter.settle(err.status, ERROR, err.code)
            return render(OPENAI, err)

    return handle


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    servers: list[TestServer] = []

    async def start(
        scripts: Mapping[str, list[Step]], primary: Route, *, fallbacks: Fallbacks | None = None,
        max_attempts: int = 4, total: float = 30.0, health: Health | None = None,
    ) -> Harness:  # fmt: skip
        transport = ScriptedTransport(scripts)
        settings = RoutingSettings(max_attempts=max_attempts)
        health = health or Health(settings)
        served = Served("")
        app = web.Application()
        app.on_response_prepare.append(stamp_headers)
        app.router.add_post(
            "/v1/chat/completions", handler(transport, health, settings, primary, fallbacks or {}, served, total)
        )
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        served.url = str(server.make_url("/v1/chat/completions"))
        return Harness(transport, health, settings, served)

    yield start
    for server in servers:
        await server.close()
