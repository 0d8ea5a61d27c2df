"""The egress policy at the control plane: a model's base URL must not point where keys must not go.

Checked when a model is created or its base URL changes (CreateModel, UpdateModel, and so
``odockctl apply``). A literal address is checked directly; a host name the allow list names is
accepted as is; any other name is resolved (off the event loop, within a timeout) and refused if
any of its addresses is refused. A name that does not resolve here is accepted: the control
plane may not see the data planes' DNS (internal names, split horizon), and every data plane
checks the address it actually connects to anyway, which is the check DNS cannot get around.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from control_plane.errors import InvalidArgument
from odock.egress import EgressPolicy, IPAddress

log = logging.getLogger("odock.control_plane.egress")

RESOLVE_TIMEOUT_SECONDS = 2.0
# RFC 6761: these names are loopback wherever they are resolved; no need to ask.
_LOOPBACK_NAMES = ("localhost", ".localhost", "localhost.localdomain")
# The clouds' metadata services by name (GCP, AWS): judged as the address they stand for even where
# they do not resolve (a control plane outside the cloud would otherwise accept them).
_METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, by the system resolver in a worker thread."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _refuse(field: str, host: str, address: IPAddress, kind: str) -> InvalidArgument:
    shown = host if host == str(address) else f"{host} ({address})"
    return InvalidArgument(
        field,
        f"{shown} is a {kind} address, which the gateway's egress policy refuses;"
        " the operator can allow it with ODOCK_EGRESS_ALLOW on the control plane",
    )


async def check_base_url(
    field: str,
    url: str,
    policy: EgressPolicy,
    *,
    resolve: Resolver = system_resolve,
    timeout: float = RESOLVE_TIMEOUT_SECONDS,
) -> None:
    """Raise InvalidArgument when ``url`` (already validated) points at a refused address."""
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".").lower()
    if policy.allows_host(host):
        return
    literal = _literal(host)
    if literal is not None:
        kind = policy.refusal(literal)
        if kind is not None:
            raise _refuse(field, host, literal, kind)
        return
    named = {"127.0.0.1": host == "localhost" or host.endswith(_LOOPBACK_NAMES),
             "169.254.169.254": host in _METADATA_NAMES}  # fmt: skip
    for text, matches in named.items():
        if matches:
            stands_for = ipaddress.ip_address(text)
            kind = policy.refusal(stands_for)
            if kind is not None:
                raise _refuse(field, host, stands_for, kind)
            return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        async with asyncio.timeout(timeout):
            addresses = await resolve(host, port)
    except (OSError, TimeoutError, UnicodeError) as exc:  # gaierror is an OSError; IDNA failures are not
        log.info(
            "egress check: %s does not resolve here (%s); the data planes check it", host, type(exc).__name__
        )
        return
    for text in addresses:
        address = _literal(text)
        if address is None:
            continue
        kind = policy.refusal(address)
        if kind is not None:
            raise _refuse(field, host, address, kind)
