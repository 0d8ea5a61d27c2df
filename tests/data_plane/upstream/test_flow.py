"""Flow control: a provider faster than the reader fills a bounded buffer, then waits."""

from __future__ import annotations

import asyncio
import hashlib

from data_plane.upstream.response import HIGH_WATER
from tests.data_plane.upstream.conftest import Run
from tests.data_plane.upstream.server import Peer, Server, chunk
from tests.data_plane.upstream.test_framing import new_client

TOTAL = 32 * 1024 * 1024
PIECE = 64 * 1024
# One socket read may land on top of a full buffer before reading pauses.
MAX_READ = 256 * 1024


def test_slow_reader_pauses_the_socket_and_memory_stays_bounded(run: Run[None]) -> None:
    async def scenario() -> None:
        sent = 0
        expected = hashlib.sha256()
        blocked = asyncio.Event()

        async def handler(peer: Peer) -> None:
            nonlocal sent
            await peer.read_request()
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            i = 0
            while sent < TOTAL:
                piece = bytes([i % 251]) * PIECE
                expected.update(piece)
                peer.writer.write(chunk(piece))
                if peer.writer.transport.get_write_buffer_size() > 0:
                    blocked.set()  # the kernel buffers are full: the client stopped reading
                await peer.writer.drain()
                sent += PIECE
                i += 1
            await peer.send(b"0\r\n\r\n")
            await peer.wait_client_close()

        async with Server(handler) as server:
            client = new_client()
            resp = await client.request("POST", server.url(), {}, b"{}")
            await blocked.wait()  # the reader has read nothing yet: the provider is made to wait
            stalled_at = sent
            for _ in range(20):  # let the loop run: nothing more may be buffered on our side
                await asyncio.sleep(0)
            assert resp._size <= HIGH_WATER + MAX_READ
            assert stalled_at < TOTAL // 2 and sent - stalled_at <= 2 * PIECE
            got = hashlib.sha256()
            received = 0
            peak = 0
            while True:
                peak = max(peak, resp._size)
                data = resp.read_nowait() or await resp.read()
                if not data:
                    break
                got.update(data)
                received += len(data)
                await asyncio.sleep(0)  # a consumer that yields between reads (as a relay does)
            assert received == TOTAL and got.digest() == expected.digest()
            assert peak <= HIGH_WATER + MAX_READ
            resp.release()
            assert client.status()["idle"] == 1  # read to the end: pooled again
            await client.close()

    run(scenario())
