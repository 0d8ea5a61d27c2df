"""Reading a client's request body: bounded before buffering, and paced.

A body is cut off (408, connection closed) when the client

- sends less than ``client_body_min_rate`` bytes per second over any pacing window of
  ``client_body_window`` seconds (the windows follow each other from the first body byte
  the handler waits for); a trickle is therefore cut at the end of the first window it
  cannot fill, within two windows whatever it sent before (credit never accumulates);
- pauses longer than ``client_body_idle`` seconds;
- or is still sending after ``client_body`` seconds (an absolute cap, whatever the rate).

A minimum rate rather than a short total serves large uploads over slow links too; a
client holding a connection must keep paying for it in bandwidth.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from data_plane import deadlines
from data_plane.errors import GatewayError
from data_plane.settings import Timeouts


def too_large(limit: int) -> GatewayError:
    """The 413 for a body over ``limit`` bytes (the connection is closed: the rest is never read)."""
    return GatewayError(
        413, "request_too_large", f"Request body exceeds the limit of {limit} bytes", close=True
    )


def too_slow(message: str) -> GatewayError:
    """The 408 for a body that did not arrive in time (the connection is closed)."""
    return GatewayError(408, "request_timeout", message, close=True)


def check_declared_length(request: web.BaseRequest, limit: int) -> None:
    """Refuse a declared Content-Length over the limit before reading anything."""
    length = request.content_length
    if length is not None and length > limit:
        raise too_large(limit)


@dataclass(slots=True)
class BodyPace:
    """The pacing rules of one body being read, decided from the clock and the bytes received."""

    timeouts: Timeouts
    deadline: float  # the absolute cap
    last_progress: float  # when the byte count last grew
    received: int
    window_end: float
    window_mark: int  # bytes received when the current window started

    @classmethod
    def start(cls, timeouts: Timeouts, now: float, received: int) -> BodyPace:
        """Pacing from ``now``, with ``received`` bytes already in hand (they count for the first window)."""
        return cls(timeouts, now + timeouts.client_body, now, received, now + timeouts.client_body_window, 0)

    def wait(self, now: float, received: int) -> float:
        """How long to wait for more bytes from ``now``; raises the 408 when the body is too slow."""
        t = self.timeouts
        if received != self.received:
            self.received, self.last_progress = received, now
        if now >= self.deadline:
            raise too_slow(f"Client did not send the request body within {t.client_body:g} s")
        if now - self.last_progress >= t.client_body_idle:
            raise too_slow(f"Client paused the request body for more than {t.client_body_idle:g} s")
        window_end = math.inf
        if t.client_body_min_rate > 0:
            if now >= self.window_end:
                if received - self.window_mark < t.client_body_min_rate * t.client_body_window:
                    raise too_slow(
                        f"Client sent the request body slower than {t.client_body_min_rate:g} bytes per second "
                        f"(over {t.client_body_window:g} s)"
                    )
                self.window_mark, self.window_end = received, now + t.client_body_window
            window_end = self.window_end
        return min(self.deadline, self.last_progress + t.client_body_idle, window_end) - now


async def read_body(request: web.BaseRequest, limit: int, timeouts: Timeouts) -> bytes:
    """The whole body, refusing more than ``limit`` bytes as they arrive (chunked bodies too), paced (see above)."""
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
    pace = BodyPace.start(timeouts, loop.time(), len(first))
    buf = bytearray(first)
    while True:
        try:
            now = loop.time()
            async with deadlines.timeout_at(now + pace.wait(now, len(buf))):
                chunk = await request.content.readany()
        except TimeoutError:
            continue  # the pace decides, at the top of the loop, whether this is the end
        except (ConnectionError, ValueError, HttpProcessingError, RequestPayloadError) as exc:
            raise GatewayError(400, "invalid_request", "Malformed request body framing", close=True) from exc
        if not chunk:
            return bytes(buf)
        if len(buf) + len(chunk) > limit:
            raise too_large(limit)
        buf += chunk
