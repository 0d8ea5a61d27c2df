"""Streamed request bodies (``body.BodySource``): byte fidelity, bounded memory, early answers, failing sources."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from data_plane.upstream import BytesBody, FileBody, RequestBodyFailed
from tests.data_plane.upstream.conftest import Run
from tests.data_plane.upstream.server import Peer, Server, keep_alive, response
from tests.data_plane.upstream.test_framing import new_client
from tests.data_plane.upstream.test_tls import cert_files, server_context

__all__ = ["cert_files"]

BIG = 64 * 1024 * 1024
# What the node may hold while streaming BIG bytes: a few chunks and socket reads, not the body.
MEMORY_BOUND = 8 * 1024 * 1024


def _write_file(path: Path, size: int) -> str:
    """A file of ``size`` pseudo-random bytes (written in pieces); its sha256."""
    digest = hashlib.sha256()
    piece = os.urandom(1024 * 1024)
    with path.open("wb") as f:
        for i in range(size // len(piece)):
            data = bytes([i % 251]) + piece[1:]
            f.write(data)
            digest.update(data)
    return digest.hexdigest()


async def _read_head(peer: Peer) -> dict[str, str]:
    head = await peer.reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


class _Source:
    """A scripted source: ``pieces`` chunks of ``size`` bytes, failing after ``fail_after`` if set."""

    def __init__(self, pieces: int, size: int, *, length: int | None = None, fail_after: int = -1) -> None:
        self.pieces, self.size, self.fail_after = pieces, size, fail_after
        self.length = pieces * size if length is None else length
        self.yielded = 0
        self.closed = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            for i in range(self.pieces):
                if i == self.fail_after:
                    raise OSError("Input/output error")
                await asyncio.sleep(0)
                self.yielded += 1
                yield b"x" * self.size
        finally:
            self.closed += 1


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_64_mib_file_body_arrives_byte_identical_with_the_node_memory_bounded(
    run: Run[None], tmp_path: Path, cert_files: tuple[Path, Path], scheme: str
) -> None:
    size = BIG if scheme == "http" else BIG // 4  # TLS costs CPU on both ends of the loopback
    path = tmp_path / "upload.bin"
    expected = _write_file(path, size)
    server_tls = server_context(cert_files, []) if scheme == "https" else None
    client_tls = ssl.create_default_context(cafile=str(cert_files[0])) if scheme == "https" else None

    async def scenario() -> None:
        got: dict[str, object] = {}

        async def handler(peer: Peer) -> None:
            headers = await _read_head(peer)
            got["length"] = headers.get("content-length")
            await asyncio.sleep(0.3)  # a slow provider: the client's buffers fill, its writer must wait
            digest, received = hashlib.sha256(), 0
            while received < size:
                data = await peer.reader.read(256 * 1024)
                if not data:
                    break
                digest.update(data)
                received += len(data)
            got["sha"], got["received"] = digest.hexdigest(), received
            await peer.send(response(b"stored"))
            await peer.wait_client_close()

        async with Server(handler, ssl_context=server_tls) as server:
            client = new_client(ssl_context=client_tls)
            url = server.url(host="localhost") if scheme == "https" else server.url()
            tracemalloc.start()
            try:
                resp = await client.request("POST", url, {}, FileBody(path, 0, size))
                body = await resp.read()
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            resp.release()
            await client.close()
        assert (resp.status, body) == (200, b"stored")
        assert got == {"length": str(size), "sha": expected, "received": size}
        assert peak < MEMORY_BOUND, f"peak {peak} bytes while streaming {size}"

    run(scenario())


def test_a_file_body_slice_is_sent_and_the_connection_is_reused(run: Run[None], tmp_path: Path) -> None:
    path = tmp_path / "spool.bin"
    path.write_bytes(b"HEADER" + b"payload-bytes" * 1000 + b"TRAILER")

    async def scenario() -> None:
        async with Server(keep_alive) as server:
            client = new_client()
            for body in (FileBody(path, 6, 13 * 1000, chunk=4096), BytesBody(b"small"), BytesBody(b"")):
                resp = await client.request("POST", server.url(), {}, body)
                assert (resp.status, await resp.read()) == (200, b"ok")
                assert await resp.read() == b""
                resp.release()
            await client.close()
            assert [r.body for r in server.requests] == [b"payload-bytes" * 1000, b"small", b""]
            assert [r.header("content-length") for r in server.requests] == ["13000", "5", "0"]
            assert server.connections == 1  # each body was wholly written: the connection kept

    run(scenario())


def test_an_early_answer_stops_the_body_and_retires_the_connection(run: Run[None]) -> None:
    async def scenario() -> None:
        async def handler(peer: Peer) -> None:
            if server.connections == 1:
                await _read_head(peer)
                await peer.send(response(b"too large", status="413 Payload Too Large"))
                await peer.wait_client_close()  # reads (and drops) what the client still sends
            else:
                await keep_alive(peer)

        source = _Source(16 * 1024, 64 * 1024)  # 1 GiB announced, produced slowly
        async with Server(handler) as server:
            client = new_client()
            resp = await client.request("POST", server.url(), {}, source)
            assert (resp.status, await resp.read()) == (413, b"too large")
            resp.release()
            for _ in range(20):
                await asyncio.sleep(0)
            assert source.yielded < 1024 and source.closed == 1  # stopped and closed, long before its end
            again = await client.request("POST", server.url(), {}, b"{}")
            assert again.status == 200
            again.release()
            await client.close()
            assert server.connections == 2  # the half-written connection was never reused

    run(scenario())


CAUSES = {
    "raises": ": OSError",
    "short": ": its source ended after 4096 of its 10240 bytes",
    "long": ": its source yielded more than its 3072 bytes",
    "file_gone": ": OSError",
}


@pytest.mark.parametrize("case", ["raises", "short", "long", "file_gone"])
def test_a_failing_source_closes_the_connection_and_fails_clearly(run: Run[None], tmp_path: Path, case: str) -> None:
    path = tmp_path / "short.bin"
    path.write_bytes(b"y" * 100_000)
    body: _Source | FileBody
    if case == "raises":
        body = _Source(64, 64 * 1024, fail_after=10)
    elif case == "short":
        body = _Source(4, 1024, length=10 * 1024)
    elif case == "long":
        body = _Source(4, 1024, length=3 * 1024)
    else:
        body = FileBody(path, 0, 1_000_000, chunk=16 * 1024)  # the file is shorter than announced

    async def scenario() -> None:
        ended = asyncio.Event()
        truncated: list[bool] = []

        async def handler(peer: Peer) -> None:
            headers = await _read_head(peer)
            try:
                await peer.reader.readexactly(int(headers["content-length"]))
                truncated.append(False)  # "long": the announced bytes went out before the extra one showed
            except asyncio.IncompleteReadError:
                truncated.append(True)  # the client closed mid-body: the provider never takes a truncated one
            ended.set()
            await peer.wait_client_close()

        async with Server(handler) as server:
            client = new_client()
            with pytest.raises(RequestBodyFailed, match="request body could not be read") as failed:
                await client.request("POST", server.url(), {}, body)
            assert str(failed.value).endswith(CAUSES[case])
            await asyncio.wait_for(ended.wait(), 5.0)
            assert truncated == [case != "long"]
            assert client.status()["in_use"] == 0
            if isinstance(body, _Source):
                assert body.closed == 1
            await client.close()

    run(scenario())


def test_an_idempotent_request_replays_its_streamed_body_on_a_fresh_connection(run: Run[None], tmp_path: Path) -> None:
    path = tmp_path / "put.bin"
    path.write_bytes(os.urandom(300_000))

    async def scenario() -> None:
        async def handler(peer: Peer) -> None:
            if server.connections == 1:  # answers once, then drops the kept-alive connection unannounced
                await peer.read_request()
                await peer.send(response())
                await peer.reader.readuntil(b"\r\n\r\n")
                peer.reset()
                return
            await keep_alive(peer)

        async with Server(handler) as server:
            client = new_client()
            first = await client.request("POST", server.url(), {}, b"{}")
            assert await first.read() == b"ok" and await first.read() == b""
            first.release()
            again = await client.request("PUT", server.url(), {}, FileBody(path, 0, 300_000, chunk=65536))
            assert again.status == 200
            again.release()
            await client.close()
            assert server.connections == 2
            assert server.requests[-1].method == "PUT" and server.requests[-1].body == path.read_bytes()

    run(scenario())
