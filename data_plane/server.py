"""Serving one worker: listening socket (SO_REUSEPORT), slow-client guard, ready file, SIGTERM.

aiohttp has no request-header timeout, so connections get a guard: from the
moment a connection opens (or the first byte of a new request arrives on a
kept-alive one) its headers must be complete within ``client_header``
seconds, or it is answered 408 and closed. The guard is disarmed when the
handler starts (the middleware calls ``request_started``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import generate_latest

from data_plane.app import build_app
from data_plane.metrics import METRICS, MetricsServer, multiprocess_registry, serve_metrics
from data_plane.settings import Settings
from data_plane.state import STATE

log = logging.getLogger("odock.data_plane")

LINGER_SECONDS = 2.0


class GuardedRequestHandler(RequestHandler):
    """RequestHandler with a deadline for receiving a complete request head."""

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._odock_header_timeout = header_timeout
        self._odock_timer: asyncio.TimerHandle | None = None
        self._odock_busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._odock_arm()

    def data_received(self, data: bytes) -> None:
        if not self._odock_busy and self._odock_timer is None:
            self._odock_arm()
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._odock_disarm()
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

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Transport-level errors (unparsable requests) as short plain text, never echoing the request.

        aiohttp's default quotes the start of the offending request line (which may carry a
        ``?key=``) in the answer and in a logged traceback.
        """
        kind = type(exc).__name__ if exc is not None else "error"
        if status >= 500:
            log.error("error handling a request: %s", kind)
        else:
            log.debug("refused a malformed request: %s", kind)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error response")
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        resp = web.Response(
            status=status,
            text=f"{status} {phrase}: {'malformed HTTP request' if status < 500 else 'gateway error'}\n",
            headers={"x-request-id": f"req_{secrets.token_hex(12)}"},
        )
        resp.force_close()
        return resp

    def _odock_arm(self) -> None:
        self._odock_disarm()
        self._odock_timer = asyncio.get_running_loop().call_later(
            self._odock_header_timeout, self._odock_expire
        )

    def _odock_disarm(self) -> None:
        if self._odock_timer is not None:
            self._odock_timer.cancel()
            self._odock_timer = None

    def _odock_expire(self) -> None:
        self._odock_timer = None
        if self._odock_busy or self.transport is None or self.transport.is_closing():
            return
        rid = f"req_{secrets.token_hex(12)}"
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            + f"x-request-id: {rid}\r\nContent-Length: 40\r\n\r\n".encode()
            + b"Request headers not received in time.\r\n\r\n"
        )
        self.force_close()  # closes the transport once the 408 is flushed


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


def write_ready_file(path: Path, address: str, metrics: str | None = None) -> None:
    """Atomically write ``{"http": address, "pid": N}`` (and ``"metrics": HOST:PORT`` when serving them)."""
    content: dict[str, object] = {"http": address, "pid": os.getpid()}
    if metrics is not None:
        content["metrics"] = metrics
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content), encoding="utf-8")
    os.replace(tmp, path)


async def start_metrics(app: web.Application, settings: Settings) -> MetricsServer | None:
    """This worker's ``/metrics`` listener when ``ODOCK_DP_METRICS_LISTEN`` is set (not for supervised workers)."""
    if settings.metrics_listen is None:
        return None
    metrics, state = app[METRICS], app[STATE]
    registry = multiprocess_registry(settings.metrics_dir) if settings.metrics_dir else metrics.registry

    def render() -> bytes:
        metrics.refresh(state)  # exact at scrape time
        return generate_latest(registry)

    return await serve_metrics(render, settings.metrics_listen)


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
        write_ready_file(settings.ready_file, address, metrics_server.address if metrics_server else None)
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
