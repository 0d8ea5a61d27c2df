"""The upstream trip of a translated chat completion and its answer in OpenAI's shape.

The native relay (``relay.py``) passes bytes through; this one hands them to the backend's
translator: a 2xx JSON answer becomes a ``chat.completion``, a stream is split into events
(``sse.EventSplitter``, bounded by ``ODOCK_MAX_SSE_EVENT_BYTES``), each fed to the translator's
``ChunkWriter`` and written to the client at once, and an error answer (any status >= 400)
becomes OpenAI's error document with that status (``Retry-After`` kept). The timeouts, the
buffering bound, the scrubbing of the provider secret from everything sent to the client and
the gateway's own errors (rendered in OpenAI's shape by the middleware; an ``error`` chunk ends a
broken stream) are the native relay's. The meter reads the NATIVE answer (the backend
endpoint's usage shape) before it is translated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from aiohttp import web

from data_plane.errors import GatewayError, sse_error_event
from data_plane.providers import OPENAI
from data_plane.providers.translator import ChatTranslator, ChunkWriter, OpenAIError, ReplyIds, UpstreamCall
from data_plane.relay import (
    UPSTREAM_BROKEN,
    UPSTREAM_EVENT_TOO_LARGE,
    UPSTREAM_STALLED,
    HeadWithFirstBytes,
    Trip,
    end_relayed,
    write_relayed,
)
from data_plane.scrub import Secret
from data_plane.sse import EVENT_END, EventSplitter, EventTooLarge
from data_plane.upstream.errors import UpstreamError
from data_plane.upstream.network import Network
from data_plane.upstream.response import UpstreamResponse
from data_plane.upstream.transport import Transport
from data_plane.usage.meter import CANCELLED, COMPLETE, ERROR, PARTIAL, RequestMeter
from data_plane.usage.shapes import body_usage
from data_plane.usage.stream import StreamTap, make_tap
from data_plane.usage.tokens import MalformedUsage, Usage

log = logging.getLogger("odock.data_plane.translated")

UPSTREAM_UNTRANSLATABLE = "Upstream provider sent an answer the gateway could not translate"


def upstream_url(base_url: str, path: str) -> str:
    """The route's base URL (the server root, as for the family's native endpoints) + the call's path."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("base URL must be an absolute http(s) URL")
    path, _, query = path.partition("?")
    if parts.query:
        query = f"{parts.query}&{query}" if query else parts.query
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + path, query, ""))


@dataclass(slots=True)
class Answer:
    """One upstream call's answer, translated (``document``) or an error (``error``)."""

    status: int
    document: dict[str, Any] | None = None
    error: OpenAIError | None = None
    retry_after: str | None = None
    usage: Usage | None = None  # the native answer's usage
    malformed: bool = False  # its usage could not be read


def untranslatable() -> GatewayError:
    return GatewayError(502, "upstream_untranslatable", UPSTREAM_UNTRANSLATABLE)


_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def split_events(block: bytes) -> list[bytes]:
    """Complete SSE events (each without the blank line that ended it) of a block the splitter released."""
    if b"\r" not in block:
        # LF line ends only (the usual read, one event or many): a blank line is exactly "\n\n",
        # so a split finds the same events as the general pattern, at C speed.
        return [event for event in block.split(b"\n\n") if event and not event.isspace()]
    events: list[bytes] = []
    start = 0
    for match in EVENT_END.finditer(block):
        event = block[start : match.start()]
        if event and not event.isspace():  # not blank (isspace: the same bytes strip() drops, no copy)
            events.append(event)
        start = match.end()
    rest = block[start:]
    if rest and not rest.isspace():  # the final event of a stream that ended without a blank line
        events.append(rest)
    return events


class TranslatedRelay(Trip):
    """One translated request's trips upstream (one, or ``n`` for a fan-out) and its answer."""

    def __init__(
        self,
        request: web.Request,
        meter: RequestMeter,
        transport: Transport,
        translator: ChatTranslator,
        secret: Secret,
        *,
        first_byte_timeout: float,
        upstream_idle: float,
        deadline: float,
        max_buffered: int,
        max_sse_event: int,
    ) -> None:
        idle = min(upstream_idle, first_byte_timeout) if first_byte_timeout > 0 else upstream_idle
        super().__init__(meter, upstream_idle=idle, deadline=deadline)
        self.upstream_idle = upstream_idle
        self.network: Network | None = None  # the deployment's (``translated_leg.py`` sets it per attempt)
        self.request = request
        self.transport = transport
        self.translator = translator
        self.secret = secret
        self.first_byte = first_byte_timeout
        self.max_buffered = max_buffered
        self.max_event = max_sse_event

    async def send(self, url: str, headers: dict[str, str], call: UpstreamCall) -> UpstreamResponse:
        """The native call sent; its answer once the head arrived (``Trip.open``'s rules)."""
        return await self.open(
            self.transport, "POST", url, headers, call.body,
            tenant=self.secret.pool_tag, first_byte_timeout=self.first_byte, network=self.network,
        )  # fmt: skip

    async def _read_all(self, upstream: UpstreamResponse) -> bytes:
        buf = bytearray()
        try:
            while chunk := await self.read(upstream):
                buf += chunk
                if len(buf) > self.max_buffered:
                    raise GatewayError(
                        502, "upstream_too_large", "Upstream provider's answer is too large to translate"
                    )
        except TimeoutError:
            raise GatewayError(504, "upstream_timeout", UPSTREAM_STALLED) from None
        except (UpstreamError, OSError):
            raise GatewayError(502, "upstream_reset", UPSTREAM_BROKEN) from None
        return bytes(buf)

    def _error(self, upstream: UpstreamResponse, body: bytes) -> Answer:
        try:
            error = self.translator.error(upstream.status, body)
        except Exception:  # a translator bug on a provider's error is still an error
            log.exception("translating an upstream error failed")
            error = OpenAIError(502, UPSTREAM_UNTRANSLATABLE, "api_error", "upstream_error")
        retry_after = upstream.headers.get("Retry-After") or error.retry_after
        return Answer(upstream.status, error=error, retry_after=retry_after)

    async def answer(
        self, url: str, headers: dict[str, str], call: UpstreamCall, ids: ReplyIds,
        answered: list[Answer] | None = None,
    ) -> Answer:  # fmt: skip
        """One non-streamed call: its answer translated (a GatewayError when none usable came).

        ``answered`` (a fan-out): every 2xx answer is added to it as soon as its usage is read,
        and the caller meters their sum, whatever happens to the other calls; without it, an
        answer that cannot be translated meters its own usage.
        """
        return await self.read_answer(await self.send(url, headers, call), ids, answered)

    async def read_answer(
        self, upstream: UpstreamResponse, ids: ReplyIds, answered: list[Answer] | None = None
    ) -> Answer:
        """:meth:`answer` once the head came."""
        try:
            body = await self._read_all(upstream)
        finally:
            self.meter.upstream_finished()
            upstream.release()
        if upstream.status >= 300:
            return self._error(upstream, body)
        result = Answer(upstream.status)
        try:
            result.usage = body_usage(self.meter.shape, body)
        except (MalformedUsage, ValueError):
            result.malformed = True
        if answered is not None:
            answered.append(result)
        try:
            result.document = self.translator.answer(body, ids)
        except Exception:  # noqa: BLE001 - an unreadable answer is the provider's fault: a 502
            log.info("upstream answer could not be translated")
            if answered is None:
                self._meter_usage(result)
            raise untranslatable() from None
        return result

    async def read_failure(self, upstream: UpstreamResponse) -> bytes:
        """A retryable answer's body, read whole (bounded) and released (the attempt loop's hold)."""
        try:
            return await self._read_all(upstream)
        finally:
            upstream.release()

    def failure_response(self, upstream: UpstreamResponse, body: bytes) -> web.Response:
        """The client's response for an error answer :meth:`read_failure` read."""
        self.meter.upstream_finished()
        return self.respond(self._error(upstream, body), meter_usage=False)

    async def error_answer(self, upstream: UpstreamResponse) -> Answer:
        """An error answer (status >= 300, not a redirect) read and translated."""
        try:
            body = await self._read_all(upstream)
        finally:
            self.meter.upstream_finished()
        return self._error(upstream, body)

    def stream_response(self, head_waits: bool = False) -> web.StreamResponse:
        """The client's event-stream response (not prepared); ``head_waits``: its head goes out with
        its first bytes (``relay.HeadWithFirstBytes``), for an answer whose bytes are in hand."""
        # Given whole (copied into the response's own headers): the content_type setter costs 1 µs more.
        return (HeadWithFirstBytes if head_waits else web.StreamResponse)(status=200, headers=_SSE_HEADERS)

    def _meter_usage(self, answer: Answer) -> None:
        if answer.malformed:
            self.meter.malformed()
        self.meter.report(answer.usage, final=True)

    def respond(self, answer: Answer, *, meter_usage: bool) -> web.Response:
        """The client's response for ``answer`` (metered when ``meter_usage``)."""
        error = answer.error
        if error is not None:
            self.meter.settle(error.status, ERROR)
            resp = self.json_response(error.status, error.body())
            if answer.retry_after is not None:
                resp.headers["Retry-After"] = self.secret.text(answer.retry_after)[:64]
            return resp
        if meter_usage:
            self._meter_usage(answer)
        self.meter.settle(answer.status, COMPLETE)
        assert answer.document is not None
        return self.json_response(answer.status, answer.document)

    def json_response(self, status: int, document: dict[str, Any]) -> web.Response:
        """``document`` as JSON, the provider secret scrubbed."""
        body = self.secret.bytes(orjson.dumps(document))
        return web.Response(status=status, body=body, content_type="application/json")

    async def stream(
        self, url: str, headers: dict[str, str], call: UpstreamCall, ids: ReplyIds, include_usage: bool
    ) -> web.StreamResponse:
        """One streamed call relayed chunk by chunk (an error answer as JSON, like OpenAI's)."""
        return await self.stream_opened(await self.send(url, headers, call), ids, include_usage)

    async def stream_opened(
        self, upstream: UpstreamResponse, ids: ReplyIds, include_usage: bool
    ) -> web.StreamResponse:
        """:meth:`stream` once the head came."""
        try:
            if upstream.status >= 300:
                return self.respond(await self.error_answer(upstream), meter_usage=False)
            return await self._relay_stream(upstream, ids, include_usage)
        finally:
            self.meter.upstream_finished()
            upstream.release()

    async def _relay_stream(
        self, upstream: UpstreamResponse, ids: ReplyIds, include_usage: bool
    ) -> web.StreamResponse:
        """Translate the stream read by read. Every read that does not end it is written (an empty
        write sends a head still waiting, so the client never waits on the upstream for it); the
        read that ends it goes out with the translator's tail and the end of the answer, in one
        send (with the head too, when the whole answer was in hand at prepare)."""
        meter, request = self.meter, self.request
        tap = make_tap(meter, is_sse=True, strip_injected=False)
        writer = self.translator.chunks(ids, include_usage, tap)
        splitter = EventSplitter(self.max_event)
        scrub = self.secret.stream()
        resp = self.stream_response(head_waits=upstream.has_body_bytes())
        await resp.prepare(request)
        failure: GatewayError | None = None
        out = b""  # the translation of the latest read, not written yet
        try:
            while True:
                try:
                    chunk = await self.read(upstream)
                except TimeoutError:
                    failure = GatewayError(504, "upstream_timeout", UPSTREAM_STALLED)
                    break
                except (UpstreamError, OSError):
                    failure = GatewayError(502, "upstream_reset", UPSTREAM_BROKEN)
                    break
                ended = not chunk or upstream.at_eof()
                try:
                    block = splitter.feed(chunk) if chunk else b""
                    if ended:
                        block += splitter.flush()
                except EventTooLarge:
                    failure = GatewayError(502, "upstream_event_too_large", UPSTREAM_EVENT_TOO_LARGE)
                    break
                out, failure = translate_block(writer, block, tap)
                if ended or failure is not None:
                    break
                await write_relayed(resp, scrub.feed(out), meter)
                out = b""
            meter.upstream_finished()
            if failure is None:
                try:
                    tail = writer.close()
                except Exception:  # noqa: BLE001 - a provider stream the translator cannot end
                    log.info("upstream stream could not be ended in translation")
                    failure = untranslatable()
                else:
                    await end_relayed(resp, scrub.feed(out + tail) + scrub.flush(), meter)
                    meter.settle(200, COMPLETE)
                    return resp
            meter.settle(200, PARTIAL, failure.code)
            log.info("upstream stream ended early: %s", failure.code)
            # What was translated before the failure, then the error event; a tail the scrubber
            # still holds (it may start a secret) is dropped.
            await end_relayed(resp, scrub.feed(out), meter, sse_error_event(OPENAI, failure))
        except ConnectionResetError:
            meter.settle(200, CANCELLED)  # the client went away; the caller closes upstream
        return resp



def translate_block(writer: ChunkWriter, block: bytes, tap: StreamTap | None) -> tuple[bytes, GatewayError | None]:
    """What a block's events translate to, as one piece (a write per event was a send(2) per
    chunk, a fifth of a translated stream's CPU: issue 16), and the failure that ended it.

    ``tap`` reads the native usage: over the whole block, unless the writer hands it the usage
    events it decodes (``reads_usage``, issue 16; it does so before anything else of an event can
    fail); then the events after one the writer could not translate are given to the tap, so the
    block is metered whole either way.
    """
    if not block:
        return b"", None
    if tap is not None and not writer.reads_usage:
        tap.relay(block)  # usage read from the native events; nothing to strip
    parts: list[bytes] = []
    events = split_events(block)
    for at, event in enumerate(events):
        try:
            out = writer.feed(event)
        except Exception:  # noqa: BLE001 - an event the translator cannot read ends the stream
            log.info("upstream stream event could not be translated")
            if tap is not None and writer.reads_usage and at + 1 < len(events):
                tap.relay(b"".join(rest + b"\n\n" for rest in events[at + 1 :]))
            return b"".join(parts), untranslatable()
        if out:
            parts.append(out)
    return (parts[0] if len(parts) == 1 else b"".join(parts)), None
