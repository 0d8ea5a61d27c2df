"""The egress policy at connect time: never open a connection to an address the policy refuses.

The control plane hands each node its allow list with every route (``Route.egress_allow``);
the gateway sets the route's policy in :data:`EGRESS` (a context variable: each request is its
own task, so the policy travels with the request without widening the upstream client's
signature) and every *new* upstream connection is checked here, against the addresses the host
name resolves to right now -- the check a DNS answer that changed since the model was created
cannot get around. Only allowed addresses are connected to, in the resolver's order, so a
refused address never sees a byte (not even a TLS ClientHello).

Through an HTTP proxy (``tunnel.py``) the proxy connects, so the upstream is checked by name
and literal address (:func:`check_proxied`) and a deployment's own proxy like an upstream.

Pooled connections were checked when they were opened; one opened under an earlier, looser
policy may carry requests until it closes (idle ones after the keep-alive, 30 s).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
import ssl as _ssl
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import TypeVar

from data_plane.errors import GatewayError
from odock.egress import EgressPolicy, IPAddress

log = logging.getLogger("odock.data_plane.egress")

P = TypeVar("P", bound=asyncio.BaseProtocol)
Resolver = Callable[[str, int], Awaitable[list[str]]]

# The policy of the route a request goes to; None (the default): no check (tests of the bare client).
EGRESS: ContextVar[EgressPolicy | None] = ContextVar("odock_egress", default=None)
EGRESS_DENIED_MESSAGE = "The model's upstream address is not allowed by the gateway's egress policy"


class EgressDenied(GatewayError):
    """Every address of the upstream host is refused: a 502 ``egress_denied``, rendered per family.

    A GatewayError (not an UpstreamError) so the relay passes it on as it is, with its own code.
    """

    def __init__(self) -> None:
        super().__init__(502, "egress_denied", EGRESS_DENIED_MESSAGE)


# Names are resolved on threads of their own, not the loop's default executor: an org admin can
# pick a name whose server never answers, and a burst of requests to it must not hold the threads
# the usage journal writes on (asyncio.to_thread). Saturated, lookups queue within the connect timeout.
RESOLVER_THREADS = 8
_resolver_threads: ThreadPoolExecutor | None = None


def _resolver_executor() -> ThreadPoolExecutor:
    global _resolver_threads
    if _resolver_threads is None:  # created in the worker process that resolves, on first use
        _resolver_threads = ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="odock-resolve")
    return _resolver_threads


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses of ``host`` from the system resolver (on the resolver threads, off the loop)."""
    lookup = functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = await asyncio.get_running_loop().run_in_executor(_resolver_executor(), lookup)
    except UnicodeError:  # a name IDNA cannot encode ("a..b", a label over 63): it does not resolve
        raise socket.gaierror(socket.EAI_NONAME, "host name cannot be encoded") from None
    return [str(info[4][0]) for info in infos]


# Tests substitute a resolver whose answers they control (a name that "rebinds").
resolve: Resolver = system_resolve


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


async def allowed_hosts(host: str, port: int, policy: EgressPolicy) -> list[str]:
    """What to connect to for ``host``: itself if the policy names it or it is an allowed literal,
    else its allowed addresses. EgressDenied when none is allowed; OSError if it does not resolve."""
    if policy.allows_host(host):
        return [host]
    literal = _address(host)
    if literal is not None:
        candidates = [host]
    else:
        candidates = list(dict.fromkeys(await resolve(host, port)))
    allowed: list[str] = []
    refused: list[str] = []
    for text in candidates:
        address = _address(text)
        if address is not None and policy.allowed(address):
            allowed.append(text)
        else:
            refused.append(text)
    if not allowed:
        log.warning(
            "egress denied: upstream host %s resolves only to refused addresses (%s); nothing sent",
            host[:253],
            ", ".join(refused[:8]) or "none",
        )
        raise EgressDenied
    return allowed


# How long a host name behind a proxy may take to resolve for the check (within the connect
# timeout): behind an egress proxy the node's own DNS often cannot resolve public names at all.
PROXIED_RESOLVE_SECONDS = 2.0


async def check_proxied(host: str, port: int, policy: EgressPolicy) -> None:
    """The check for an upstream a proxy connects to (the proxy picks the address, not this node).

    A literal IP is checked as it is; a name the policy does not list is resolved here, best
    effort, and refused (EgressDenied) if *any* of its addresses is refused. A name that does not
    resolve here (or not within ``PROXIED_RESOLVE_SECONDS``) is left to the proxy: it may live in
    a network whose DNS this node does not see, and the proxy's own policy is the operator's.
    """
    if policy.allows_host(host):
        return
    if _address(host) is not None:
        candidates = [host]
    else:
        try:
            async with asyncio.timeout(PROXIED_RESOLVE_SECONDS):
                candidates = await resolve(host, port)
        except (OSError, TimeoutError):
            return
    refused = [
        text for text in candidates if (address := _address(text)) is None or not policy.allowed(address)
    ]
    if refused:
        log.warning(
            "egress denied: upstream host %s (behind a proxy) resolves to refused addresses (%s); nothing sent",
            host[:253],
            ", ".join(refused[:8]),
        )
        raise EgressDenied


async def create_connection(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], P],
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | None,
    server_hostname: str | None,
) -> tuple[asyncio.Transport, P]:
    """``loop.create_connection`` under the request's egress policy (:data:`EGRESS`).

    Without a policy it is exactly the loop's call. With one, only allowed addresses are tried,
    in order, each with the original name for TLS (SNI, certificate check); the last failure is raised.
    """
    policy = EGRESS.get()
    if policy is None:
        transport, protocol = await loop.create_connection(
            factory, host, port, ssl=ssl, server_hostname=server_hostname
        )
        return transport, protocol
    targets = await allowed_hosts(host, port, policy)
    for i, target in enumerate(targets):
        try:
            transport, protocol = await loop.create_connection(
                factory, target, port, ssl=ssl, server_hostname=server_hostname
            )
            return transport, protocol
        except OSError:
            if i == len(targets) - 1:
                raise
    raise AssertionError("unreachable: targets is never empty")
