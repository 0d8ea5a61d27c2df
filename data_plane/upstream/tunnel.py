"""Opening an upstream connection through an HTTP proxy.

An http upstream: a connection to the proxy, which then carries requests in absolute form
(``GET http://host:port/path``, see ``pool.py``). An https upstream: ``CONNECT host:port`` to
the proxy, a 2xx answer (its head bounded like an upstream's), then TLS with the upstream
*through* the tunnel (SNI and certificate checks against the upstream's name), and the TLS
transport handed to the :class:`~data_plane.upstream.connection.Connection`.

The egress policy (``egress.py``) is applied before a byte leaves: to the upstream host
behind the proxy (``egress.check_proxied``) and, for a deployment's own proxy, to the proxy's
address like an upstream's. The environment's proxy is the operator's and is not checked.
Logs name the proxy by ``host:port`` only: its URL may hold a password.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

import httptools

from data_plane.upstream import egress
from data_plane.upstream.connection import MAX_HEAD_BYTES, Connection
from data_plane.upstream.errors import UpstreamUnreachable
from data_plane.upstream.proxy import Proxy
from data_plane.upstream.url import Origin

log = logging.getLogger("odock.data_plane.proxy")


class _ProxyAnswer(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT: its status once the head is complete, nothing after it."""

    def __init__(self, done: asyncio.Future[int]) -> None:
        self.done = done
        self.broken = False  # bytes (or a close) came after the answer's head: the tunnel is not clean
        self._parser = httptools.HttpResponseParser(self)
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            self.broken = True  # nothing may precede the TLS handshake (nor come before the switch)
            return
        self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._fail("malformed answer from the proxy")
            return
        if not self.done.done() and self._head_bytes > MAX_HEAD_BYTES:
            self._fail("proxy answer head too large")

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("proxy closed the connection")

    # httptools callbacks (inside data_received)

    def on_headers_complete(self) -> None:
        if not self.done.done():
            self.done.set_result(self._parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        self.broken = True  # bytes after a CONNECT answer's head, in the same read

    def _fail(self, message: str) -> None:
        if self.done.done():
            self.broken = True
        else:
            self.done.set_exception(UpstreamUnreachable(message))


async def _connect_to_proxy(
    loop: asyncio.AbstractEventLoop, proxy: Proxy, factory: Callable[[], egress.P]
) -> tuple[asyncio.Transport, egress.P]:
    try:
        if proxy.checked:  # a deployment's proxy: the egress policy applies to it as to an upstream
            return await egress.create_connection(
                loop, factory, proxy.host, proxy.port, ssl=None, server_hostname=None
            )
        transport, protocol = await loop.create_connection(factory, proxy.host, proxy.port)
        return transport, protocol
    except OSError as exc:
        log.warning("proxy %s unreachable: %s", proxy.address, type(exc).__name__)
        raise UpstreamUnreachable(f"proxy unreachable ({type(exc).__name__})") from exc


def _authority(origin: Origin) -> str:
    return f"[{origin.host}]:{origin.port}" if ":" in origin.host else f"{origin.host}:{origin.port}"


async def open_via_proxy(
    loop: asyncio.AbstractEventLoop,
    proxy: Proxy,
    origin: Origin,
    context: ssl.SSLContext | None,
    factory: Callable[[], Connection],
) -> Connection:
    """A connection to ``origin`` through ``proxy`` (tunnelled when ``context`` is given: https)."""
    policy = egress.EGRESS.get()
    if policy is not None:
        await egress.check_proxied(origin.host, origin.port, policy)
    if context is None:
        _, conn = await _connect_to_proxy(loop, proxy, factory)
        return conn
    done: asyncio.Future[int] = loop.create_future()
    transport, answer = await _connect_to_proxy(loop, proxy, lambda: _ProxyAnswer(done))
    authority = _authority(origin)
    try:
        head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        if proxy.authorization:
            head += f"Proxy-Authorization: {proxy.authorization}\r\n"
        transport.write((head + "\r\n").encode("ascii"))
        try:
            status = await done
        except UpstreamUnreachable as exc:
            log.warning("proxy %s gave no answer to CONNECT to %s: %s", proxy.address, authority, exc)
            raise
        if not 200 <= status < 300:
            log.warning("proxy %s refused CONNECT to %s: status %d", proxy.address, authority, status)
            raise UpstreamUnreachable(f"proxy answered {status} to CONNECT")
        tls = await loop.start_tls(transport, answer, context, server_hostname=origin.host)
        if tls is None or answer.broken:
            raise UpstreamUnreachable("proxy tunnel closed during the TLS handshake")
    except OSError as exc:  # the TLS handshake through the tunnel failed (ssl.SSLError: untrusted...)
        transport.close()
        raise UpstreamUnreachable(type(exc).__name__) from exc
    except BaseException:
        transport.close()
        raise
    conn = factory()
    tls.set_protocol(conn)
    conn.connection_made(tls)
    if answer.broken or tls.is_closing():  # lost while switching protocols: never hand it out
        conn.close()
        raise UpstreamUnreachable("proxy tunnel closed during the TLS handshake")
    return conn
