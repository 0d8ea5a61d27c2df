"""A fake upstream LLM provider: one aiohttp server answering every family in its real wire shapes.

Each family lives under its own prefix so a test can tell which base URL a request used:
``base_url("openai") = URL/openai/v1``, ``base_url("anthropic") = URL/anthropic``,
``base_url("gemini") = URL/gemini``, ``base_url("vllm") = URL/vllm`` (the architecture's
"base + native path" convention holds for each). Unprefixed paths are served too, the family
guessed from the path. Every request is recorded (``.requests``); ``.knobs`` shapes the answer
(delays, chunk count, errors, stalls, resets, redirects) and applies to all requests until changed.
Routing uses the raw request path, never a normalised one, so a path that tries to escape its
slot lands on a 404 that is still recorded.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import parse_qsl, unquote

from aiohttp import web
from multidict import CIMultiDict

from tests.fakes import anthropic_shapes, gemini_shapes, multipart, openai_audio, openai_shapes, vllm_shapes
from tests.fakes.errors import native_error
from tests.fakes.hostile import echo_error, received_key, unterminated
from tests.fakes.openai_files import OpenAIObjects
from tests.fakes.reply import Ask, JsonReply, StreamReply, dumps

FAMILIES = ("openai", "anthropic", "gemini", "vllm")
PREFIXES = {"openai": "/openai", "anthropic": "/anthropic", "gemini": "/gemini", "vllm": "/vllm"}
_FAMILY_BY_ENUM = {1: "openai", 2: "anthropic", 3: "gemini", 4: "vllm"}

Builder = Callable[[Ask], JsonReply | StreamReply]
_OPENAI_COMPATIBLE: dict[tuple[str, str], Builder] = {
    ("POST", "/v1/chat/completions"): openai_shapes.chat,
    ("POST", "/v1/completions"): openai_shapes.completions,
    ("POST", "/v1/responses"): openai_shapes.responses,
    ("POST", "/v1/embeddings"): openai_shapes.embeddings,
    ("GET", "/v1/models"): openai_shapes.models,
}
ROUTES: dict[str, dict[tuple[str, str], Builder]] = {
    "openai": {
        **_OPENAI_COMPATIBLE,
        ("POST", "/v1/images/generations"): openai_shapes.images,
        ("POST", "/v1/images/edits"): openai_shapes.images,
        ("POST", "/v1/images/variations"): openai_shapes.images,
        ("POST", "/v1/audio/transcriptions"): openai_audio.transcriptions,
        ("POST", "/v1/audio/translations"): openai_audio.translations,
        ("POST", "/v1/audio/speech"): openai_audio.speech,
        ("POST", "/v1/moderations"): openai_audio.moderations,
    },
    "anthropic": {("POST", "/v1/messages"): anthropic_shapes.messages},
    "gemini": {},  # matched by _gemini_model (the model is in the path)
    "vllm": {
        **_OPENAI_COMPATIBLE,
        ("POST", "/v1/audio/transcriptions"): vllm_shapes.audio,
        ("POST", "/v1/audio/translations"): vllm_shapes.audio,
        ("POST", "/tokenize"): vllm_shapes.tokenize,
        ("POST", "/detokenize"): vllm_shapes.detokenize,
        ("POST", "/pooling"): vllm_shapes.pooling,
        ("POST", "/classify"): vllm_shapes.classify,
        ("POST", "/score"): vllm_shapes.score,
        ("POST", "/rerank"): vllm_shapes.rerank,
    },
}
_GEMINI_PREFIX = "/v1beta/models/"
_GEMINI_METHODS = (":generateContent", ":streamGenerateContent")


def family_name(family: str | int) -> str:
    """Normalise a family given as a name or as an ``odock.v1.ProviderFamily`` value."""
    name = _FAMILY_BY_ENUM.get(family, "") if isinstance(family, int) else family.lower()
    if name not in FAMILIES:
        raise ValueError(f"unknown provider family {family!r}")
    return name


def prompt_tokens_for(body: bytes) -> int:
    """The fake's deterministic prompt-token count: body bytes // 4 + 1."""
    return len(body) // 4 + 1


@dataclass
class Knobs:
    """How the fake answers. Streams count frames (SSE events / array pieces); plain bodies count bytes."""

    delay_before_headers: float = 0.0
    chunk_delay: float = 0.0
    chunks: int = 3  # generated pieces = completion tokens
    status: int | None = None  # answer this status with a native error body (or error_body)
    status_for: dict[str, int] = field(default_factory=dict)  # by HTTP method: like status, only for it
    error_body: bytes | None = None
    error_content_type: str = "application/json"  # of error_body
    error_message: str = "fake upstream error"
    stall_after: int | None = None  # stop sending (forever) after N frames / bytes
    reset_after: int | None = None  # TCP reset after N frames / bytes
    redirect_to: str | None = None  # answer 307 with this Location
    hold_last: asyncio.Event | None = None  # a stream waits for it before its last piece
    extra_headers: dict[str, str] = field(default_factory=dict)
    # A careless provider repeating the key it received: "body" (in a 401 error's message, also
    # URL-encoded as a key= query), "header" (an X-Echo-Key header on that 401), "stream" (an
    # X-Echo-Key header, and the key in place of the first piece's text, written in two halves).
    echo_key: str | None = None
    unterminated_event: int | None = None  # after the first frame, one event this long that never ends


@dataclass
class RecordedRequest:
    """What the fake received, and how its answer went."""

    method: str
    raw_path: str  # path and query exactly as on the request line
    path: str  # raw path without the query
    query_string: str
    headers: CIMultiDict[str]
    body: bytes
    family: str | None
    native_path: str  # raw path after the family prefix
    model: str | None = None
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    frames_sent: int = 0
    complete: bool = False  # the whole answer was written
    disconnected: bool = False  # the client went away before the answer was complete
    reset_by_fake: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def query(self) -> dict[str, str]:
        """The decoded query parameters (last value wins)."""
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    def form(self) -> list[multipart.Part]:
        """The body parsed as multipart/form-data."""
        return multipart.parse(self.body, self.headers.get("Content-Type", ""))


class FakeProvider:
    """The fake provider server on 127.0.0.1 (port chosen by the OS)."""

    def __init__(self, *, require_keys: bool = False) -> None:
        self.knobs = Knobs()
        self.requests: list[RecordedRequest] = []
        self.require_keys = require_keys
        # A family's route builder in place of the standard ones (the strict translator fakes:
        # tests/fakes/anthropic_messages.py strict_messages, gemini_generate.generate).
        self.builders: dict[str, Builder] = {}
        self.objects = OpenAIObjects()  # OpenAI files and batches (stateful; kept across reset())
        self.secrets = {f: f"fake-{f}-secret-{secrets.token_hex(12)}" for f in FAMILIES}
        self.url = ""
        self._runner: web.ServerRunner | None = None
        self._closing = asyncio.Event()
        self._arrived = asyncio.Condition()

    async def start(self) -> Self:
        """Listen on 127.0.0.1:0."""
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def close(self) -> None:
        """Release stalled answers and stop the server."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def base_url(self, family: str | int) -> str:
        """The base URL a model of ``family`` should be configured with."""
        name = family_name(family)
        return self.url + PREFIXES[name] + ("/v1" if name == "openai" else "")

    def secret(self, family: str | int) -> str:
        """The provider key this fake expects for ``family`` (checked when ``require_keys``)."""
        return self.secrets[family_name(family)]

    def reset(self) -> None:
        """Default knobs and an empty request log."""
        self.knobs = Knobs()
        self.requests.clear()

    def last(self) -> RecordedRequest:
        """The most recent request."""
        return self.requests[-1]

    async def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Wait until at least ``count`` requests have arrived."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.requests) >= count), timeout)
        return list(self.requests)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        # Not request.read(): it caps bodies at aiohttp's 1 MiB default; OpenAI takes 25 MB audio, 512 MB files.
        rec = _record(request, await request.content.read())
        async with self._arrived:
            self.requests.append(rec)
            self._arrived.notify_all()
        try:
            return await self._answer(request, rec)
        except asyncio.CancelledError:
            rec.disconnected = not rec.complete and not rec.reset_by_fake and not self._closing.is_set()
            raise
        except ConnectionResetError:
            rec.disconnected = not rec.reset_by_fake
            return web.Response(status=499)
        finally:
            rec.finished.set()

    async def _answer(self, request: web.BaseRequest, rec: RecordedRequest) -> web.StreamResponse:
        k = self.knobs
        family = rec.family or "openai"
        if self.require_keys and not self._key_ok(family, rec.headers):
            return _error(family, 401, "fake: missing or wrong provider key", k)
        if k.echo_key in ("body", "header"):
            return echo_error(family, rec.headers, k.echo_key, k.extra_headers)
        if k.delay_before_headers and await self._pause(k.delay_before_headers):
            return web.Response(status=503)
        if k.redirect_to is not None:
            return web.Response(status=307, headers={"Location": k.redirect_to, **k.extra_headers})
        if k.status is None and rec.method in k.status_for:
            return _error(family, k.status_for[rec.method], k.error_message, k)
        if k.status is not None:
            if k.error_body is not None:
                return web.Response(status=k.status, body=k.error_body, headers=k.extra_headers,
                                    content_type=k.error_content_type)
            return _error(family, k.status, k.error_message, k)
        try:
            ask = _ask(rec, k.chunks)
        except ValueError as exc:
            return _error(family, 400, f"fake: {exc}", k)
        builder = self.builders.get(family) or _route(family, rec)
        if builder is None and family == "openai":
            builder = self.objects.route(rec.method, rec.native_path, rec.headers)
        if builder is None:
            return _error(family, 404, f"fake: no route for {rec.method} {rec.native_path[:200]}", k)
        rec.model, rec.stream = ask.model, ask.stream
        rec.prompt_tokens, rec.completion_tokens = ask.prompt_tokens, ask.completion_tokens
        reply = builder(ask)
        if isinstance(reply, StreamReply):
            return await self._stream(request, rec, reply)
        return await self._plain(request, rec, reply)

    async def _plain(self, request: web.BaseRequest, rec: RecordedRequest, reply: JsonReply) -> web.StreamResponse:
        k = self.knobs
        body = reply.encode()
        cut = k.stall_after if k.stall_after is not None else k.reset_after
        if cut is None:
            rec.complete = True
            return web.Response(status=reply.status, body=body, content_type=reply.content_type,
                                headers=k.extra_headers)
        resp = web.StreamResponse(status=reply.status, headers=k.extra_headers)
        resp.content_type = reply.content_type
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[:cut])
        await self._cut(request, rec)
        return resp

    async def _stream(self, request: web.BaseRequest, rec: RecordedRequest, reply: StreamReply) -> web.StreamResponse:
        k = self.knobs
        key = received_key(rec.family or "openai", rec.headers).encode() if k.echo_key == "stream" else b""
        echo = {"X-Echo-Key": key.decode()} if key else {}
        resp = web.StreamResponse(headers={**reply.headers, **k.extra_headers, **echo})
        resp.content_type = reply.content_type.split(";")[0]
        if "charset=" in reply.content_type:
            resp.charset = reply.content_type.rsplit("charset=", 1)[1]
        await resp.prepare(request)
        for i, frame in enumerate(reply.frames):
            if i == 1 and k.unterminated_event is not None:
                await unterminated(resp, k.unterminated_event)
                rec.complete = True
                await resp.write_eof()
                return resp
            if i in (k.stall_after, k.reset_after):
                await self._cut(request, rec)
                return resp
            if i == reply.last_piece and k.hold_last is not None and await self._until(k.hold_last):
                return resp
            if i and k.chunk_delay and await self._pause(k.chunk_delay):
                return resp
            if key and b"piece0" in frame:
                frame = frame.replace(b"piece0", key, 1)
                half = frame.index(key) + len(key) // 2
                await resp.write(frame[:half])  # the key split across two writes
                await asyncio.sleep(0.05)
                frame = frame[half:]
            await resp.write(frame)
            rec.frames_sent += 1
        rec.complete = True
        await resp.write_eof()
        return resp

    async def _cut(self, request: web.BaseRequest, rec: RecordedRequest) -> None:
        """Stall until closing (stall_after) or send a TCP RST (reset_after)."""
        if self.knobs.reset_after is None:
            await self._closing.wait()
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rec.reset_by_fake = True
        transport.abort()

    async def _pause(self, seconds: float) -> bool:
        """Sleep; True when the fake is closing meanwhile."""
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _until(self, event: asyncio.Event) -> bool:
        """Wait for ``event``; True when the fake is closing first."""
        closing = asyncio.ensure_future(self._closing.wait())
        released = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({closing, released}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            released.cancel()
        return self._closing.is_set()

    def _key_ok(self, family: str, headers: CIMultiDict[str]) -> bool:
        want = self.secrets[family]
        if family == "anthropic":
            return headers.get("x-api-key") == want
        if family == "gemini":
            return headers.get("x-goog-api-key") == want
        return headers.get("Authorization") == f"Bearer {want}"


def _record(request: web.BaseRequest, body: bytes) -> RecordedRequest:
    raw = request.raw_path
    path, _, query = raw.partition("?")
    family, native = None, path
    for name, prefix in PREFIXES.items():
        if path.startswith(prefix + "/"):
            family, native = name, path[len(prefix):]
            break
    if family is None:
        family = _guess_family(path)
    return RecordedRequest(method=request.method, raw_path=raw, path=path, query_string=query,
                           headers=CIMultiDict(request.headers), body=body, family=family,
                           native_path=native)


def _guess_family(path: str) -> str:
    if path == "/v1/messages":
        return "anthropic"
    if path.startswith(_GEMINI_PREFIX):
        return "gemini"
    if ("POST", path) in ROUTES["vllm"] and ("POST", path) not in ROUTES["openai"]:
        return "vllm"
    return "openai"


def _gemini_model(native_path: str) -> tuple[str, bool] | None:
    if not native_path.startswith(_GEMINI_PREFIX):
        return None
    rest = native_path[len(_GEMINI_PREFIX):]
    for method in _GEMINI_METHODS:
        if rest.endswith(method):
            slug = rest[: -len(method)]
            if slug and "/" not in slug and ":" not in slug:
                return unquote(slug), method == ":streamGenerateContent"
    return None


def _route(family: str, rec: RecordedRequest) -> Builder | None:
    if family == "gemini":
        return gemini_shapes.generate if rec.method == "POST" and _gemini_model(rec.native_path) else None
    return ROUTES[family].get((rec.method, rec.native_path))


def _ask(rec: RecordedRequest, chunks: int) -> Ask:
    payload: dict[str, Any] = {}
    form: list[multipart.Part] = []
    ctype = rec.headers.get("Content-Type", "")
    if ctype.startswith("multipart/"):
        form = rec.form()
    elif rec.body:
        parsed = json.loads(rec.body)
        if not isinstance(parsed, dict):
            raise ValueError("request body must be a JSON object")
        payload = parsed
    model: Any = payload.get("model")
    stream = payload.get("stream") is True
    model_part = multipart.field(form, "model")
    if model_part is not None:
        model = model_part.data.decode("utf-8")
    gemini = _gemini_model(rec.native_path) if rec.family == "gemini" else None
    if gemini is not None:
        model, stream = gemini
    return Ask(family=rec.family or "openai", path=rec.native_path, query=rec.query, body=rec.body,
               payload=payload, form=form, model=model if isinstance(model, str) else "",
               stream=stream, prompt_tokens=prompt_tokens_for(rec.body),
               pieces=tuple(f"piece{i} " for i in range(chunks)))


def _error(family: str, status: int, message: str, k: Knobs) -> web.Response:
    return web.Response(status=status, body=dumps(native_error(family, status, message)),
                        content_type="application/json", headers=k.extra_headers)
