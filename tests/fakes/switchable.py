"""Fake upstreams switchable at run time, for the routing tests (issue 14: several deployments).

Each ``SwitchableUpstream`` is one deployment's server on its own 127.0.0.1 port. It speaks
OpenAI chat completions (``family="openai"``, base URL ``url + "/v1"``) or Anthropic messages
(``family="anthropic"``, base URL ``url``), answering healthy requests with the shapes of
``tests/fakes/openai_shapes.py`` / ``anthropic_messages.strict_messages``, and validating like
the real API: its own provider key (401), its own model slug (404 ``model_not_found`` /
``not_found_error``, so a deployment sent another's slug shows), a well-formed body (400).

``await up.switch(mode, ...)`` changes how it answers from the next request on:

- ``healthy``;
- ``error``: ``status`` (500, 502, 503, 504, 529, or a 4xx) with the family's error body
  (and a reset hint when ``retry_after`` is given, as for ``rate_limited``);
- ``rate_limited``: 429 with a reset hint of ``retry_after`` seconds (None: no hint) in
  ``style``: ``seconds`` (``Retry-After: N``), ``date`` (``Retry-After: <HTTP date>``, rounded
  up to a whole second), ``openai`` (``x-ratelimit-reset-requests: Ns``, no Retry-After) or
  ``anthropic`` (``anthropic-ratelimit-requests-reset: <RFC 3339 time>``, rounded up likewise,
  no Retry-After);
- ``hang``: never answers the head (until the client goes away);
- ``reset``: reads the request, then a TCP reset instead of an answer;
- ``reset_after_first_chunk``: the head and the first chunk, then a TCP reset;
- ``refused``: the listening socket closed and open connections reset, so connects are
  refused; switching to any other mode listens again on the same port.

``times=N`` goes back to ``healthy`` after N requests in that mode. Every request that reaches
the handler is recorded as a ``Hit`` (mode at arrival, ``time.monotonic()`` at arrival and end).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import secrets
import socket
import struct
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Self

from aiohttp import web

from tests.fakes import openai_shapes
from tests.fakes.anthropic_messages import strict_messages
from tests.fakes.errors import native_error
from tests.fakes.provider import prompt_tokens_for
from tests.fakes.reply import Ask, JsonReply, StreamReply, dumps

Mode = Literal["healthy", "error", "rate_limited", "hang", "reset", "reset_after_first_chunk", "refused"]
Style = Literal["seconds", "date", "openai", "anthropic"]
Family = Literal["openai", "anthropic"]
_PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
PIECES = ("piece0 ", "piece1 ", "piece2 ")
# Long enough for the reader on the other side to take the first chunk before the reset
# (a reset may discard what the receiver has not read yet).
_RESET_PAUSE_S = 0.1


@dataclass
class Hit:
    """One request the upstream received."""

    at: float  # time.monotonic() when its head arrived
    mode: str
    model: str | None = None
    stream: bool = False
    status: int = 0  # the status answered (0: none: hang, reset, refused)
    cut: bool = False  # reset by the fake
    ended: float | None = None  # time.monotonic() when the handler finished
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _State:
    mode: Mode = "healthy"
    status: int = 500
    retry_after: float | None = None
    style: Style = "seconds"
    left: int | None = None  # requests left in this mode (None: until switched)


@dataclass
class SwitchableUpstream:
    """One fake deployment. ``async with SwitchableUpstream("a", "gpt-a") as up: ...``."""

    name: str
    slug: str
    family: Family = "openai"
    secret: str = field(default_factory=lambda: f"sw-secret-{secrets.token_hex(12)}")
    hits: list[Hit] = field(default_factory=list)
    port: int = 0
    _state: _State = field(default_factory=_State)
    _server: web.Server | None = None
    _listener: asyncio.AbstractServer | None = None
    _closing: asyncio.Event = field(default_factory=asyncio.Event)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What a deployment's ``base_url`` is set to (the family's SDK convention)."""
        return self.url + ("/v1" if self.family == "openai" else "")

    @property
    def mode(self) -> Mode:
        return self._state.mode

    async def start(self) -> Self:
        self._server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        await self._listen()
        return self

    async def close(self) -> None:
        self._closing.set()
        self._unlisten()
        if self._server is not None:
            await self._server.shutdown(1.0)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def switch(self, mode: Mode, *, status: int | None = None, retry_after: float | None = None,
                     style: Style = "seconds", times: int | None = None) -> None:
        """Answer the next requests per ``mode`` (see the module docstring)."""
        if mode == "error" and status is None:
            status = 500
        self._state = _State(mode=mode, status=429 if mode == "rate_limited" else status or 500,
                             retry_after=retry_after, style=style, left=times)
        if mode == "refused":
            self._unlisten()
        elif self._listener is None:
            await self._listen()

    # -- what was received ---------------------------------------------------------------

    def count(self, mode: str | None = None, *, since: float | None = None, until: float | None = None) -> int:
        """Requests received (in ``mode``; arrived in [since, until))."""
        return len(self.between(since, until, mode))

    def between(self, since: float | None = None, until: float | None = None, mode: str | None = None) -> list[Hit]:
        return [h for h in self.hits if (mode is None or h.mode == mode)
                and (since is None or h.at >= since) and (until is None or h.at < until)]

    def max_in_flight(self, since: float | None = None) -> int:
        """The most requests handled at once among those arrived since ``since``."""
        hits = self.between(since)
        edges = sorted([(h.at, 1) for h in hits] + [(h.ended if h.ended is not None else math.inf, -1)
                                                     for h in hits], key=lambda e: (e[0], e[1]))
        peak = now = 0
        for _, step in edges:
            now += step
            peak = max(peak, now)
        return peak

    async def wait_for_hits(self, count: int, timeout: float = 5.0) -> None:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.hits) >= count), timeout)

    # -- serving -------------------------------------------------------------------------

    async def _listen(self) -> None:
        assert self._server is not None
        loop = asyncio.get_running_loop()
        # SO_REUSEADDR: listen again on the same port while old connections sit in TIME_WAIT.
        self._listener = await loop.create_server(self._server, "127.0.0.1", self.port, reuse_address=True)
        self.port = int(self._listener.sockets[0].getsockname()[1])

    def _unlisten(self) -> None:
        """Stop accepting and reset open connections (a dead server: refused, pooled ones broken)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._server is not None:
            for handler in self._server.connections:
                if handler.transport is not None:
                    _reset(handler.transport)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        state = self._state
        hit = Hit(at=time.monotonic(), mode=state.mode)
        if state.left is not None:
            state.left -= 1
            if state.left <= 0:
                self._state = _State()
        async with self._arrived:
            self.hits.append(hit)
            self._arrived.notify_all()
        try:
            resp = await self._answer(request, state, hit)
            hit.status = 0 if hit.cut or state.mode == "hang" else resp.status
            return resp
        finally:
            hit.ended = time.monotonic()

    async def _answer(self, request: web.BaseRequest, state: _State, hit: Hit) -> web.StreamResponse:
        hit.headers = {k.lower(): v for k, v in request.headers.items()}
        hit.body = body = await request.read()
        if state.mode in ("refused", "reset"):  # refused: arrived on a connection accepted just before
            hit.cut = True
            if request.transport is not None:
                _reset(request.transport)
            return web.Response(status=499)
        if state.mode == "hang":
            await self._closing.wait()
            return web.Response(status=503)
        if state.mode == "error":
            return self._error(state.status, f"fake {self.name}: upstream error {state.status}", _reset_hint(state))
        if state.mode == "rate_limited":
            return self._error(429, f"fake {self.name}: rate limit reached", _reset_hint(state))
        if request.method != "POST" or request.raw_path.split("?")[0] != self._path:
            return self._error(404, f"fake {self.name}: no route for {request.method} {request.raw_path[:200]}")
        problem, status, ask = self._validate(request, body)
        if ask is None:
            return self._error(status, problem)
        hit.model, hit.stream = ask.model, ask.stream
        reply = openai_shapes.chat(ask) if self.family == "openai" else strict_messages(ask)
        if isinstance(reply, JsonReply) and reply.status != 200:
            return web.Response(status=reply.status, body=reply.encode(), content_type=reply.content_type)
        if state.mode == "reset_after_first_chunk":
            hit.cut = True
            return await self._cut(request, reply)
        if isinstance(reply, JsonReply):
            return web.Response(status=200, body=reply.encode(), content_type=reply.content_type)
        resp = web.StreamResponse(status=200, headers={"Content-Type": reply.content_type})
        await resp.prepare(request)
        for frame in reply.frames:
            await resp.write(frame)
        await resp.write_eof()
        return resp

    @property
    def _path(self) -> str:
        return _PATHS[self.family]

    def _validate(self, request: web.BaseRequest, body: bytes) -> tuple[str, int, Ask | None]:
        """(problem, status, None) when the real API would refuse the request, else the Ask."""
        if not self._key_ok(request):
            return f"fake {self.name}: missing or wrong provider key", 401, None
        try:
            payload: Any = json.loads(body)
        except ValueError:
            return "We could not parse the JSON body of your request.", 400, None
        if not isinstance(payload, dict):
            return "request body must be a JSON object", 400, None
        model = payload.get("model")
        if model != self.slug:
            return f"The model `{str(model)[:100]}` does not exist or you do not have access to it.", 404, None
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages: expected a non-empty array", 400, None
        stream = payload.get("stream") is True
        if self.family == "openai" and "stream_options" in payload and not stream:
            return "The 'stream_options' parameter is only allowed when 'stream' is enabled.", 400, None
        return "", 200, Ask(family=self.family, path=self._path, query={}, body=body, payload=payload, form=[],
                            model=self.slug, stream=stream, prompt_tokens=prompt_tokens_for(body), pieces=PIECES)

    def _key_ok(self, request: web.BaseRequest) -> bool:
        bearer = request.headers.get("Authorization") == f"Bearer {self.secret}"
        if self.family == "anthropic":  # x-api-key, or the bearer form the current SDK sends
            return request.headers.get("x-api-key") == self.secret or bearer
        return bearer

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(status=status, body=dumps(native_error(self.family, status, message)),
                            content_type="application/json", headers=headers)

    async def _cut(self, request: web.BaseRequest, reply: JsonReply | StreamReply) -> web.StreamResponse:
        """The head and the first chunk (the first two SSE events, or half a JSON body), then a reset."""
        if isinstance(reply, StreamReply):
            first, ctype = b"".join(reply.frames[:2]), reply.content_type
        else:
            whole = reply.encode()
            first, ctype = whole[: len(whole) // 2], reply.content_type
        resp = web.StreamResponse(status=200, headers={"Content-Type": ctype})
        if isinstance(reply, JsonReply):
            resp.content_length = len(reply.encode())
        await resp.prepare(request)
        await resp.write(first)
        await asyncio.sleep(_RESET_PAUSE_S)
        if request.transport is not None:
            _reset(request.transport)
        return resp


def _reset_hint(state: _State) -> dict[str, str]:
    seconds = state.retry_after
    if seconds is None:
        return {}
    if state.style == "seconds":
        return {"Retry-After": f"{seconds:g}"}
    if state.style == "date":
        return {"Retry-After": email.utils.formatdate(math.ceil(time.time()) + seconds, usegmt=True)}
    if state.style == "openai":
        return {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{seconds:g}s"}
    reset = datetime.fromtimestamp(math.ceil(time.time()) + seconds, UTC)  # "anthropic"
    return {"anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ")}


def _reset(transport: asyncio.BaseTransport) -> None:
    """Close with a TCP RST (SO_LINGER 0), not a FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if isinstance(transport, asyncio.Transport):
        transport.abort()
    else:
        transport.close()
