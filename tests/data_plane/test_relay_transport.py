"""The relay's seam: a fake ``Transport`` drives ``Relay.forward``, so the relay needs nothing of the pool.

The fake answers through ``UpstreamResponse``'s public feed API, as the pool's connections do;
the relay is served by a real aiohttp server on 127.0.0.1 and read with httpx.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from data_plane.errors import GatewayError
from data_plane.providers import OPENAI
from data_plane.relay import Relay, Trip
from data_plane.scrub import secret_for
from data_plane.upstream.body import BodySource
from data_plane.upstream.errors import UpstreamUnreachable
from data_plane.upstream.network import Network
from data_plane.upstream.response import UpstreamResponse
from data_plane.upstream.transport import Transport
from data_plane.usage.meter import COMPLETE, RequestMeter
from data_plane.usage.shapes import NO_USAGE

SECRET = b"sk-relay-seam-0123456789abcdefghijklmnop"
URL = "http://upstream.invalid/v1/chat/completions"
EVENTS = [b'data: {"n":1}\n\n', b'data: {"n":2}\n\n', b"data: [DONE]\n\n"]


@dataclass
class Call:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    tenant: str


class FakeSource:
    """Stands where the pool's connection would: records how the relay handed the answer back."""

    def __init__(self) -> None:
        self.paused = False
        self.finished_with: list[bool] = []

    def resume(self) -> None:
        self.paused = False

    def finished(self, clean: bool) -> None:
        self.finished_with.append(clean)


class FakeTransport:
    """Answers every request with the answer ``make`` builds (head set; body fed now or later)."""

    def __init__(self, make: Callable[[UpstreamResponse], Awaitable[None]]) -> None:
        self.make = make
        self.calls: list[Call] = []
        self.sources: list[FakeSource] = []

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | BodySource | None = None,
        *,
        tenant: str = "",
        network: Network | None = None,
    ) -> UpstreamResponse:
        if body is not None and not isinstance(body, bytes):  # a streamed body: recorded whole
            body = b"".join([piece async for piece in body.chunks()])
        self.calls.append(Call(method, url, dict(headers), body, tenant))
        source = FakeSource()
        self.sources.append(source)
        answer = UpstreamResponse(source)
        await self.make(answer)
        return answer


def record_sends(request: web.Request, sends: list[bytes]) -> None:
    """Every write to the client's socket from now on is also appended to ``sends``."""
    transport = request.transport
    assert transport is not None
    write, writelines = transport.write, transport.writelines

    def record(data: bytes | bytearray | memoryview) -> None:
        sends.append(bytes(data))
        write(data)

    def record_lines(lines: Iterable[bytes | bytearray | memoryview]) -> None:
        lines = list(lines)
        sends.append(b"".join(lines))
        writelines(lines)

    transport.write = record  # type: ignore[method-assign]
    transport.writelines = record_lines  # type: ignore[method-assign,assignment]


@dataclass
class Served:
    url: str
    meters: list[RequestMeter]


def relaying(
    transport: Transport, meters: list[RequestMeter], *, streaming: bool
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler that relays every request through ``transport`` (typed as the protocol, not the pool)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        meter = RequestMeter(None, request_id="rec-1", node_id="node", org_id="org", key_id="key", family=OPENAI,
                             endpoint="/v1/chat/completions", shape=NO_USAGE)  # fmt: skip
        meters.append(meter)
        relay = Relay(request, meter, family=OPENAI, upstream_idle=10.0,
                      deadline=asyncio.get_running_loop().time() + 20.0, max_buffered=1 << 20)  # fmt: skip
        return await relay.forward(transport, "POST", URL, {"Authorization": "Bearer " + SECRET.decode()},
                                   await request.read(), first_byte_timeout=10.0, streaming=streaming,
                                   secret=secret_for(SECRET))  # fmt: skip

    return handle


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Callable[[Transport, bool], Awaitable[Served]]]:
    servers: list[TestServer] = []

    async def start(transport: Transport, streaming: bool) -> Served:
        app = web.Application()
        meters: list[RequestMeter] = []
        app.router.add_post("/relay", relaying(transport, meters, streaming=streaming))
        test_server = TestServer(app, host="127.0.0.1", port=0)
        await test_server.start_server()
        servers.append(test_server)
        return Served(str(test_server.make_url("/relay")), meters)

    yield start
    for test_server in servers:
        await test_server.close()


async def test_a_plain_answer_is_relayed_through_a_fake_transport(
    server: Callable[[Transport, bool], Awaitable[Served]],
) -> None:
    async def make(answer: UpstreamResponse) -> None:
        answer.status, answer.reason, answer.content_type = 200, "OK", "application/json"
        answer.raw_headers = [("Content-Type", "application/json"), ("x-request-id", "up-1"),
                              ("X-Echo", "key " + SECRET.decode())]  # fmt: skip
        answer.feed_data(b'{"answer": "plain", "echo": "')
        answer.feed_data(SECRET + b'"}')
        answer.feed_eof()

    fake = FakeTransport(make)
    transport: Transport = fake  # the fake satisfies the protocol the relay depends on
    served = await server(transport, False)
    async with httpx.AsyncClient() as client:
        resp = await client.post(served.url, content=b'{"model": "m"}')
    assert resp.status_code == 200
    assert resp.content.startswith(b'{"answer": "plain", "echo": "') and SECRET not in resp.content
    assert resp.headers["x-upstream-request-id"] == "up-1" and SECRET.decode() not in resp.headers["x-echo"]
    [call] = fake.calls
    assert (call.method, call.url, call.body) == ("POST", URL, b'{"model": "m"}')
    assert call.headers == {"Authorization": "Bearer " + SECRET.decode()}
    assert call.tenant == secret_for(SECRET).pool_tag  # the credential's tag, never the credential
    assert fake.sources[0].finished_with == [True]  # read to the end, then released once
    assert served.meters[0].status == 200 and served.meters[0].outcome == COMPLETE


async def test_a_streamed_answer_is_relayed_event_by_event_through_a_fake_transport(
    server: Callable[[Transport, bool], Awaitable[Served]],
) -> None:
    next_event = asyncio.Event()
    feeder: list[asyncio.Task[None]] = []

    async def feed(answer: UpstreamResponse) -> None:
        for event in EVENTS:
            answer.feed_data(event)
            await next_event.wait()  # the next event only once the client saw this one
            next_event.clear()
        answer.feed_eof()

    async def make(answer: UpstreamResponse) -> None:
        answer.status, answer.reason, answer.content_type = 200, "OK", "text/event-stream"
        answer.raw_headers = [("Content-Type", "text/event-stream")]
        feeder.append(asyncio.create_task(feed(answer)))

    fake = FakeTransport(make)
    served = await server(fake, True)
    seen = b""
    async with asyncio.timeout(10):  # a relay that waited for the whole answer would never end
        async with httpx.AsyncClient() as client, client.stream("POST", served.url, content=b"{}") as resp:
            assert resp.status_code == 200 and resp.headers["content-type"] == "text/event-stream"
            async for piece in resp.aiter_raw():
                seen += piece
                next_event.set()
    await feeder[0]
    assert seen == b"".join(EVENTS)
    assert fake.sources[0].finished_with == [True]
    assert served.meters[0].outcome == COMPLETE


async def test_a_stream_that_arrived_whole_goes_out_in_one_send() -> None:
    """Head, events and chunked terminator in one send when the whole answer was in hand at
    prepare (before: the head at prepare, then the events, then the terminator; 3 sends, then 2)."""

    async def make(answer: UpstreamResponse) -> None:
        answer.status, answer.reason, answer.content_type = 200, "OK", "text/event-stream"
        answer.raw_headers = [("Content-Type", "text/event-stream")]
        for event in EVENTS:
            answer.feed_data(event)
        answer.feed_eof()

    meters: list[RequestMeter] = []
    relay = relaying(FakeTransport(make), meters, streaming=True)
    sends: list[bytes] = []

    async def counted(request: web.Request) -> web.StreamResponse:
        record_sends(request, sends)
        return await relay(request)

    app = web.Application()
    app.router.add_post("/relay", counted)
    test_server = TestServer(app, host="127.0.0.1", port=0)
    await test_server.start_server()
    try:
        async with httpx.AsyncClient() as client:
            resp = await client.post(str(test_server.make_url("/relay")), content=b"{}")
    finally:
        await test_server.close()
    assert resp.status_code == 200 and resp.content == b"".join(EVENTS)
    assert len(sends) == 1 and sends[0].startswith(b"HTTP/1.1 200") and sends[0].endswith(b"0\r\n\r\n")
    assert b"".join(EVENTS) in sends[0]
    assert meters[0].outcome == COMPLETE


@pytest.mark.parametrize("first", [b"", b'data: {"partial'], ids=["no-body-yet", "a-partial-event"])
async def test_a_stream_s_head_never_waits_for_its_upstream_s_events(
    server: Callable[[Transport, bool], Awaitable[Served]], first: bytes
) -> None:
    """The head reaches the client while the upstream has sent no complete event: with no body
    bytes at prepare, or with only part of an event in hand (held back by the splitter)."""
    head_seen = asyncio.Event()
    feeder: list[asyncio.Task[None]] = []

    async def feed(answer: UpstreamResponse) -> None:
        await head_seen.wait()  # nothing more until the client has the status and headers
        answer.feed_data(b'" : 1}\n\n' if first else EVENTS[0])
        for event in EVENTS[1:]:
            answer.feed_data(event)
        answer.feed_eof()

    async def make(answer: UpstreamResponse) -> None:
        answer.status, answer.reason, answer.content_type = 200, "OK", "text/event-stream"
        answer.raw_headers = [("Content-Type", "text/event-stream")]
        if first:
            answer.feed_data(first)
        feeder.append(asyncio.create_task(feed(answer)))

    served = await server(FakeTransport(make), True)
    async with asyncio.timeout(10):  # a head waiting for the events would never come
        async with httpx.AsyncClient() as client, client.stream("POST", served.url, content=b"{}") as resp:
            assert resp.status_code == 200
            head_seen.set()
            body = await resp.aread()
    await feeder[0]
    start = first + b'" : 1}\n\n' if first else EVENTS[0]
    assert body == start + b"".join(EVENTS[1:])
    assert served.meters[0].outcome == COMPLETE


class RefusingTransport:
    """No answer: the pool's error for a TLS handshake that failed verification (or a raw OSError)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | BodySource | None = None,
        *,
        tenant: str = "",
        network: Network | None = None,
    ) -> UpstreamResponse:
        raise self.error


async def test_a_failed_upstream_call_logs_its_cause_but_no_address(caplog: pytest.LogCaptureFixture) -> None:
    """An operator tells an untrusted private CA from a refused connection by the log line alone."""
    meter = RequestMeter(None, request_id="rec-1", node_id="node", org_id="org", key_id="key", family=OPENAI,
                         endpoint="/v1/chat/completions", shape=NO_USAGE)  # fmt: skip
    trip = Trip(meter, upstream_idle=5.0, deadline=asyncio.get_running_loop().time() + 5.0)
    caplog.set_level(logging.INFO, logger="odock.data_plane.relay")
    for error in (
        UpstreamUnreachable("SSLCertVerificationError"),
        ConnectionRefusedError("refused 10.1.2.3"),
    ):
        with pytest.raises(GatewayError) as failed:
            await trip.open(
                RefusingTransport(error), "POST", URL, {}, b"{}", tenant="t", first_byte_timeout=5.0
            )
        assert failed.value.code == "upstream_unreachable"
    lines = [r.getMessage() for r in caplog.records if r.name == "odock.data_plane.relay"]
    assert lines == [
        "upstream request failed: UpstreamUnreachable: SSLCertVerificationError",
        "upstream request failed: ConnectionRefusedError",
    ]
