"""A small HTTP proxy on 127.0.0.1:0: CONNECT tunnels and absolute-form requests, like squid or tinyproxy.

It records what the gateway sent it (each request line, the Proxy-Authorization it saw) and can
require credentials (407 with Proxy-Authenticate otherwise), refuse every request with a status,
drop the connection without answering, or never answer. Tunnels and forwarded requests are real TCP relays
to the target, so TLS through the tunnel is end to end with the upstream.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Self
from urllib.parse import urlsplit

MAX_HEAD = 16 * 1024


class ConnectProxy:
    """Counts CONNECTs, records request lines and Proxy-Authorization values, relays bytes."""

    def __init__(self, *, credentials: tuple[str, str] | None = None) -> None:
        self.expected = (
            "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            if credentials is not None
            else None
        )
        self.refuse_with = 0  # a status to answer every request with (0: serve)
        self.drop = False  # close without answering
        self.stall = False  # never answer (until the client gives up)
        self.lines: list[str] = []  # request lines ("CONNECT 127.0.0.1:443 HTTP/1.1", "GET http://...")
        self.authorizations: list[str | None] = []
        self.forwarded_heads: list[bytes] = []  # what absolute-form requests became, upstream
        self.connects = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def url(self, user: str = "", password: str = "") -> str:
        """This proxy's URL (``user:password@`` as given: the caller percent-encodes)."""
        auth = f"{user}:{password}@" if user or password else ""
        return f"http://{auth}127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            return
        line, *rest = head[:-4].decode("latin-1").split("\r\n")
        headers = [(k.strip().lower(), v.strip()) for k, _, v in (h.partition(":") for h in rest)]
        authorization = next((v for k, v in headers if k == "proxy-authorization"), None)
        self.lines.append(line)
        self.authorizations.append(authorization)
        method, target, _ = line.split(" ", 2)
        if method == "CONNECT":
            self.connects += 1
        if self.drop:
            return
        if self.stall:
            while await reader.read(65536):
                pass
            return
        if self.refuse_with:
            await _answer(writer, self.refuse_with)
            return
        if self.expected is not None and authorization != self.expected:
            await _answer(writer, 407, 'Proxy-Authenticate: Basic realm="odock-test"\r\n')
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            opened = await _open(host.strip("[]"), int(port))
            if opened is None:
                await _answer(writer, 502)
                return
            upstream_reader, upstream_writer = opened
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await _pipe_both(reader, writer, upstream_reader, upstream_writer)
            return
        parts = urlsplit(target)  # absolute form: forwarded in origin form, without the proxy's header
        if parts.scheme != "http" or parts.hostname is None:
            await _answer(writer, 400)
            return
        origin_target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        kept = "".join(f"{h}\r\n" for h in rest if not h.lower().startswith("proxy-authorization:"))
        forwarded = f"{method} {origin_target} HTTP/1.1\r\n{kept}\r\n".encode("latin-1")
        self.forwarded_heads.append(forwarded)
        opened = await _open(parts.hostname, parts.port or 80)
        if opened is None:
            await _answer(writer, 502)
            return
        upstream_reader, upstream_writer = opened
        upstream_writer.write(forwarded)
        await _pipe_both(reader, writer, upstream_reader, upstream_writer)


async def _open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A connection to a loopback target; None (a 502, as a proxy answers) for any other host, never looked up."""
    if host not in ("127.0.0.1", "::1", "localhost"):
        return None
    try:
        return await asyncio.open_connection(host, port)
    except OSError:
        return None


async def _answer(writer: asyncio.StreamWriter, status: int, extra: str = "") -> None:
    body = b"proxy says no"
    writer.write(
        f"HTTP/1.1 {status} Refused\r\n{extra}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.close()


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
) -> None:
    try:
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
    finally:
        upstream_writer.transport.abort()
