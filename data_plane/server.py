"""Serving one worker: listening socket (SO_REUSEPORT), slow-client guard, ready file, SIGTERM.

aiohttp has no request-header timeout, so connections get a guard: from the
moment a connection opens (or the first byte of a new request arrives on a
kept-alive one) its headers must be complete within ``client_header``
seconds, or it is answered 408 and closed. The guard is disarmed when the
handler starts (the middleware calls ``request_started``).

Requests the HTTP parser refuses (a request line or header over aiohttp's 8190-byte
limits, too many headers, bad framing) and header timeouts are answered in the error
shape of the family whose path prefix the request line started with, so SDKs parse
them like any other gateway error. Only the first bytes of each request head are
kept for that; the answer never quotes them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import signal
import socket
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, ContentEncodingError, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from prometheus_client import generate_latest

from data_plane import deadlines
from data_plane.app import build_app, family_for_path
from data_plane.errors import GatewayError, error_body
from data_plane.metrics import METRICS, multiprocess_registry
from data_plane.settings import Settings
from data_plane.state import STATE
from odock.metricsserver import MetricsServer, serve_metrics
from odock.readyfile import write_ready_file

log = logging.getLogger("odock.data_plane")

LINGER_SECONDS = 2.0
# Bytes of a request head kept to find its path prefix ("POST /v1/vllm/..." needs ~20).
HEAD_PEEK_BYTES = 64
_METHOD = re.compile(rb"[A-Z]{1,16} ")


def head_target(head: bytes) -> bytes:
    """The request target (as far as seen) of a request head starting with ``head``."""
    method = _METHOD.match(head)
    return re.split(rb"[ \r\n]", head[method.end() :], maxsplit=1)[0] if method else b""


def head_family(head: bytes) -> int:
    """The family whose error shape a request starting with ``head`` gets (by its path prefix)."""
    target = head_target(head)
    if target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
        slash = target.find(b"/", target.find(b"//") + 2)  # absolute-form: skip the authority
        target = target[slash:] if slash >= 0 else b"/"
    return family_for_path(re.split(rb"[?#]", target, maxsplit=1)[0].decode("latin-1"))


def transport_error(status: int, exc: BaseException | None, head: bytes) -> GatewayError:
    """The GatewayError for a request the HTTP parser refused (never quoting the request)."""
    if status >= 500:
        return GatewayError(500, "internal_error", "Internal gateway error")
    if isinstance(exc, LineTooLong):
        # aiohttp's exception carries the start of the offending line: the target when it is
        # the request line, a header's name or value otherwise.
        line, target = exc.args[0] if exc.args else b"", head_target(head)
        if target and isinstance(line, (bytes, bytearray)) and bytes(line[:32]).startswith(target[:32]):
            return GatewayError(status, "uri_too_long", "Request line too long")
        return GatewayError(status, "header_too_large", "Request header too large")
    if isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc):
        return GatewayError(status, "too_many_headers", "Too many request headers (limit 128)")
    if isinstance(exc, ContentEncodingError):
        return GatewayError(status, "unsupported_content_encoding", "Unsupported or corrupt Content-Encoding")
    return GatewayError(status, "malformed_http", "Malformed HTTP request")


class GuardedRequestHandler(RequestHandler):
    """RequestHandler with a deadline for receiving a complete request head."""

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._odock_header_timeout = header_timeout
        # The header deadline's slot on the loop's deadline wheel (one loop timer per request was
        # most of the guard's cost); 0: not armed.
        self._odock_wheel: deadlines.Wheel | None = None
        self._odock_slot = 0
        self._odock_busy = False
        self._odock_head = b""  # the first bytes of the current request's head
        self._odock_linger: asyncio.TimerHandle | None = None  # set once a 408 or a refusal was sent
        self._odock_refused = False  # the request being answered is one the parser refused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._odock_arm()

    def data_received(self, data: bytes) -> None:
        if self._odock_linger is not None:
            return  # the rest of a timed-out head: read and dropped until the linger ends
        if not self._odock_busy:
            if not self._odock_slot:
                self._odock_arm()
            if len(self._odock_head) < HEAD_PEEK_BYTES:
                self._odock_head += data[: HEAD_PEEK_BYTES - len(self._odock_head)]
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._odock_disarm()
        if self._odock_linger is not None:
            self._odock_linger.cancel()
        super().connection_lost(exc)

    def request_started(self) -> None:
        """The head of a request arrived: stop the header clock."""
        self._odock_busy = True
        self._odock_disarm()

    def request_finished(self, body_consumed: bool) -> None:
        """The handler is done: the next request's head starts the clock on its first byte.

        While aiohttp still drains an unread body (lingering after an early 413/401), incoming
        bytes belong to this request, not to a new head: the clock stays off.
        """
        if body_consumed:
            self._odock_busy = False
            self._odock_head = b""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Transport-level errors (unparsable requests) in the family's JSON shape, never echoing the request.

        aiohttp's default quotes the start of the offending request line (which may carry a
        ``?key=``) in the answer and in a logged traceback. A parse error has no request path
        (aiohttp passes a placeholder), so the family comes from the head bytes seen.
        """
        kind = type(exc).__name__ if exc is not None else "error"
        if status >= 500:
            log.error("error handling a request: %s", kind)
        else:
            log.debug("refused a malformed request: %s", kind)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error response")
        parse_error = isinstance(exc, HttpProcessingError) or status < 500
        self._odock_refused = parse_error
        family = head_family(self._odock_head) if parse_error else family_for_path(request.path)
        err = transport_error(status, exc, self._odock_head)
        resp = web.Response(
            status=err.status,
            body=json.dumps(error_body(family, err), separators=(",", ":")).encode(),
            content_type="application/json",
            headers={"x-request-id": f"req_{secrets.token_hex(12)}"},
        )
        resp.force_close()
        return resp

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """aiohttp's, then a lingering close after the answer to a request the parser refused.

        The client may still be sending that request (the rest of a huge head, its body): aiohttp
        would close at once, and the reset of those unread bytes can reach the client before the
        400 does (an SDK then sees a connection error and retries, never the answer).
        """
        result = await super().finish_response(request, resp, start_time)
        if self._odock_refused and self.transport is not None and not self.transport.is_closing():
            self._odock_linger_close()
        return result

    def _odock_arm(self) -> None:
        self._odock_disarm()
        wheel = self._odock_wheel
        if wheel is None:
            wheel = self._odock_wheel = deadlines.wheel()
        slot = wheel.add(self._loop.time() + self._odock_header_timeout, self, _header_deadline)
        self._odock_slot = slot or -1  # never 0 once armed (an unbounded timeout has slot 0)

    def _odock_disarm(self) -> None:
        if self._odock_slot:
            if self._odock_wheel is not None and self._odock_slot > 0:
                self._odock_wheel.discard(self._odock_slot, self)
            self._odock_slot = 0

    def _odock_expire(self) -> None:
        self._odock_slot = 0
        if self._odock_busy or self.transport is None or self.transport.is_closing():
            return
        rid = f"req_{secrets.token_hex(12)}"
        err = GatewayError(408, "request_timeout", "Request headers not received in time")
        body = json.dumps(error_body(head_family(self._odock_head), err), separators=(",", ":")).encode()
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"x-request-id: {rid}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        self._odock_linger_close()

    def _odock_linger_close(self) -> None:
        """Close after an answer the client may still be sending into.

        Closing now would answer the client's next bytes with a reset, which can reach it before
        it reads the answer. So, like aiohttp after an early answer: half-close, drop what still
        arrives, close on the client's EOF or after LINGER_SECONDS. aiohttp's own request loop
        stops as force_close stops it.
        """
        transport = self.transport
        assert transport is not None
        if transport.can_write_eof():
            transport.write_eof()
        self._odock_linger = self._loop.call_later(LINGER_SECONDS, transport.close)
        self._force_close = True
        if self._waiter:
            self._waiter.cancel()


def _header_deadline(handler: GuardedRequestHandler) -> None:
    handler._odock_expire()


class GuardedServer(web.Server):
    """web.Server whose connections get a header deadline."""

    def __init__(self, base: web.Server, header_timeout: float) -> None:
        # Rebuilt from the server AppRunner made, keeping its handler and keyword arguments.
        super().__init__(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=base._loop,
            **base._kwargs,
        )
        self._header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(
            self, loop=self._loop, header_timeout=self._header_timeout, **self._kwargs
        )


class GuardedAppRunner(web.AppRunner):
    """AppRunner serving through GuardedServer."""

    def __init__(self, app: web.Application, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        return GuardedServer(await super()._make_server(), self._header_timeout)


def listening_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A bound TCP socket; with ``reuse_port`` several workers share the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock



async def start_metrics(app: web.Application, settings: Settings) -> MetricsServer | None:
    """This worker's ``/metrics`` listener when ``ODOCK_DP_METRICS_LISTEN`` is set (not for supervised workers)."""
    if settings.metrics_listen is None:
        return None
    metrics, state = app[METRICS], app[STATE]
    registry = multiprocess_registry(settings.metrics_dir) if settings.metrics_dir else metrics.registry

    def render() -> bytes:
        metrics.refresh(state)  # exact at scrape time
        return generate_latest(registry)

    def details() -> tuple[int, dict[str, Any]]:
        status = state.status()
        return (200 if status["ready"] else 503), status

    return await serve_metrics(render, settings.metrics_listen, details)


async def serve(settings: Settings, *, reuse_port: bool = False) -> None:
    """Run one worker until SIGTERM/SIGINT, then drain in-flight requests within the grace period."""
    app = build_app(settings)
    runner = GuardedAppRunner(
        app,
        settings.timeouts.client_header,
        handle_signals=False,
        handler_cancellation=True,
        access_log=None,
        keepalive_timeout=settings.timeouts.client_keepalive,
        # After an early answer (413, 408) aiohttp reads and discards the rest of the body so the
        # client sees the answer rather than a reset; keep that short for slow or huge uploads.
        lingering_time=LINGER_SECONDS,
        shutdown_timeout=settings.timeouts.grace,
    )
    await runner.setup()
    host, port = settings.host_port
    sock = listening_socket(host, port, reuse_port)
    site = web.SockSite(runner, sock, backlog=1024)
    await site.start()
    bound_host, bound_port = sock.getsockname()[:2]
    address = f"{bound_host}:{bound_port}"
    metrics_server = await start_metrics(app, settings)
    log.info("data plane worker %d serving on %s", os.getpid(), address)
    if metrics_server is not None:
        log.info("metrics on http://%s/metrics", metrics_server.address)
    if settings.ready_file is not None:
        write_ready_file(settings.ready_file, "http", address, metrics_server.address if metrics_server else None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("data plane worker %d stopping", os.getpid())
        await runner.cleanup()
        if metrics_server is not None:  # last: scrapes keep working while the worker drains
            await metrics_server.stop()
        log.info("data plane worker %d stopped", os.getpid())
