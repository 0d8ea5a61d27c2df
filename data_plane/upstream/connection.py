"""One keep-alive HTTP/1.1 connection to an upstream: write a request, parse its answer (httptools)."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
from typing import TYPE_CHECKING, Protocol, cast

import httptools

from data_plane.upstream.errors import RequestBodyFailed, UpstreamBroken
from data_plane.upstream.response import UpstreamResponse

if TYPE_CHECKING:
    from data_plane.upstream.body import BodySource
    from data_plane.upstream.url import Origin

# Below this a request body is copied into the head's buffer (one write); above, written beside it.
_COPY_BODY_MAX = 64 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})
# The most bytes an answer's status line and headers may take (aiohttp's client allows 8190 per
# line): an upstream sending more, or never ending its head, is broken rather than buffered.
MAX_HEAD_BYTES = 64 * 1024


class _BadLength(Exception):
    """A streamed body's source produced more or fewer bytes than its announced length."""


class _Unexpected(Exception):
    """Bytes arrived that answer no request (an idle connection, or more after a complete answer)."""


class Owner(Protocol):
    """What a connection tells whoever pools it (the pool implements this)."""

    def connection_done(self, conn: Connection, reusable: bool) -> None:
        """A request finished with ``conn``: it may carry another if ``reusable`` (else it was closed)."""

    def connection_closed(self, conn: Connection) -> None:
        """The transport of ``conn`` is gone."""


class Connection(asyncio.Protocol):
    """A connection owned by the pool; it carries one request at a time, for one credential.

    It goes back to the pool only once its request was wholly written and its answer wholly
    read; an answer that arrives while the request is still being written (an early error)
    retires it, and so does any byte arriving while it is idle (``data_received``, or
    :meth:`stale` for bytes the loop has not read yet when the connection is taken again).
    """

    def __init__(self, pool: Owner, origin: Origin, pool_key: str) -> None:
        self.origin = origin
        self.pool_key = pool_key  # origin and credential: idle connections are found by it
        self.transport: asyncio.Transport | None = None
        self.closed = False  # the transport is gone or going
        self.paused = False  # reading paused: the reader lags (flow control)
        self.keep_alive = False  # the last answer allows another request on this connection
        self.idle_since = 0.0
        self.sent = 0  # requests written on this connection
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self._response: UpstreamResponse | None = None
        self._head: asyncio.Future[UpstreamResponse] | None = None
        self._reason = b""
        self._informational = False  # parsing a 1xx answer, which precedes the real one
        self._has_length = False
        self._chunked = False
        self._head_bytes = 0  # bytes received while the answer's head is incomplete
        self._early = False  # the answer began before the request was wholly written
        self._fd = -1
        self._poller: select.poll | None = None  # made on the first reuse, then kept
        # A streamed body (body.BodySource) is written by a task as the socket drains.
        self._pump: asyncio.Task[None] | None = None
        self._body_pending = False  # the pump has not written the whole body yet
        self._write_paused = False  # the transport's buffer is above its high-water mark
        self._drained: asyncio.Future[None] | None = None  # the pump waits on it while paused

    # Used by the pool and the response.

    def send(self, head: bytes, body: bytes | BodySource | None) -> asyncio.Future[UpstreamResponse]:
        """Write one request; the future resolves when the answer's head has arrived.

        A :class:`~data_plane.upstream.body.BodySource` is written by a task, chunk by chunk as
        the transport drains; it stops at an early answer (the connection is then retired) and
        fails the request with ``RequestBodyFailed`` if the source does.
        """
        transport = self.transport
        assert transport is not None and self._response is None
        self._response = UpstreamResponse(self)
        self.keep_alive = False
        self._early = False
        head_future = self._head = asyncio.get_running_loop().create_future()
        self._head_bytes = 0
        self.sent += 1
        if not body:
            transport.write(head)
        elif isinstance(body, bytes):
            if len(body) <= _COPY_BODY_MAX:
                transport.write(head + body)
            else:
                transport.writelines((head, body))
        else:
            transport.write(head)
            self._body_pending = True
            self._pump = asyncio.get_running_loop().create_task(self._write_body(body, head_future))
        return head_future

    def finished(self, clean: bool) -> None:
        """The response's reader is done: pool the connection if it can carry another request, else close it."""
        response, self._response = self._response, None
        # A complete answer leaves the connection clean even if the reader left bytes unread;
        # not so one that came early, or while request bytes still wait to be written (they
        # would be read as the start of the next request).
        reusable = (
            clean
            and self.keep_alive
            and not self.closed
            and response is not None
            and not self._early
            and self.transport is not None
            and self.transport.get_write_buffer_size() == 0
        )
        if not reusable:
            self.close()
        elif self.paused:
            self.resume()  # an idle connection is read: whatever arrives on it retires it
        self._pool.connection_done(self, reusable)

    def transport_closing(self) -> bool:
        """Whether the transport is closing (before ``connection_lost`` has run)."""
        return self.transport is None or self.transport.is_closing()

    def stale(self) -> bool:
        """Whether bytes (or the peer's close) wait unread on this idle connection's socket.

        The loop may not have read them yet when the connection is taken again; sending a
        request first would hand them to it as its answer. One poll(2), no wait.
        """
        if self._fd < 0:
            return False
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
            poller.register(self._fd, select.POLLIN | select.POLLPRI)
        try:
            return bool(poller.poll(0))
        except OSError:
            return True

    def resume(self) -> None:
        """The reader caught up: read the socket again."""
        self.paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        """Close the transport (idempotent); the pool learns of it in ``connection_lost``."""
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        self._stop_pump()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's transports are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                self._fd = sock.fileno()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass  # not TCP (tests may use other sockets); latency only

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._break("Malformed HTTP answer from upstream")
            return
        if self._head is not None:  # the head is still incomplete after these bytes
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._break("Upstream answer head too large")

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_pump()

    def eof_received(self) -> bool | None:
        return False  # close our side too; connection_lost decides what the end means

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.keep_alive = False
        response = self._response
        if response is not None and exc is None and response.close_delimited and self._head is None:
            response.feed_eof()  # the end of a body without a length is the end of the connection
        else:
            self._fail("Upstream closed the connection before completing its answer")
        self._stop_pump()
        self._pool.connection_closed(self)

    # httptools callbacks (each runs inside data_received).

    def on_message_begin(self) -> None:
        response = self._response
        if response is None or response.is_eof():
            raise _Unexpected
        self._reason = b""
        self._has_length = self._chunked = False
        response.raw_headers = []
        response.encoded = False  # a 1xx answer's headers do not describe the real one

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self._response
        assert response is not None
        if self._head is None:
            return  # a chunked body's trailer: the head was handed over already
        lower = name.lower()
        text = value.decode("utf-8", "surrogateescape")
        if lower == b"content-type":
            response.content_type = text.partition(";")[0].strip().lower()
        elif lower == b"content-length":
            self._has_length = True
        elif lower == b"transfer-encoding":
            self._chunked = True
            if text.strip().lower() != "chunked":
                response.encoded = True  # e.g. "gzip, chunked"
        elif lower == b"content-encoding" and text.strip().lower() not in ("", "identity"):
            response.encoded = True
        response.raw_headers.append((name.decode("utf-8", "surrogateescape"), text))

    def on_headers_complete(self) -> None:
        response = self._response
        assert response is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            if status == 101:
                raise _Unexpected  # no protocol switch was asked for
            self._informational = True  # e.g. 103 Early Hints: the real answer follows
            return
        response.status = status
        if self._body_pending or (self.transport is not None and self.transport.get_write_buffer_size()):
            self._early = True  # answered before reading the whole request: never reused
        response.reason = self._reason.decode("utf-8", "replace")
        response.close_delimited = not (self._has_length or self._chunked or status in _NO_BODY_STATUSES)
        head = self._head
        self._head = None
        if head is not None and not head.done():
            head.set_result(response)

    def on_body(self, body: bytes) -> None:
        response = self._response
        assert response is not None
        if response.feed_data(body) and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        response = self._response
        assert response is not None
        self.keep_alive = self._parser.should_keep_alive()
        response.feed_eof()

    # A streamed body.

    async def _write_body(self, body: BodySource, head: asyncio.Future[UpstreamResponse]) -> None:
        """Write ``body`` after the head, pausing while the transport's buffer is full.

        Stops without error once an answer began (``self._head`` no longer this request's: the
        provider answered early, or the request failed) or the connection closed.
        """
        expected = body.length
        written = 0
        chunks = body.chunks()
        try:
            async for data in chunks:
                while self._write_paused and not self.closed and self._head is head:
                    self._drained = asyncio.get_running_loop().create_future()
                    await self._drained
                if self.closed or self._head is not head:
                    return
                written += len(data)
                if written > expected:
                    raise _BadLength(f"its source yielded more than its {expected} bytes")
                assert self.transport is not None
                self.transport.write(data)
            if written != expected:
                raise _BadLength(f"its source ended after {written} of its {expected} bytes")
            self._body_pending = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the source fails the request
            if not self.closed and self._head is head:
                # Our own length checks say what went wrong; a source's error only its type (an
                # OSError's text names a spool path, of no use to whoever reads the log line).
                cause = str(exc) if isinstance(exc, _BadLength) else type(exc).__name__
                self._break(f"the request body could not be read: {cause}", RequestBodyFailed)
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()  # a file source's reads end here, not at garbage collection

    def _wake_pump(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _stop_pump(self) -> None:
        """The connection is closing: the body's writer wakes, sees it and ends."""
        self._wake_pump()
        pump, self._pump = self._pump, None
        if pump is not None and not pump.done() and pump is not asyncio.current_task():
            pump.cancel()

    # Failures.

    def _break(self, message: str, kind: type[UpstreamBroken | RequestBodyFailed] = UpstreamBroken) -> None:
        self.keep_alive = False
        self._fail(message, kind)
        self.close()

    def _fail(self, message: str, kind: type[UpstreamBroken | RequestBodyFailed] = UpstreamBroken) -> None:
        error = kind(message)
        head = self._head
        if head is not None:
            self._head = None
            if not head.done():
                head.set_exception(error)
        response = self._response
        if response is not None:  # read only after a head, which a failing body never precedes
            response.set_exception(error if isinstance(error, UpstreamBroken) else UpstreamBroken(message))
