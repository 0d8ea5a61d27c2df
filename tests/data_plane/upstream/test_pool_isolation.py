"""The pool never mixes two requests' bytes: early answers, unsolicited bytes, one credential per connection."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import pytest

from data_plane.upstream import response as upstream_response
from tests.data_plane.upstream.conftest import Run
from tests.data_plane.upstream.server import Peer, Server, response
from tests.data_plane.upstream.test_framing import new_client, read_all
from tests.data_plane.upstream.test_pool import until

# Far more than loopback socket buffers take, so the client still holds some when answered.
BIG = 64 * 1024 * 1024


def test_an_answer_before_the_request_body_was_written_retires_the_connection(run: Run[None]) -> None:
    async def scenario() -> None:
        answered = asyncio.Event()

        async def handler(peer: Peer) -> None:
            if peer is peer.server.peers[0]:
                await peer.reader.readuntil(b"\r\n\r\n")  # the head only: refuse the body unread
                await peer.send(response(b"too big", status="413 Payload Too Large"))
                answered.set()
                await asyncio.sleep(0.5)  # not reading: the client's write buffer stays full
                await peer.wait_client_close()
                return
            while await peer.read_request() is not None:
                await peer.send(response(b"fresh"))

        async with Server(handler) as server:
            client = new_client()
            resp = await client.request("POST", server.url(), {}, b"x" * BIG)
            assert resp.status == 413 and await read_all(resp) == b"too big"
            resp.release()
            # The rest of the body would be read as the next request's start: never reused.
            assert client.status()["idle"] == 0
            resp = await client.request("POST", server.url(), {}, b"next")
            assert await read_all(resp) == b"fresh"
            resp.release()
            assert server.connections == 2 and server.requests[-1].body == b"next"
            await client.close()

    run(scenario())


def _threaded_server(listener: socket.socket, bodies: list[bytes]) -> None:
    """Blocking server in a thread (it runs while the client's loop is blocked): one answer per connection.

    The first connection also gets an unsolicited second answer 50 ms after its first one.
    """
    listener.settimeout(5.0)
    for index, body in enumerate(bodies):
        try:
            conn, _ = listener.accept()
        except OSError:
            return  # the test ended (or never connected again)
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            conn.sendall(response(body))
            if index == 0:
                time.sleep(0.05)
                conn.sendall(response(b"INJECTED"))  # nobody asked for it
            with contextlib.suppress(OSError):
                while conn.recv(65536):  # until the client closes
                    pass


def test_unread_unsolicited_bytes_on_an_idle_connection_retire_it(run: Run[None]) -> None:
    async def scenario() -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            server = threading.Thread(
                target=_threaded_server, args=(listener, [b"first", b"fresh"]), daemon=True
            )
            server.start()
            client = new_client()
            url = f"http://127.0.0.1:{port}/v1/x"
            resp = await client.request("POST", url, {}, b"")
            assert await read_all(resp) == b"first"
            resp.release()
            assert client.status()["idle"] == 1
            # Block the loop while the unsolicited answer arrives: it waits in the socket,
            # unread by the client, when the next request takes the connection.
            time.sleep(0.3)  # noqa: ASYNC251 - blocking on purpose
            resp = await client.request("POST", url, {}, b"second")
            assert await read_all(resp) == b"fresh"  # not the injected answer
            resp.release()
            assert client.status()["opened"] == 2
            await client.close()
            await asyncio.to_thread(server.join, 5)
            assert not server.is_alive()

    run(scenario())


def test_a_paused_complete_answer_is_read_again_once_idle(
    run: Run[None], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small high-water mark: the one read that brings the whole answer also pauses reading.
    monkeypatch.setattr(upstream_response, "HIGH_WATER", 1024)

    async def scenario() -> None:
        async def handler(peer: Peer) -> None:
            await peer.read_request()
            await peer.send(response(b"y" * 4096))
            await asyncio.sleep(0.2)
            await peer.send(response(b"INJECTED"))
            await peer.wait_client_close()

        async with Server(handler) as server:
            client = new_client()
            resp = await client.request("POST", server.url(), {}, b"")
            await until(lambda: resp._done, "the whole body to arrive")
            assert resp._conn is not None and resp._conn.paused  # the case under test
            resp.release()  # complete but unread by the caller
            await server.peers[0].done.wait()  # the unsolicited answer was seen, the connection closed
            assert client.status()["idle"] == 0
            await client.close()

    run(scenario())


def test_two_credentials_to_one_origin_never_share_a_connection(run: Run[None]) -> None:
    async def scenario() -> None:
        seen: dict[int, set[str]] = {}

        async def handler(peer: Peer) -> None:
            index = len(seen)
            seen[index] = set()
            while (req := await peer.read_request()) is not None:
                seen[index].add(req.header("authorization") or "")
                await peer.send(response())

        async with Server(handler) as server:
            client = new_client()
            for i in range(6):
                tenant = "a" if i % 2 == 0 else "b"
                resp = await client.request(
                    "POST", server.url(), {"Authorization": f"Bearer {tenant}"}, b"", tenant=f"tag-{tenant}"
                )
                assert await read_all(resp) == b"ok"
                resp.release()
            assert server.connections == 2 and len(server.requests) == 6
            assert sorted(map(sorted, seen.values())) == [["Bearer a"], ["Bearer b"]]
            assert client.status() == {"in_use": 0, "idle": 2, "opened": 2}
            await client.close()

    run(scenario())
