"""A scripted HTTP/1.1 server on 127.0.0.1:0 for the client's tests: each connection runs a handler."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Self


@dataclass
class Received:
    """One request as the server read it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of ``name`` (case-insensitive), or None."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass
class Peer:
    """The server's side of one connection."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    server: Server
    done: asyncio.Event = field(default_factory=asyncio.Event)  # the handler returned

    async def read_request(self) -> Received | None:
        """The next request, or None when the client closed the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        line, *rest = head[:-4].decode("latin-1").split("\r\n")
        method, target, _version = line.split(" ", 2)
        headers = [(k, v.strip()) for k, _, v in (h.partition(":") for h in rest)]
        received = Received(method, target, headers, b"")
        length = received.header("content-length")
        if length:
            received.body = await self.reader.readexactly(int(length))
        self.server.requests.append(received)
        return received

    async def send(self, data: bytes) -> None:
        """Write and wait until the transport took it (flow control)."""
        self.writer.write(data)
        await self.writer.drain()

    async def wait_client_close(self) -> None:
        """Until the client closes its end (EOF), discarding anything else it sends."""
        while await self.reader.read(65536):
            pass

    def close(self) -> None:
        """Close (FIN)."""
        self.writer.close()

    def reset(self) -> None:
        """Abort (RST)."""
        self.writer.transport.abort()


Handler = Callable[[Peer], Awaitable[None]]


def response(body: bytes = b"ok", *, status: str = "200 OK", headers: str = "") -> bytes:
    """A Content-Length answer (``headers``: extra CRLF-terminated lines)."""
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


async def keep_alive(peer: Peer) -> None:
    """Answer every request on the connection with "ok" (the default handler)."""
    while await peer.read_request() is not None:
        await peer.send(response())


class Server:
    """Accepts connections, counts them, records requests, runs ``handler`` per connection."""

    def __init__(self, handler: Handler = keep_alive, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self.open = 0
        self.peers: list[Peer] = []
        self.requests: list[Received] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for peer in self.peers:
            peer.writer.transport.abort()
        if self._tasks:  # handlers end on the aborted connections; any still waiting is cancelled
            _, pending = await asyncio.wait(set(self._tasks), timeout=1.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def url(self, path: str = "/v1/x", host: str = "127.0.0.1") -> str:
        """An URL on this server."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer, self)
        self.connections += 1
        self.open += 1
        self.peers.append(peer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(peer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            self._tasks.discard(task)
            writer.close()
            peer.done.set()
