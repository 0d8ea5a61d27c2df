"""Answers of every framing against real loopback servers: length, chunked, close-delimited, broken."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from data_plane.upstream import UpstreamBroken, UpstreamClient, UpstreamResponse
from tests.data_plane.upstream.conftest import Run
from tests.data_plane.upstream.server import Peer, Server, chunk, response


def new_client(
    *,
    limit: int = 100,
    per_host: int = 10,
    connect_timeout: float = 5.0,
    keepalive: float = 30.0,
    ssl_context: ssl.SSLContext | None = None,
) -> UpstreamClient:
    """A client with the given bounds (defaults: roomy, 5 s to connect)."""
    return UpstreamClient(limit=limit, limit_per_host=per_host, connect_timeout=connect_timeout,
                          keepalive=keepalive, ssl_context=ssl_context)  # fmt: skip


async def read_all(resp: UpstreamResponse) -> bytes:
    """The whole body, as the proxy reads it (what arrived, then waits)."""
    buf = bytearray()
    while True:
        data = resp.read_nowait()
        if not data and not resp.at_eof():
            data = await resp.read()
        if not data:
            return bytes(buf)
        buf += data


def test_content_length_answer_with_headers_reason_and_media_type(run: Run[None]) -> None:
    async def scenario() -> None:
        async def handler(peer: Peer) -> None:
            req = await peer.read_request()
            assert req is not None
            await peer.send(
                b"HTTP/1.1 201 Made It\r\nContent-Type: Application/JSON; charset=utf-8\r\n"
                b"Set-Cookie: a=1\r\nset-cookie: b=2\r\nX-Request-Id: req_1\r\nContent-Length: 11\r\n\r\n"
                b'{"ok":true}'
            )
            await peer.wait_client_close()

        async with Server(handler) as server:
            client = new_client()
            resp = await client.request("POST", server.url("/v1/chat?x=1"), {"X-Test": "1"}, b'{"a":1}')
            assert (resp.status, resp.reason, resp.content_type) == (201, "Made It", "application/json")
            assert resp.headers.getall("set-cookie") == ["a=1", "b=2"]
            assert resp.headers["x-request-id"] == "req_1"
            assert await read_all(resp) == b'{"ok":true}' and resp.at_eof()
            resp.release()
            req = server.requests[0]
            assert (req.method, req.target, req.body) == ("POST", "/v1/chat?x=1", b'{"a":1}')
            assert req.header("host") == f"127.0.0.1:{server.port}"
            assert req.header("x-test") == "1" and req.header("content-length") == "7"
            # Nothing but what was asked for: no Accept-Encoding, User-Agent, cookies or Expect.
            assert {k.lower() for k, _ in req.headers} == {"host", "x-test", "content-length"}
            await client.close()

    run(scenario())


def test_chunked_answer_arrives_piece_by_piece(run: Run[None]) -> None:
    async def scenario() -> None:
        go_on = asyncio.Event()

        async def handler(peer: Peer) -> None:
            await peer.read_request()
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            await peer.send(chunk(b"data: 1\n\n"))
            await go_on.wait()
            await peer.send(chunk(b"data: 2\n\n") + chunk(b"data: [DONE]\n\n") + b"0\r\nX-Trailer: t\r\n\r\n")
            await keep_serving(peer)

        async with Server(handler) as server:
            client = new_client()
            resp = await client.request("POST", server.url(), {}, b"{}")
            assert resp.content_type == "text/event-stream"
            assert await resp.read() == b"data: 1\n\n"
            assert resp.read_nowait() == b"" and not resp.at_eof()
            go_on.set()
            assert await read_all(resp) == b"data: 2\n\ndata: [DONE]\n\n"
            assert "x-trailer" not in resp.headers and resp.content_type == "text/event-stream"  # trailers ignored
            resp.release()
            # The connection was clean after the last chunk: it carries the next request.
            again = await client.request("POST", server.url(), {}, b"{}")
            assert await read_all(again) == b"ok"
            again.release()
            assert server.connections == 1 and client.status()["opened"] == 1
            await client.close()

    run(scenario())


async def keep_serving(peer: Peer) -> None:
    """Answer further requests on the connection with "ok"."""
    while await peer.read_request() is not None:
        await peer.send(response())


def test_close_delimited_answer_ends_with_the_connection(run: Run[None]) -> None:
    async def scenario() -> None:
        async def handler(peer: Peer) -> None:
            await peer.read_request()
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
            await peer.send(b'{"part":1,')
            await peer.send(b'"part":2}')
            peer.close()

        async with Server(handler) as server:
            client = new_client()
            for _ in range(2):
                resp = await client.request("POST", server.url(), {}, b"{}")
                assert await read_all(resp) == b'{"part":1,"part":2}'
                resp.release()
            assert server.connections == 2  # never pooled: the end of the body was the end of the connection
            await client.close()

    run(scenario())


@pytest.mark.parametrize(
    "answer",
    [
        response(headers="Connection: close\r\n"),
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ],
    ids=["connection-close", "http-1.0"],
)
def test_answers_that_end_keep_alive_are_not_pooled(run: Run[None], answer: bytes) -> None:
    async def scenario() -> None:
        async def handler(peer: Peer) -> None:
            while await peer.read_request() is not None:
                await peer.send(answer)

        async with Server(handler) as server:
            client = new_client()
            for _ in range(3):
                resp = await client.request("POST", server.url(), {}, b"")
                assert await read_all(resp) == b"ok"
                resp.release()
            assert server.connections == 3 and client.status() == {"in_use": 0, "idle": 0, "opened": 3}
            await client.close()

    run(scenario())


def test_informational_answers_are_skipped_and_empty_answers_keep_the_connection(run: Run[None]) -> None:
    async def scenario() -> None:
        async def handler(peer: Peer) -> None:
            await peer.read_request()
            await peer.send(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + response(b"final"))
            await peer.read_request()
            await peer.send(b"HTTP/1.1 204 No Content\r\n\r\n")
            await keep_serving(peer)

        async with Server(handler) as server:
            client = new_client()
            resp = await client.request("POST", server.url(), {}, b"")
            assert resp.status == 200 and "link" not in resp.headers
            assert await read_all(resp) == b"final"
            resp.release()
            empty = await client.request("POST", server.url(), {}, b"")
            assert empty.status == 204 and await read_all(empty) == b""
            empty.release()
            last = await client.request("POST", server.url(), {}, b"")
            assert await read_all(last) == b"ok"
            last.release()
            assert server.connections == 1
            await client.close()

    run(scenario())


@pytest.mark.parametrize("how", ["reset", "close"])
def test_body_cut_mid_way_is_broken_after_what_arrived(run: Run[None], how: str) -> None:
    async def scenario() -> None:
        async def handler(peer: Peer) -> None:
            await peer.read_request()
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst half")
            peer.reset() if how == "reset" else peer.close()

        async with Server(handler) as server:
            client = new_client()
            resp = await client.request("POST", server.url(), {}, b"")
            got = bytearray()
            with pytest.raises(UpstreamBroken):
                while True:
                    data = resp.read_nowait() or await resp.read()
                    assert data, "a cut body must not look like a clean end"
                    got += data
            assert got == b"first half" and not resp.at_eof()
            resp.release()
            assert client.status() == {"in_use": 0, "idle": 0, "opened": 1}
            await client.close()

    run(scenario())


def test_chunked_stream_cut_mid_way_is_broken(run: Run[None]) -> None:
    async def scenario() -> None:
        async def handler(peer: Peer) -> None:
            await peer.read_request()
            await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"data: 1\n\n") + b"40\r\npar")
            peer.close()

        async with Server(handler) as server:
            client = new_client()
            resp = await client.request("POST", server.url(), {}, b"")
            assert resp.read_nowait() or await resp.read()
            with pytest.raises(UpstreamBroken):
                while await resp.read():
                    pass
            resp.release()
            await client.close()

    run(scenario())


@pytest.mark.parametrize(
    "answer", [b"HTTP/1.1 2xx Nope\r\n\r\n", b"SMTP ready\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"]
)
def test_malformed_answers_are_broken(run: Run[None], answer: bytes) -> None:
    async def scenario() -> None:
        async def handler(peer: Peer) -> None:
            await peer.read_request()
            await peer.send(answer)
            await peer.wait_client_close()

        async with Server(handler) as server:
            client = new_client()
            with pytest.raises(UpstreamBroken):
                await client.request("POST", server.url(), {}, b"")
            assert client.status()["in_use"] == 0
            await client.close()

    run(scenario())


def test_slow_body_waits_and_an_abandoned_answer_closes_the_connection(run: Run[None]) -> None:
    async def scenario() -> None:
        seen_close = asyncio.Event()

        async def handler(peer: Peer) -> None:
            await peer.read_request()
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            await peer.wait_client_close()  # never sends the rest
            seen_close.set()

        async with Server(handler) as server:
            client = new_client()
            resp = await client.request("POST", server.url(), {}, b"")
            assert resp.read_nowait() == b"abc"
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):  # the proxy's idle timeout does exactly this
                    await resp.read()
            resp.release()  # not complete: closed, never pooled
            await seen_close.wait()
            assert client.status() == {"in_use": 0, "idle": 0, "opened": 1}
            await client.close()

    run(scenario())


def test_unread_complete_answer_still_pools_but_unfinished_one_does_not(run: Run[None]) -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = new_client()
            resp = await client.request("POST", server.url(), {}, b"")
            resp.release()  # "ok" arrived with the head: the connection is clean
            assert client.status()["idle"] == 1
            resp = await client.request("POST", server.url(), {}, b"")
            resp.close()  # explicitly closed
            assert client.status() == {"in_use": 0, "idle": 0, "opened": 1}
            resp = await client.request("POST", server.url(), {}, b"")
            resp.release()
            assert server.connections == 2
            await client.close()

    run(scenario())


@pytest.mark.parametrize("shape", ["many-headers", "endless-header"])
def test_oversized_answer_head_is_broken_not_buffered(run: Run[None], shape: str) -> None:
    async def scenario() -> None:
        async def handler(peer: Peer) -> None:
            await peer.read_request()
            await peer.send(b"HTTP/1.1 200 OK\r\n")
            try:
                for i in range(2000):  # 2000 x 100 bytes: far over the 64 KiB bound
                    line = b"X-Pad-%d: %s\r\n" % (i, b"v" * 90) if shape == "many-headers" else b"v" * 100
                    await peer.send(line if shape == "many-headers" or i else b"X-Long: " + line)
            except ConnectionError:
                return
            await peer.wait_client_close()

        async with Server(handler) as server:
            client = new_client()
            with pytest.raises(UpstreamBroken, match="too large"):
                await client.request("POST", server.url(), {}, b"")
            assert client.status()["in_use"] == 0
            await client.close()

    run(scenario())
