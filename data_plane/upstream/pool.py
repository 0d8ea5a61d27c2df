"""The upstream client: a keep-alive connection pool per origin and credential, bounded, with waiting when full."""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING

from data_plane.upstream import egress
from data_plane.upstream.body import BodySource
from data_plane.upstream.connection import Connection
from data_plane.upstream.errors import UpstreamBroken, UpstreamConnectTimeout, UpstreamUnreachable
from data_plane.upstream.network import DIRECT, Network
from data_plane.upstream.proxy import NO_ENVIRONMENT, EnvironmentProxies, Proxy, deployment_proxy
from data_plane.upstream.response import UpstreamResponse
from data_plane.upstream.trust import TrustStores
from data_plane.upstream.tunnel import open_via_proxy
from data_plane.upstream.url import Origin, split_url
from data_plane.upstream.wire import encode_head

if TYPE_CHECKING:  # the settings module imports this package's proxy parsing (settings.py)
    from data_plane.settings import Settings

log = logging.getLogger("odock.data_plane.proxy")

# Methods a request may be sent again with after a reused connection died before answering
# (RFC 9110 9.2.2). POST is not one: a sent POST is never replayed.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class UpstreamClient:
    """Sends requests over pooled HTTP/1.1 connections and returns answers to be read as they arrive.

    ``limit`` bounds the connections in use (and, counting idle ones, open) at once and
    ``limit_per_host`` those in use per origin (0: no bound); a request over a bound waits for a
    connection, within ``connect_timeout`` like opening one. Idle connections close after
    ``keepalive`` seconds. No redirects, cookies or decompression.

    Idle connections are kept per origin, ``tenant`` (an opaque tag of the credential the
    request carries, never the credential itself) **and** network (a deployment's own proxy and
    CA bundle, ``network.Network.key``): no connection ever carries two credentials' traffic,
    nor one meant for another proxy or trust store. Bounds still count per origin.

    ``proxies``: the environment's (HTTPS_PROXY...; ``proxy.py``), for requests whose network
    names no proxy of its own. Which proxy a request takes is decided when a connection opens,
    except for a plain-http upstream behind one, whose request goes in absolute form.
    """

    def __init__(
        self,
        *,
        limit: int,
        limit_per_host: int,
        connect_timeout: float,
        keepalive: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        proxies: EnvironmentProxies = NO_ENVIRONMENT,
    ) -> None:
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self._ssl = ssl_context
        self._proxies = proxies
        self._http_proxied = proxies.http is not None  # else no plain-http request needs a proxy look-up
        self._trust = TrustStores()  # contexts of deployments' CA bundles
        self._idle: dict[str, list[Connection]] = {}  # per pool key; oldest first; taken from the end
        self._busy: dict[str, int] = {}  # per origin: in use or being opened
        self._busy_total = 0
        self._idle_total = 0
        self._open: set[Connection] = set()
        self._waiters: collections.deque[tuple[str, asyncio.Future[None]]] = collections.deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self.opened = 0  # connections opened since start (a count for tests and status)

    @classmethod
    def from_settings(cls, settings: Settings, ssl_context: ssl.SSLContext | None = None) -> UpstreamClient:
        """The client a worker uses: pool bounds and connect timeout from the settings.

        The default TLS context (system CAs, hostname checks) is built here, at start-up: loading
        the CA store blocks for milliseconds, which the first https request must not pay.
        """
        proxies = settings.proxies or NO_ENVIRONMENT
        if proxies.configured:  # by host:port only: a proxy URL may hold a password
            log.info(
                "upstream proxies from the environment: https via %s, http via %s; NO_PROXY entries: %d",
                proxies.https.address if proxies.https is not None else "none (direct)",
                proxies.http.address if proxies.http is not None else "none (direct)",
                proxies.no_proxy.entries,
            )
        return cls(
            limit=settings.upstream_pool_size,
            limit_per_host=settings.upstream_pool_per_host,
            connect_timeout=settings.timeouts.upstream_connect,
            ssl_context=ssl_context or ssl.create_default_context(),
            proxies=proxies,
        )

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | BodySource | None = None,
        *,
        tenant: str = "",
        network: Network | None = None,
    ) -> UpstreamResponse:
        """Send a request and return the answer once its head arrived (the caller reads, then releases it).

        ``headers`` must not hold Host, Content-Length, Transfer-Encoding or Connection: the client
        writes those. ``tenant`` names the credential the headers carry (connections are reused
        only for the same origin, tenant and network). ValueError for an unusable URL or a header
        value holding CR/LF. A ``BodySource`` body is streamed (``body.py``); a failing one raises
        ``RequestBodyFailed``.
        """
        if self._closed:
            raise RuntimeError("upstream client is closed")
        if method == "HEAD":
            raise ValueError("HEAD is not supported (its answer's length would be misread)")
        origin, target = split_url(url)
        pool_key = f"{origin.key}#{tenant}" if tenant else origin.key
        if network is not None and network.key:
            pool_key = f"{pool_key}\x1f{network.key}"  # never pooled with another proxy or trust store
        if not origin.tls and (self._http_proxied or (network is not None and network.proxy_url)):
            proxy = self._proxy_for(origin, network)
            if proxy is not None:  # the proxy gets the request in absolute form (RFC 9112 3.2.2)
                target = f"http://{origin.host_header}{target}"
                if proxy.authorization:
                    headers = {**headers, "Proxy-Authorization": proxy.authorization}
        head = encode_head(method, target, origin.host_header, headers, body)
        retried = False
        while True:
            conn = self._take_idle(origin.key, pool_key) if self._room(origin.key) else None
            if conn is None:
                conn = await self._acquire(origin, pool_key, network)
            reused = conn.sent > 0
            try:
                return await conn.send(head, body)
            except UpstreamBroken:
                conn.finished(False)
                if retried or not reused or method not in _IDEMPOTENT:
                    raise
                retried = True  # a kept-alive connection the server had closed: once, on a fresh one
            except BaseException:
                conn.finished(False)
                raise

    async def close(self) -> None:
        """Close every connection; waiting requests fail."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(UpstreamUnreachable("upstream client closed"))
        self._waiters.clear()
        for conn in list(self._open):
            conn.close()
        self._idle.clear()
        self._idle_total = 0
        await asyncio.sleep(0)  # let the transports run their close callbacks

    def status(self) -> dict[str, int]:
        """Connection counts: in use, idle, opened since start."""
        return {"in_use": self._busy_total, "idle": self._idle_total, "opened": self.opened}

    # Slots.

    def _room(self, key: str) -> bool:
        if self._limit and self._busy_total >= self._limit:
            return False
        return not (self._limit_per_host and self._busy.get(key, 0) >= self._limit_per_host)

    def _take_idle(self, key: str, pool_key: str) -> Connection | None:
        """A live idle connection for ``pool_key`` marked in use (on origin ``key``), or None (no slot taken)."""
        idle = self._idle.get(pool_key)
        while idle:
            conn = idle.pop()
            self._idle_total -= 1
            if conn.closed or conn.transport_closing():
                continue  # a closed one is dropped before any byte is sent
            if conn.stale():
                conn.close()  # unsolicited bytes (or a close) wait on it: never hand them to a request
                continue
            self._mark_busy(key)
            return conn
        return None

    def _mark_busy(self, key: str) -> None:
        self._busy[key] = self._busy.get(key, 0) + 1
        self._busy_total += 1

    async def _acquire(self, origin: Origin, pool_key: str, network: Network | None) -> Connection:
        """Wait for room, then take an idle connection or open one (all within the connect timeout)."""
        key = origin.key
        try:
            async with asyncio.timeout(self._connect_timeout):
                while not self._room(key):
                    waiter = asyncio.get_running_loop().create_future()
                    self._waiters.append((key, waiter))
                    try:
                        await waiter
                    except BaseException:
                        if not waiter.done() or waiter.cancelled():
                            self._remove_waiter(waiter)
                        elif waiter.exception() is None:
                            self._wake()  # pass on a wake-up this request will not use
                        raise
                conn = self._take_idle(key, pool_key)
                if conn is not None:
                    return conn
                self._mark_busy(key)
                try:
                    return await self._connect(origin, pool_key, network)
                except BaseException:
                    self._unmark_busy(key)
                    raise
        except TimeoutError:
            raise UpstreamConnectTimeout("no upstream connection within the connect timeout") from None

    async def _connect(self, origin: Origin, pool_key: str, network: Network | None) -> Connection:
        if self._limit and self._busy_total + self._idle_total > self._limit:
            self._evict_oldest_idle()  # bound the open sockets: an idle one elsewhere makes room
        loop = asyncio.get_running_loop()
        proxy = self._proxy_for(origin, network)
        context = None
        if origin.tls:
            bundle = network.ca_bundle if network is not None else ""
            context = await self._trust.context(bundle) if bundle else self._ssl_context()
        try:
            if proxy is not None:
                conn = await open_via_proxy(
                    loop, proxy, origin, context, lambda: Connection(self, origin, pool_key)
                )
            else:
                _, conn = await egress.create_connection(  # only addresses the egress policy allows
                    loop,
                    lambda: Connection(self, origin, pool_key),
                    origin.host,
                    origin.port,
                    ssl=context,
                    server_hostname=origin.host if context is not None else None,
                )
        except OSError as exc:  # refused, unresolvable, unreachable, TLS failures (ssl.SSLError)
            raise UpstreamUnreachable(type(exc).__name__) from exc
        self.opened += 1
        if self._closed:
            conn.close()
            raise UpstreamUnreachable("upstream client closed")
        self._open.add(conn)
        return conn

    def _proxy_for(self, origin: Origin, network: Network | None) -> Proxy | None:
        """The proxy a connection to ``origin`` goes through: the deployment's, else the environment's."""
        if network is not None and network.proxy_url:
            if network.proxy_url == DIRECT:
                return None
            try:
                return deployment_proxy(network.proxy_url)
            except ValueError as exc:  # the message never holds the URL
                raise UpstreamUnreachable(f"the deployment's proxy URL is unusable: {exc}") from None
        return self._proxies.for_origin(origin.key, origin.host, origin.port, origin.tls)

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()  # system CAs, hostname checks; built once
        return self._ssl

    # Called by connections (connection.Owner).

    def connection_done(self, conn: Connection, reusable: bool) -> None:
        """A request finished with ``conn``; it goes idle if ``reusable`` (else it was closed)."""
        self._unmark_busy(conn.origin.key)
        if reusable and self._closed:
            conn.close()
        elif reusable:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.setdefault(conn.pool_key, []).append(conn)
            self._idle_total += 1
            if self._sweeper is None:
                self._sweeper = asyncio.get_running_loop().call_later(self._keepalive, self._sweep)

    def connection_closed(self, conn: Connection) -> None:
        """The transport of ``conn`` is gone: forget it if it was idle."""
        self._open.discard(conn)
        idle = self._idle.get(conn.pool_key)
        if idle and conn in idle:
            idle.remove(conn)
            self._idle_total -= 1

    def _unmark_busy(self, key: str) -> None:
        self._busy[key] -= 1
        self._busy_total -= 1
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        """Wake the first waiter that now has room."""
        for entry in self._waiters:
            key, waiter = entry
            if not waiter.done() and self._room(key):
                self._waiters.remove(entry)
                waiter.set_result(None)
                return

    def _remove_waiter(self, waiter: asyncio.Future[None]) -> None:
        for entry in self._waiters:
            if entry[1] is waiter:
                self._waiters.remove(entry)
                return

    def _evict_oldest_idle(self) -> None:
        oldest: list[Connection] | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest[0].idle_since):
                oldest = idle
        if oldest is not None:
            conn = oldest.pop(0)
            self._idle_total -= 1
            conn.close()

    def _sweep(self) -> None:
        """Close connections idle for ``keepalive`` seconds; run again while any stay idle."""
        self._sweeper = None
        now = asyncio.get_running_loop().time()
        expiry = now - self._keepalive
        next_due: float | None = None
        for idle in self._idle.values():
            while idle and idle[0].idle_since <= expiry:
                conn = idle.pop(0)
                self._idle_total -= 1
                conn.close()
            if idle:
                due = idle[0].idle_since + self._keepalive
                next_due = due if next_due is None else min(next_due, due)
        for key in [key for key, idle in self._idle.items() if not idle]:
            del self._idle[key]  # one entry per origin and credential: drop those with none idle
        if next_due is not None and not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(max(0.0, next_due - now), self._sweep)
