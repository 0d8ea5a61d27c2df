"""The upstream the gateway's OpenAI models point at: Prism (OpenAI's spec), with a programmable front.

Every request the gateway sends goes to Prism, which validates it against OpenAI's spec (an
invalid one gets Prism's 4xx, relayed as is). A few generated tests (speech, file content) mock
their answer on the client side with respx; run through the gateway, they program the same
answer here instead (``POST /__front/program``), so it comes from the upstream and crosses the
gateway: it replaces Prism's answer only when Prism accepted the request.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

CONTROL = "/__front/program"
OWN = "/__front/own"  # before each test: the harness records the tests' literal ids as the org's again
# Hop-by-hop and framing headers: aiohttp sets its own.
_DROP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}
)


@dataclass(frozen=True)
class Programmed:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass
class Front:
    prism_url: str
    own: Callable[[], Awaitable[None]] | None = None
    programs: dict[tuple[str, str], Programmed] = field(default_factory=dict)
    seen: Counter[tuple[str, str, int]] = field(default_factory=Counter)  # (method, path, status) relayed
    _session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("POST", CONTROL, self._program)
        app.router.add_route("DELETE", CONTROL, self._clear)
        app.router.add_route("POST", OWN, self._own)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def _program(self, request: web.Request) -> web.Response:
        spec = await request.json()
        self.programs[(str(spec["method"]).upper(), str(spec["path"]))] = Programmed(
            status=int(spec["status"]),
            headers=tuple((str(k), str(v)) for k, v in spec["headers"]),
            body=base64.b64decode(spec["body"]),
        )
        return web.Response(status=204)

    async def _clear(self, _request: web.Request) -> web.Response:
        self.programs.clear()
        return web.Response(status=204)

    async def _own(self, _request: web.Request) -> web.Response:
        if self.own is not None:
            await self.own()
        return web.Response(status=204)

    async def _ask_prism(self, request: web.Request, headers: dict[str, str],
                         body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:  # fmt: skip
        assert self._session is not None
        async with self._session.request(request.method, self.prism_url + request.path_qs, headers=headers,
                                         data=body, allow_redirects=False) as upstream:  # fmt: skip
            out_headers = [(k, v) for k, v in upstream.headers.items() if k.lower() not in _DROP]
            return upstream.status, out_headers, await upstream.read()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        body = await request.read()
        status, out_headers, data = await self._ask_prism(request, headers, body)
        if status == 406:
            # Prism's content negotiation, not a request check: the SDK asks for file content with
            # `Accept: application/binary`, a type the spec's example is not in; OpenAI answers it.
            headers = {k: v for k, v in headers.items() if k.lower() != "accept"} | {"Accept": "*/*"}
            status, out_headers, data = await self._ask_prism(request, headers, body)
        program = self.programs.get((request.method, request.path))
        if program is not None and status < 400:
            status, out_headers, data = program.status, list(program.headers), program.body
        self.seen[(request.method, request.path, status)] += 1
        resp = web.Response(status=status, body=data)
        for k, v in out_headers:
            resp.headers.add(k, v)
        return resp
