"""Forwarding one request upstream and relaying the answer.

- Before the response: connect and first-byte timeouts give 504, connection
  failures 502, a redirect 502 (redirects are never followed).
- Provider errors (non-2xx) and non-streamed answers are read fully (bounded by
  ``max_buffered_response_bytes``) before anything is sent, so an upstream that
  stalls or resets mid-body yields a clean 504/502 instead of a truncated 200.
- Streamed answers are relayed chunk by chunk as they arrive. For SSE a stall
  (no bytes for the idle timeout: the model's timeout, at most ``upstream_idle``
  seconds), a reset or an event over ``max_sse_event`` bytes ends the stream with
  an error event in the family's shape; other streams are aborted without the
  final chunk, which every HTTP client reports as an incomplete body.
- The provider secret never goes back: status line, headers and bodies (any status,
  streamed or not) pass through its scrubber (``data_plane.scrub``), and pooled
  connections are per origin and credential, so none carries two tenants' traffic.
- Client disconnect cancels the handler (aiohttp ``handler_cancellation``); the
  ``finally`` closes the upstream connection rather than returning it to the pool.
- The upstream hop is a ``Transport`` (``data_plane/upstream/transport.py``): the node
  passes its pool (``data_plane.upstream``, a lean HTTP/1.1 client), a test a fake. Bodies are
  passed through as sent (identity encoding, no decompression: an answer with another
  content or transfer coding, which ``Accept-Encoding: identity`` did not allow, is a 502
  ``upstream_bad_encoding``, since the scrubber cannot see a secret inside coded bytes), reading pauses when
  the client lags (bounded buffering), and a request once sent is never sent again.
- Metering (``data_plane.usage``): the meter learns the upstream status,
  timings and usage; a buffered answer's usage is read from its body, a
  stream's by a tap the bytes pass through (which may only drop what the
  gateway itself asked for). Outcomes: complete, error (non-2xx), partial
  (upstream broke a started stream), cancelled (the client went away).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from multidict import CIMultiDict

from data_plane import deadlines
from data_plane.errors import GatewayError, sse_error_event
from data_plane.scrub import MARKER_TEXT, Secret, StreamScrubber
from data_plane.sse import DEFAULT_MAX_EVENT, EventSplitter, EventTooLarge
from data_plane.upstream.body import BodySource
from data_plane.upstream.errors import UpstreamError
from data_plane.upstream.network import Network
from data_plane.upstream.response import UpstreamResponse
from data_plane.upstream.transport import Transport
from data_plane.usage.meter import CANCELLED, COMPLETE, ERROR, PARTIAL, RequestMeter
from data_plane.usage.shapes import body_usage
from data_plane.usage.stream import StreamTap, make_tap
from data_plane.usage.tokens import MalformedUsage

log = logging.getLogger("odock.data_plane.relay")

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
UPSTREAM_EVENT_TOO_LARGE = "Upstream provider sent a streamed event larger than the gateway relays"
UPSTREAM_BAD_ENCODING = "Upstream provider answered in a content encoding the gateway did not ask for"


def response_headers(upstream: UpstreamResponse, secret: Secret | None = None) -> CIMultiDict[str]:
    """Upstream response headers minus hop-by-hop ones (and any the Connection header names), scrubbed."""
    out: CIMultiDict[str] = CIMultiDict()
    named: list[str] = []
    request_id: str | None = None
    alt_id: str | None = None
    forms = secret.texts if secret is not None else ()
    for name, value in upstream.raw_headers:
        for form in forms:  # inline: this runs for every header of every answer
            if form in value:
                value = value.replace(form, MARKER_TEXT)
            if form in name:
                name = ""  # a header named after the secret is dropped
        if secret is not None and ("%" in value or "\\" in value or "%" in name):
            value = secret.text(value)  # escaped forms (rare: the checks above are one-byte searches)
            if secret.text(name) != name:
                name = ""
        if not name:
            continue
        lower = name.lower()
        if lower in _HOP_BY_HOP:
            if lower == "connection":
                named += (t.strip().lower() for t in value.split(","))
            elif lower == "x-request-id" and request_id is None:
                request_id = value
            continue
        if lower == "request-id" and alt_id is None:
            alt_id = value
        out.add(name, value)
    for token in named:
        if token:
            out.popall(token, None)
    upstream_id = request_id or alt_id
    if upstream_id:
        out["x-upstream-request-id"] = upstream_id[:128]
    return out


class Trip:
    """One trip upstream: its time bounds, the meter, and how the answer's head is awaited.

    Shared by the native relay (bytes passed through) and the translated one
    (``translated_relay.py``), so both open the upstream and read it under the same rules.
    """

    __slots__ = ("deadline", "idle", "meter")

    def __init__(self, meter: RequestMeter, *, upstream_idle: float, deadline: float) -> None:
        self.meter = meter
        self.idle = upstream_idle  # longest silence between reads
        self.deadline = deadline  # loop.time() by which everything must be done

    def _deadline(self, limit: float) -> float:
        """Loop time by which a wait bounded by ``limit`` seconds must end (never past the request's)."""
        return min(asyncio.get_running_loop().time() + limit, self.deadline)

    async def open(
        self,
        transport: Transport,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | BodySource | None,
        *,
        tenant: str,
        first_byte_timeout: float,
        network: Network | None = None,
    ) -> UpstreamResponse:
        """The upstream's answer once its head arrived; the gateway's 502/504 when none usable came
        (a redirect or an encoded answer is released and refused: never followed, never decoded)."""
        meter = self.meter
        meter.upstream_started()
        try:
            async with deadlines.timeout_at(self._deadline(first_byte_timeout)):
                upstream = await transport.request(method, url, headers, body, tenant=tenant, network=network)
        except TimeoutError:  # connect timeouts included
            raise GatewayError(504, "upstream_timeout", UPSTREAM_TIMEOUT) from None
        except (UpstreamError, OSError) as exc:
            # The upstream package's own messages name the cause (a TLS verification failure, the
            # proxy's refusal) and never a secret or URL; a bare OSError's may name addresses.
            cause = f": {exc}" if isinstance(exc, UpstreamError) and str(exc) else ""
            log.info("upstream request failed: %s%s", type(exc).__name__, cause)
            raise GatewayError(502, "upstream_unreachable", UPSTREAM_UNREACHABLE) from None
        meter.upstream_responded()
        status = upstream.status
        if 300 <= status < 400 or upstream.encoded:
            meter.upstream_finished()
            upstream.release()
            if 300 <= status < 400:
                raise GatewayError(502, "upstream_redirect", UPSTREAM_REDIRECT)
            # coded bytes cannot be scrubbed; nor is a bomb ever decoded here
            raise GatewayError(502, "upstream_bad_encoding", UPSTREAM_BAD_ENCODING)
        meter.status = status
        return upstream

    async def read(self, upstream: UpstreamResponse) -> bytes:
        """The answer's next bytes (b"" at its end) within the idle bound and the deadline."""
        data = upstream.read_nowait()  # what already arrived needs no timer
        if data or upstream.at_eof():
            return data
        return await upstream.read(self._deadline(self.idle))


class Relay(Trip):
    """One request's trip upstream and back: the answer relayed as it came (scrubbed, metered)."""

    __slots__ = ("family", "max_buffered", "max_event", "request", "secret")

    def __init__(
        self,
        request: web.Request,
        meter: RequestMeter,
        *,
        family: int,
        upstream_idle: float,
        deadline: float,
        max_buffered: int,
        max_sse_event: int = DEFAULT_MAX_EVENT,
    ) -> None:
        super().__init__(meter, upstream_idle=upstream_idle, deadline=deadline)
        self.request = request
        self.family = family
        self.max_buffered = max_buffered
        self.max_event = max_sse_event
        self.secret: Secret | None = None

    async def forward(
        self,
        transport: Transport,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        *,
        first_byte_timeout: float,
        streaming: bool,
        strip_injected: bool = False,
        secret: Secret | None = None,
    ) -> web.StreamResponse:
        """Send the request upstream and relay its answer (one try: the attempt loop, ``attempts.py``,
        uses :meth:`open` and :meth:`relay`). ``secret``, the headers' credential, keys the pool and is
        scrubbed from the answer; the timeout bounds the first byte and (capped) every silence."""
        self.secret = secret
        if first_byte_timeout > 0:
            self.idle = min(self.idle, first_byte_timeout)
        upstream = await self.open(
            transport, method, url, headers, body,
            tenant=secret.pool_tag if secret is not None else "", first_byte_timeout=first_byte_timeout,
        )  # fmt: skip
        return await self.relay(upstream, streaming=streaming, strip_injected=strip_injected)

    async def relay(
        self, upstream: UpstreamResponse, *, streaming: bool, strip_injected: bool = False
    ) -> web.StreamResponse:
        """Relay an opened answer to the client (``self.secret`` is its credential's); always released."""
        meter = self.meter
        try:
            status = upstream.status
            is_sse = upstream.content_type == "text/event-stream"
            if 200 <= status < 300 and (streaming or is_sse):
                tap = make_tap(meter, is_sse=is_sse, strip_injected=strip_injected)
                return await self._relay_stream(upstream, is_sse, tap)
            return await self._relay_buffered(upstream)
        finally:
            meter.upstream_finished()
            # An answer that did not end cleanly is closed, not pooled: on client disconnect
            # this is what tells the provider to stop generating.
            upstream.release()

    async def read_failure(self, upstream: UpstreamResponse) -> bytes:
        """A retryable answer's body read and released (a stall or break: 504/502); past ``max_buffered``
        it is kept open and the caller passes it on with :meth:`relay_rest` (too big to hold)."""
        buf = bytearray()
        try:
            while chunk := await self.read(upstream):
                buf += chunk
                if len(buf) > self.max_buffered:
                    return bytes(buf)
        except TimeoutError:
            raise GatewayError(504, "upstream_timeout", UPSTREAM_STALLED) from None
        except (UpstreamError, OSError):
            raise GatewayError(502, "upstream_reset", UPSTREAM_BROKEN) from None
        finally:
            if len(buf) <= self.max_buffered:
                upstream.release()
        return bytes(buf)

    async def relay_rest(self, upstream: UpstreamResponse, head: bytes) -> web.StreamResponse:
        """An error answer too big to hold: ``head`` (already read) and the rest as they come."""
        try:
            return await self._relay_stream(upstream, False, None, head)
        finally:
            self.meter.upstream_finished()
            upstream.release()

    async def _relay_buffered(self, upstream: UpstreamResponse) -> web.StreamResponse:
        meter = self.meter
        limit = self.max_buffered
        try:
            body = await self.read(upstream)
            if body and len(body) <= limit:
                chunk = await self.read(upstream)
                if chunk:  # more than one read (the usual answer is one): gather it, up to the limit
                    buf = bytearray(body)
                    while chunk:
                        buf += chunk
                        if len(buf) > limit:
                            break
                        chunk = await self.read(upstream)
                    body = bytes(buf)
        except TimeoutError:
            raise GatewayError(504, "upstream_timeout", UPSTREAM_STALLED) from None
        except (UpstreamError, OSError):
            raise GatewayError(502, "upstream_reset", UPSTREAM_BROKEN) from None
        if len(body) > limit:
            # Too big to hold: relay the rest as it comes (a break then aborts the connection).
            tap = (
                make_tap(meter, is_sse=False, strip_injected=False) if 200 <= upstream.status < 300 else None
            )
            return await self._relay_stream(upstream, False, tap, body)
        return self.buffered_answer(upstream, body)

    def buffered_answer(self, upstream: UpstreamResponse, body: bytes) -> web.Response:
        """The client's response for an answer whose body was read (here, or by :meth:`read_failure`)."""
        meter = self.meter
        secret = self.secret
        if secret is not None:
            body = secret.bytes(body)
        meter.upstream_finished()
        status = upstream.status
        if 200 <= status < 300:
            try:
                meter.report(body_usage(meter.shape, body), final=True)
            except MalformedUsage:
                meter.malformed()
            meter.settle(status, COMPLETE)
        else:
            meter.settle(status, ERROR)
        return web.Response(status=status, reason=self._reason(upstream), body=body,
                            headers=response_headers(upstream, secret))  # fmt: skip

    def _reason(self, upstream: UpstreamResponse) -> str:
        return self.secret.text(upstream.reason) if self.secret is not None else upstream.reason

    async def _relay_stream(
        self, upstream: UpstreamResponse, is_sse: bool, tap: StreamTap | None, head: bytes = b""
    ) -> web.StreamResponse:
        request, meter = self.request, self.meter
        status = upstream.status
        ok = 200 <= status < 300
        # Bytes already in hand go out with the head, in one send (every ``write_relayed`` sends a
        # head still waiting); with none yet, the head goes at prepare: a stream's status never waits for its
        # upstream's first event.
        kind = HeadWithFirstBytes if head or upstream.has_body_bytes() else web.StreamResponse
        resp = kind(
            status=status, reason=self._reason(upstream), headers=response_headers(upstream, self.secret)
        )
        if is_sse:
            resp.headers["Cache-Control"] = resp.headers.get("Cache-Control", "no-cache")
            resp.headers["X-Accel-Buffering"] = "no"
        await resp.prepare(request)
        splitter = EventSplitter(self.max_event) if is_sse else None
        scrub = self.secret.stream() if self.secret is not None else None
        try:
            if head:
                await write_relayed(resp, _pass(head, scrub, tap), meter)
            failure, last = await self._pump(upstream, resp, splitter, scrub, tap)
            meter.upstream_finished()
            if failure is None:
                rest = splitter.flush() if splitter is not None else b""
                if scrub is not None:
                    rest = scrub.feed(rest) + scrub.flush()
                if tap is not None and rest:
                    rest = tap.relay(rest)
                await end_relayed(resp, last + rest, meter)
                meter.settle(status, COMPLETE if ok else ERROR)
                return resp
            meter.settle(status, PARTIAL if ok else ERROR, failure.code)
            log.info("upstream stream ended early: %s", failure.code)
            if splitter is None:
                # No framing to end cleanly in: drop the connection without the terminating chunk.
                if request.transport is not None:
                    request.transport.abort()
                return resp
            await resp.write(sse_error_event(self.family, failure))
            await resp.write_eof()
        except ConnectionResetError:
            meter.settle(status, CANCELLED)  # the client went away; the caller closes upstream
        return resp

    async def _pump(
        self,
        upstream: UpstreamResponse,
        resp: web.StreamResponse,
        splitter: EventSplitter | None,
        scrub: StreamScrubber | None,
        tap: StreamTap | None,
    ) -> tuple[GatewayError | None, bytes]:
        """Relay upstream chunks until the end or an upstream failure (the error to report). At the
        end, the bytes of the read that completed the answer are returned unsent (the caller sends
        them with the end of the answer)."""
        meter = self.meter
        while True:
            try:
                chunk = await self.read(upstream)
            except TimeoutError:
                return GatewayError(504, "upstream_timeout", UPSTREAM_STALLED), b""
            except (UpstreamError, OSError):
                return GatewayError(502, "upstream_reset", UPSTREAM_BROKEN), b""
            if not chunk:
                return None, b""
            if splitter is not None:
                try:
                    chunk = splitter.feed(chunk)
                except EventTooLarge:
                    return GatewayError(502, "upstream_event_too_large", UPSTREAM_EVENT_TOO_LARGE), b""
            data = _pass(chunk, scrub, tap)
            if upstream.at_eof():
                return None, data
            # A client write failure propagates: it is not an upstream error.
            await write_relayed(resp, data, meter)


class HeadWithFirstBytes(web.StreamResponse):
    """A stream response whose head waits for the first body write and goes out with it (aiohttp's
    own opt-in, as its ``Response`` uses): one send instead of two when the answer is in hand."""

    _send_headers_immediately = False


def _pass(data: bytes, scrub: StreamScrubber | None, tap: StreamTap | None) -> bytes:
    """Relayed bytes on their way out: the secret scrubbed, then usage read (and injected parts cut)."""
    if scrub is not None and data:
        data = scrub.feed(data)
    if tap is not None and data:
        data = tap.relay(data)
    return data


async def write_relayed(resp: web.StreamResponse, data: bytes, meter: RequestMeter) -> None:
    """Relay ``data``; with nothing to relay (all held back: a partial event, a scrubbed tail), send
    a head still waiting (``HeadWithFirstBytes``) before the relay waits on upstream again."""
    if data:
        meter.first_byte()
    await resp.write(data)


async def end_relayed(
    resp: web.StreamResponse, data: bytes, meter: RequestMeter, trailer: bytes = b""
) -> None:
    """The answer's last bytes (then ``trailer``, the gateway's own: an error event) with the chunked
    terminator, in one send (and with the head, when the whole answer was in hand at prepare)."""
    if data:
        meter.first_byte()
    await resp.write_eof(data + trailer)
