"""The pool: keep-alive reuse, bounds and waiting, stale and idle connections, retries, connect failures."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from data_plane.settings import Settings
from data_plane.upstream import UpstreamBroken, UpstreamClient, UpstreamConnectTimeout, UpstreamUnreachable
from tests.data_plane.upstream.conftest import Run
from tests.data_plane.upstream.server import Peer, Server, response
from tests.data_plane.upstream.test_framing import new_client, read_all


async def until(condition: object, what: str) -> None:
    """Poll a condition the client only learns of through its transports (bounded: 2 s)."""
    assert callable(condition)
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_sequential_requests_reuse_one_connection(run: Run[None]) -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = new_client()
            for i in range(20):
                resp = await client.request("POST", server.url(f"/r{i}"), {}, b"x" * i)
                assert await read_all(resp) == b"ok"
                resp.release()
            assert server.connections == 1 and len(server.requests) == 20
            assert [r.body for r in server.requests] == [b"x" * i for i in range(20)]
            assert client.status() == {"in_use": 0, "idle": 1, "opened": 1}
            await client.close()

    run(scenario())


def test_per_host_bound_makes_requests_wait_for_a_connection(run: Run[None]) -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        active = 0
        peak = 0

        async def handler(peer: Peer) -> None:
            nonlocal active, peak
            while await peer.read_request() is not None:
                active += 1
                peak = max(peak, active)
                await gate.wait()
                active -= 1
                await peer.send(response())

        async with Server(handler) as server:
            client = new_client(per_host=3)

            async def one() -> bytes:
                resp = await client.request("POST", server.url(), {}, b"")
                try:
                    return await read_all(resp)
                finally:
                    resp.release()

            tasks = [asyncio.create_task(one()) for _ in range(10)]
            await until(lambda: len(server.requests) == 3, "three requests in flight")
            assert client.status()["in_use"] == 3
            gate.set()
            assert await asyncio.gather(*tasks) == [b"ok"] * 10
            assert peak == 3 and server.connections == 3  # the waiters got the released connections
            await client.close()

    run(scenario())


def test_waiting_for_a_full_pool_ends_with_the_connect_timeout(run: Run[None]) -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = new_client(limit=1, connect_timeout=0.2)
            held = await client.request("POST", server.url(), {}, b"")
            with pytest.raises(UpstreamConnectTimeout) as caught:
                await client.request("POST", server.url(), {}, b"")
            assert isinstance(caught.value, TimeoutError)  # the proxy answers 504 for it, as for connect
            held.release()
            resp = await client.request("POST", server.url(), {}, b"")  # the timed-out waiter left no trace
            resp.release()
            assert server.connections == 1 and client.status()["in_use"] == 0
            await client.close()

    run(scenario())


def test_total_bound_closes_an_idle_connection_to_another_host(run: Run[None]) -> None:
    async def scenario() -> None:
        async with Server() as first, Server() as second:
            client = new_client(limit=1)
            resp = await client.request("POST", first.url(), {}, b"")
            resp.release()
            resp = await client.request("POST", second.url(), {}, b"")
            resp.release()
            await first.peers[0].done.wait()  # the first host's idle connection was closed for room
            assert client.status() == {"in_use": 0, "idle": 1, "opened": 2}
            await client.close()

    run(scenario())


def test_idle_connection_closed_by_the_server_is_dropped_before_sending(run: Run[None]) -> None:
    async def scenario() -> None:
        async def handler(peer: Peer) -> None:
            await peer.read_request()
            await peer.send(response())
            peer.close()  # an upstream's idle timeout, right after answering

        async with Server(handler) as server:
            client = new_client()
            resp = await client.request("POST", server.url(), {}, b"")
            resp.release()
            await until(lambda: client.status()["idle"] == 0, "the client to notice the close")
            # A POST after that must neither fail nor be sent on the dead connection.
            resp = await client.request("POST", server.url(), {}, b"second")
            assert await read_all(resp) == b"ok"
            resp.release()
            assert server.connections == 2 and [r.body for r in server.requests] == [b"", b"second"]
            await client.close()

    run(scenario())


@pytest.mark.parametrize(("method", "replayed"), [("POST", False), ("GET", True)])
def test_a_reused_connection_dying_unanswered_replays_only_idempotent_requests(
    run: Run[None], method: str, replayed: bool
) -> None:
    async def scenario() -> None:
        async def handler(peer: Peer) -> None:
            first = peer is peer.server.peers[0]
            while await peer.read_request() is not None:
                if first and len(peer.server.requests) == 2:
                    peer.close()  # read the second request, never answered it
                    return
                await peer.send(response(b"ok" if first else b"fresh"))

        async with Server(handler) as server:
            client = new_client()
            resp = await client.request(method, server.url(), {}, None)
            resp.release()
            if replayed:
                resp = await client.request(method, server.url(), {}, None)
                assert await read_all(resp) == b"fresh"
                resp.release()
                assert len(server.requests) == 3 and server.connections == 2
            else:
                with pytest.raises(UpstreamBroken):
                    await client.request(method, server.url(), {}, b"{}")
                assert len(server.requests) == 2 and server.connections == 1  # sent once, never again
            assert client.status()["in_use"] == 0
            await client.close()

    run(scenario())


def test_idle_connections_expire(run: Run[None]) -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = new_client(keepalive=0.1)
            resp = await client.request("POST", server.url(), {}, b"")
            resp.release()
            await server.peers[0].done.wait()  # the server saw the client close it
            assert client.status() == {"in_use": 0, "idle": 0, "opened": 1}
            await client.close()

    run(scenario())


def test_unexpected_bytes_on_an_idle_connection_drop_it(run: Run[None]) -> None:
    async def scenario() -> None:
        async def handler(peer: Peer) -> None:
            await peer.read_request()
            await peer.send(response() + b"HTTP/1.1 200 OK\r\n")  # more than was asked for
            await peer.wait_client_close()

        async with Server(handler) as server:
            client = new_client()
            resp = await client.request("POST", server.url(), {}, b"")
            assert await read_all(resp) == b"ok"
            resp.release()
            await server.peers[0].done.wait()
            assert client.status()["idle"] == 0
            await client.close()

    run(scenario())


def test_refused_connection_is_unreachable(run: Run[None]) -> None:
    async def scenario() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        client = new_client()
        with pytest.raises(UpstreamUnreachable):
            await client.request("POST", f"http://127.0.0.1:{port}/x", {}, b"")
        assert client.status() == {"in_use": 0, "idle": 0, "opened": 0}
        await client.close()

    run(scenario())


def test_cancelled_request_frees_its_connection(run: Run[None]) -> None:
    async def scenario() -> None:
        async def handler(peer: Peer) -> None:
            await peer.read_request()
            await peer.wait_client_close()  # never answers

        async with Server(handler) as server:
            client = new_client()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await client.request("POST", server.url(), {}, b"")
            await server.peers[0].done.wait()  # closed, so the provider stops working on it
            assert client.status() == {"in_use": 0, "idle": 0, "opened": 1}
            await client.close()

    run(scenario())


def test_close_closes_idle_and_later_released_connections_and_refuses_new_requests(run: Run[None]) -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = new_client()
            idle = await client.request("POST", server.url(), {}, b"")
            idle.release()
            busy = await client.request("POST", server.url(), {}, b"")
            busy2 = await client.request("POST", server.url(), {}, b"")
            await client.close()
            busy2.release()  # complete, but the client is closed: not pooled
            await asyncio.gather(*(peer.done.wait() for peer in server.peers))
            assert server.connections == 2 and client.status() == {"in_use": 1, "idle": 0, "opened": 2}
            busy.release()
            with pytest.raises(RuntimeError):
                await client.request("POST", server.url(), {}, b"")


def test_head_requests_are_refused(run: Run[None]) -> None:
    async def scenario() -> None:
        client = new_client()
        with pytest.raises(ValueError, match="HEAD"):
            await client.request("HEAD", "http://127.0.0.1:1/x", {}, None)
        await client.close()

    run(scenario())


def test_from_settings_takes_the_pool_bounds_and_connect_timeout(run: Run[None]) -> None:
    async def scenario() -> None:
        env = {"ODOCK_NODE_TOKEN": "n" * 40, "ODOCK_KEY_PEPPER": "cGVwcGVy" * 6,
               "ODOCK_UPSTREAM_POOL_SIZE": "7", "ODOCK_UPSTREAM_POOL_PER_HOST": "3",
               "ODOCK_UPSTREAM_CONNECT_TIMEOUT_SECONDS": "2.5"}  # fmt: skip
        client = UpstreamClient.from_settings(Settings.from_env(env))
        assert (client._limit, client._limit_per_host, client._connect_timeout) == (7, 3, 2.5)
        assert client._ssl is not None and client._ssl.verify_mode == ssl.CERT_REQUIRED  # built at start-up
        await client.close()

    run(scenario())
