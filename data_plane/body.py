"""Reading a client's request body: bounded before buffering, with an idle timeout."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from data_plane.errors import GatewayError


def too_large(limit: int) -> GatewayError:
    """The 413 for a body over ``limit`` bytes (the connection is closed: the rest is never read)."""
    return GatewayError(
        413, "request_too_large", f"Request body exceeds the limit of {limit} bytes", close=True
    )


def check_declared_length(request: web.BaseRequest, limit: int) -> None:
    """Refuse a declared Content-Length over the limit before reading anything."""
    length = request.content_length
    if length is not None and length > limit:
        raise too_large(limit)


async def read_body(request: web.BaseRequest, limit: int, idle: float, total: float) -> bytes:
    """The whole body, refusing more than ``limit`` bytes as they arrive (chunked bodies too).

    A client that pauses longer than ``idle`` or takes longer than ``total`` is cut off (408).
    """
    check_declared_length(request, limit)
    try:
        # Usually the whole body came with the headers: take it without arming a timer.
        first = request.content.read_nowait()
    except (ConnectionError, ValueError, HttpProcessingError, RequestPayloadError) as exc:
        raise GatewayError(400, "invalid_request", "Malformed request body framing", close=True) from exc
    if len(first) > limit:
        raise too_large(limit)
    if request.content.is_eof():
        return first
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total
    buf = bytearray(first)
    while True:
        wait = min(idle, deadline - loop.time())
        try:
            if wait <= 0:
                raise TimeoutError
            async with asyncio.timeout(wait):
                chunk = await request.content.readany()
        except TimeoutError:
            raise GatewayError(
                408, "request_timeout", "Client did not send the request body in time", close=True
            ) from None
        except (ConnectionError, ValueError, HttpProcessingError, RequestPayloadError) as exc:
            raise GatewayError(400, "invalid_request", "Malformed request body framing", close=True) from exc
        if not chunk:
            return bytes(buf)
        if len(buf) + len(chunk) > limit:
            raise too_large(limit)
        buf += chunk
