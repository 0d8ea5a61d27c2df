"""A minimal HTTP/1.1 client over a raw socket, for request lines no HTTP library would send."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class RawResponse:
    """Status, headers (lower-cased names) and the de-chunked body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


async def request(base_url: str, method: str, target: str, headers: dict[str, str] | None = None,
                  body: bytes = b"", timeout: float = 10.0) -> RawResponse:
    """Send ``METHOD target HTTP/1.1`` exactly as given (``target`` is not normalised or encoded)."""
    url = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        head = [f"{method} {target} HTTP/1.1", f"Host: {url.netloc}", "Connection: close",
                f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        return await asyncio.wait_for(read_response(reader), timeout)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    """Read one response: by Content-Length when given (the server may keep the socket open), else to EOF."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), None)
    rest = await reader.readexactly(length) if length is not None else await reader.read()
    return parse(head + rest)


def parse(raw: bytes) -> RawResponse:
    """Parse a complete HTTP/1.1 response (Content-Length, chunked, or read-to-close)."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body += rest[:size]
            rest = rest[size + 2:]
        return RawResponse(status, headers, bytes(body))
    if "content-length" in headers:
        return RawResponse(status, headers, rest[: int(headers["content-length"])])
    return RawResponse(status, headers, rest)
