"""A provider that answers with whatever bytes a test scripts, on a raw socket.

aiohttp (the usual fake) cannot send what a hostile upstream sends: a key in a header name
or the reason phrase, trailers, both Content-Length and Transfer-Encoding, more bytes than
the Content-Length said. This one reads each request like a real API would (the head, a
Content-Length body, the family's key header, which must be one it handed out: anything
else gets a plain 401 without it), then runs the test's script on the socket.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Self

FAMILIES = ("openai", "anthropic", "gemini", "vllm")

# (the key the request carried, the socket) -> keep the connection for another request?
Script = Callable[[str, asyncio.StreamWriter], Awaitable[bool]]


def sse_head(extra: str = "") -> bytes:
    """A chunked text/event-stream 200 head."""
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n{extra}\r\n"
    ).encode()


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def json_answer(
    status: int, payload: object, *, reason: str = "X", extra: str = "", gzipped: bool = False
) -> bytes:
    """A complete Content-Length answer."""
    body = json.dumps(payload).encode()
    coding = ""
    if gzipped:
        body = gzip.compress(body)
        coding = "Content-Encoding: gzip\r\n"
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{coding}{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class RawUpstream:
    """One listening socket for every family; ``script`` answers each request (default: a 200 JSON)."""

    def __init__(self) -> None:
        self.secrets = {f: f"sk-audit-{f}-{secrets.token_hex(16)}" for f in FAMILIES}
        self.script: Script | None = None
        self.requests = 0
        self.connections = 0
        self.heads: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.url = ""

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()

    def base_url(self, family: str | int) -> str:
        """The base URL of ``family``'s models (paths are not routed: the script answers)."""
        return f"{self.url}/{family}"

    def secret(self, family: str | int) -> str:
        """The key this provider hands out for ``family``."""
        return self.secrets[str(family)]

    def reset(self) -> None:
        """No script, counters at zero."""
        self.script = None
        self.requests = self.connections = 0
        self.heads.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests += 1
                key = (
                    headers.get("authorization", "").removeprefix("Bearer ")
                    or headers.get("x-api-key", "")
                    or headers.get("x-goog-api-key", "")
                )
                if key not in self.secrets.values() or self.script is None:
                    status = 200 if key in self.secrets.values() else 401
                    writer.write(json_answer(status, {"ok": status == 200}))
                    keep = True
                else:
                    keep = await self.script(key, writer)
                await writer.drain()
                if not keep:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
