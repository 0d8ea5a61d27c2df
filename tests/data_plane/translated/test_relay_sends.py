"""How a translated stream leaves the node: a stream whose answer was in hand goes out in one send
(head, chunks, the translator's tail and the chunked terminator), and the head never waits on the
upstream's events (no body yet, or only bytes that translate to nothing)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from data_plane.providers import ANTHROPIC, OPENAI, TRANSLATORS
from data_plane.providers.translator import ReplyIds
from data_plane.scrub import secret_for
from data_plane.translated import parse_chat
from data_plane.translated_relay import TranslatedRelay
from data_plane.upstream.response import UpstreamResponse
from data_plane.usage.meter import COMPLETE, RequestMeter
from data_plane.usage.shapes import NO_USAGE
from scripts.benchmark.translatecost import MODEL, PLAIN, anthropic_native
from tests.data_plane.test_relay_transport import FakeTransport, record_sends

pytestmark = pytest.mark.asyncio

IDS = ReplyIds(id="chatcmpl-sends", created=1_700_000_000, model="bench")
_, FRAMES = anthropic_native(PLAIN)
PING = b'event: ping\ndata: {"type": "ping"}\n\n'  # translates to nothing


def anthropic_head(answer: UpstreamResponse) -> None:
    answer.status, answer.reason, answer.content_type = 200, "OK", "text/event-stream"
    answer.raw_headers = [("Content-Type", "text/event-stream")]


def translating(
    make: Callable[[UpstreamResponse], Awaitable[None]],
    meters: list[RequestMeter],
    sends: list[bytes] | None = None,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler that streams PLAIN through the Anthropic translator from ``make``'s answer;
    ``sends`` gets every write to the client's socket."""
    translator = TRANSLATORS[ANTHROPIC]
    chat = parse_chat(orjson.dumps({**PLAIN, "stream": True}))
    call = translator.request(chat, MODEL)

    async def handle(request: web.Request) -> web.StreamResponse:
        if sends is not None:
            record_sends(request, sends)
        meter = RequestMeter(None, request_id="rec-1", node_id="node", org_id="org", key_id="key",
                             family=ANTHROPIC, endpoint="/v1/chat/completions", shape=NO_USAGE)  # fmt: skip
        meters.append(meter)
        relay = TranslatedRelay(request, meter, FakeTransport(make), translator, secret_for(b"sk-ant-sends-0123456789"),
                                first_byte_timeout=10.0, upstream_idle=10.0,
                                deadline=asyncio.get_running_loop().time() + 20.0,
                                max_buffered=1 << 20, max_sse_event=1 << 20)  # fmt: skip
        return await relay.stream("http://upstream.invalid/v1/messages", {}, call, IDS, chat.include_usage)

    return handle


async def serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> TestServer:
    app = web.Application()
    app.router.add_post("/chat", handler)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    return server


def chunks(body: bytes) -> list[dict[str, object]]:
    data = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]
    assert data[-1] == b"[DONE]"
    return [orjson.loads(d) for d in data[:-1]]


async def test_a_translated_stream_that_arrived_whole_goes_out_in_one_send() -> None:
    async def make(answer: UpstreamResponse) -> None:
        anthropic_head(answer)
        for frame in FRAMES:
            answer.feed_data(frame)
        answer.feed_eof()

    meters: list[RequestMeter] = []
    sends: list[bytes] = []
    server = await serve(translating(make, meters, sends))
    try:
        async with httpx.AsyncClient() as client:
            resp = await client.post(str(server.make_url("/chat")), content=b"{}")
    finally:
        await server.close()
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    got = chunks(resp.content)
    assert got[0]["object"] == "chat.completion.chunk" and got[-1]["choices"][0]["finish_reason"]  # type: ignore[index]
    assert len(sends) == 1 and sends[0].startswith(b"HTTP/1.1 200") and sends[0].endswith(b"0\r\n\r\n")
    assert meters[0].outcome == COMPLETE


@pytest.mark.parametrize(
    "first", [b"", PING, FRAMES[0][:10]], ids=["no-body-yet", "a-ping", "a-partial-event"]
)
async def test_a_translated_stream_s_head_never_waits_for_its_upstream_s_events(first: bytes) -> None:
    head_seen = asyncio.Event()
    feeders: list[asyncio.Task[None]] = []
    frames = list(FRAMES)
    if first == FRAMES[0][:10]:
        frames[0] = FRAMES[0][10:]

    async def feed(answer: UpstreamResponse) -> None:
        await head_seen.wait()  # nothing more until the client has the status and headers
        for frame in frames:
            answer.feed_data(frame)
        answer.feed_eof()

    async def make(answer: UpstreamResponse) -> None:
        anthropic_head(answer)
        if first:
            answer.feed_data(first)
        feeders.append(asyncio.create_task(feed(answer)))

    meters: list[RequestMeter] = []
    server = await serve(translating(make, meters))
    try:
        async with asyncio.timeout(10):  # a head waiting for the events would never come
            async with (
                httpx.AsyncClient() as client,
                client.stream("POST", str(server.make_url("/chat"))) as resp,
            ):
                assert resp.status_code == 200
                head_seen.set()
                body = await resp.aread()
    finally:
        head_seen.set()
        await server.close()
    await feeders[0]
    assert chunks(body)[-1]["choices"][0]["finish_reason"]  # type: ignore[index]
    assert meters[0].outcome == COMPLETE and meters[0].family == ANTHROPIC != OPENAI
