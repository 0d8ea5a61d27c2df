"""Forwarding one request upstream and relaying the answer.

- Before the response: connect and first-byte timeouts give 504, connection
  failures 502, a redirect 502 (redirects are never followed).
- Provider errors (non-2xx) and non-streamed answers are read fully (bounded by
  ``max_buffered_response_bytes``) before anything is sent, so an upstream that
  stalls or resets mid-body yields a clean 504/502 instead of a truncated 200.
- Streamed answers are relayed chunk by chunk as they arrive. For SSE a stall
  (no bytes for ``upstream_idle`` seconds) or a reset ends the stream with an
  error event in the family's shape; other streams are aborted without the
  final chunk, which every HTTP client reports as an incomplete body.
- Client disconnect cancels the handler (aiohttp ``handler_cancellation``); the
  ``finally`` closes the upstream connection rather than returning it to the pool.
- Metering (``data_plane.usage``): the meter learns the upstream status,
  timings and usage; a buffered answer's usage is read from its body, a
  stream's by a tap the bytes pass through (which may only drop what the
  gateway itself asked for). Outcomes: complete, error (non-2xx), partial
  (upstream broke a started stream), cancelled (the client went away).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from data_plane.errors import GatewayError, sse_error_event
from data_plane.sse import EventSplitter
from data_plane.usage.meter import CANCELLED, COMPLETE, ERROR, PARTIAL, RequestMeter
from data_plane.usage.shapes import body_usage
from data_plane.usage.stream import StreamTap, make_tap
from data_plane.usage.tokens import MalformedUsage

log = logging.getLogger("odock.data_plane.proxy")

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "date",
        "server",
        "x-request-id",
    }
)

UPSTREAM_TIMEOUT = "Upstream provider did not respond in time"
UPSTREAM_STALLED = "Upstream provider stopped sending data"
UPSTREAM_UNREACHABLE = "Upstream provider is unreachable"
UPSTREAM_BROKEN = "Upstream provider closed the connection before completing its response"
UPSTREAM_REDIRECT = "Upstream provider answered with a redirect; redirects are not followed"


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """One request to send upstream."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    first_byte_timeout: float
    streaming: bool
    family: int


@dataclass(frozen=True, slots=True)
class ProxyLimits:
    """Per-request relay limits."""

    upstream_idle: float
    deadline: float  # loop.time() by which everything must be done
    max_buffered: int


def _timeout(limit: float, deadline: float) -> float:
    return max(0.0, min(limit, deadline - asyncio.get_running_loop().time()))


def response_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict[str]:
    """Upstream response headers minus hop-by-hop ones (and any the Connection header names)."""
    named = {h.strip().lower() for h in upstream.headers.get("Connection", "").split(",") if h.strip()}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.headers.items():
        lower = name.lower()
        if lower in _HOP_BY_HOP or lower in named:
            continue
        out.add(name, value)
    upstream_id = upstream.headers.get("x-request-id") or upstream.headers.get("request-id")
    if upstream_id:
        out["x-upstream-request-id"] = upstream_id[:128]
    return out


async def forward(
    request: web.Request,
    session: aiohttp.ClientSession,
    call: UpstreamCall,
    limits: ProxyLimits,
    meter: RequestMeter,
    *,
    strip_injected: bool = False,
) -> web.StreamResponse:
    """Send ``call`` upstream and relay its answer to the client."""
    meter.upstream_started()
    try:
        async with asyncio.timeout(_timeout(call.first_byte_timeout, limits.deadline)):
            upstream = await session.request(
                call.method, call.url, headers=call.headers, data=call.body, allow_redirects=False
            )
    except TimeoutError:
        raise GatewayError(504, "upstream_timeout", UPSTREAM_TIMEOUT) from None
    except (aiohttp.ClientError, OSError) as exc:
        log.info("upstream request failed: %s", type(exc).__name__)
        raise GatewayError(502, "upstream_unreachable", UPSTREAM_UNREACHABLE) from None
    meter.upstream_responded()
    try:
        if 300 <= upstream.status < 400:
            raise GatewayError(502, "upstream_redirect", UPSTREAM_REDIRECT)
        meter.status = upstream.status
        is_sse = upstream.content_type == "text/event-stream"
        ok = 200 <= upstream.status < 300
        if ok and (call.streaming or is_sse):
            tap = make_tap(meter, is_sse=is_sse, strip_injected=strip_injected)
            return await _relay_stream(request, upstream, call, limits, is_sse, meter, tap)
        return await _relay_buffered(request, upstream, call, limits, meter)
    finally:
        meter.upstream_finished()
        # Anything not read to the end is closed, not pooled: on client disconnect this is
        # what tells the provider to stop generating.
        if not upstream.content.is_eof():
            upstream.close()
        else:
            upstream.release()


async def _read_chunk(upstream: aiohttp.ClientResponse, limits: ProxyLimits) -> bytes:
    content = upstream.content
    data = content.read_nowait()  # what already arrived needs no timer
    if data or content.is_eof():
        return data
    async with asyncio.timeout(_timeout(limits.upstream_idle, limits.deadline)):
        return await content.readany()


async def _relay_buffered(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    call: UpstreamCall,
    limits: ProxyLimits,
    meter: RequestMeter,
) -> web.StreamResponse:
    buf = bytearray()
    try:
        while True:
            chunk = await _read_chunk(upstream, limits)
            if not chunk:
                break
            buf += chunk
            if len(buf) > limits.max_buffered:
                # Too big to hold: relay the rest as it comes (a break then aborts the connection).
                ok = 200 <= upstream.status < 300
                tap = make_tap(meter, is_sse=False, strip_injected=False) if ok else None
                return await _relay_stream(request, upstream, call, limits, False, meter, tap, bytes(buf))
    except TimeoutError:
        raise GatewayError(504, "upstream_timeout", UPSTREAM_STALLED) from None
    except (aiohttp.ClientError, OSError):
        raise GatewayError(502, "upstream_reset", UPSTREAM_BROKEN) from None
    meter.upstream_finished()
    body = bytes(buf)
    if 200 <= upstream.status < 300:
        try:
            meter.report(body_usage(meter.shape, body), final=True)
        except MalformedUsage:
            meter.malformed()
        meter.settle(upstream.status, COMPLETE)
    else:
        meter.settle(upstream.status, ERROR)
    return web.Response(
        status=upstream.status, reason=upstream.reason, body=body, headers=response_headers(upstream)
    )


async def _relay_stream(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    call: UpstreamCall,
    limits: ProxyLimits,
    is_sse: bool,
    meter: RequestMeter,
    tap: StreamTap | None,
    head: bytes = b"",
) -> web.StreamResponse:
    ok = 200 <= upstream.status < 300
    resp = web.StreamResponse(
        status=upstream.status, reason=upstream.reason, headers=response_headers(upstream)
    )
    if is_sse:
        resp.headers["Cache-Control"] = resp.headers.get("Cache-Control", "no-cache")
        resp.headers["X-Accel-Buffering"] = "no"
    await resp.prepare(request)
    splitter = EventSplitter() if is_sse else None
    try:
        if head:
            await _write(resp, tap.relay(head) if tap is not None else head, meter)
        failure = await _pump(upstream, resp, splitter, limits, meter, tap)
        meter.upstream_finished()
        if failure is None:
            if splitter is not None and splitter.pending:
                rest = splitter.flush()
                await _write(resp, tap.relay(rest) if tap is not None else rest, meter)
            await resp.write_eof()
            meter.settle(upstream.status, COMPLETE if ok else ERROR)
            return resp
        meter.settle(upstream.status, PARTIAL if ok else ERROR)
        log.info("upstream stream ended early: %s", failure.code)
        if splitter is None:
            # No framing to end cleanly in: drop the connection without the terminating chunk.
            if request.transport is not None:
                request.transport.abort()
            return resp
        await resp.write(sse_error_event(call.family, failure))
        await resp.write_eof()
    except ConnectionResetError:
        meter.settle(upstream.status, CANCELLED)  # the client went away; the caller closes upstream
    return resp


async def _write(resp: web.StreamResponse, data: bytes, meter: RequestMeter) -> None:
    if data:
        meter.first_byte()
        await resp.write(data)


async def _pump(
    upstream: aiohttp.ClientResponse,
    resp: web.StreamResponse,
    splitter: EventSplitter | None,
    limits: ProxyLimits,
    meter: RequestMeter,
    tap: StreamTap | None,
) -> GatewayError | None:
    """Relay upstream chunks until the end (None) or an upstream failure (the error to report)."""
    while True:
        try:
            chunk = await _read_chunk(upstream, limits)
        except TimeoutError:
            return GatewayError(504, "upstream_timeout", UPSTREAM_STALLED)
        except (aiohttp.ClientError, OSError):
            return GatewayError(502, "upstream_reset", UPSTREAM_BROKEN)
        if not chunk:
            return None
        out = splitter.feed(chunk) if splitter is not None else chunk
        if tap is not None and out:
            out = tap.relay(out)
        # A client write failure propagates: it is not an upstream error.
        await _write(resp, out, meter)
