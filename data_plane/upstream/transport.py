"""The seam between the relay and whatever reaches the upstream (httpx's ``BaseTransport``).

The relay (``data_plane/relay.py``) depends on this one-method protocol, never on the pool:
:class:`~data_plane.upstream.pool.UpstreamClient` implements it (the node's state passes its
pool in as the transport) and a test's fake transport implements it with answers fed through
:class:`~data_plane.upstream.response.UpstreamResponse`'s public feed API.

The call returns once the answer's head arrived and before any of its body was relayed: a
transport may still look at the status, release the answer and try elsewhere. That is where
routing (several deployments behind one model, retries before the first byte, fallbacks)
plugs in, as a transport wrapping the pool; what it needs of the request's route beyond the
call below is added to this signature then, with its one caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from data_plane.upstream.body import BodySource
from data_plane.upstream.network import Network
from data_plane.upstream.response import UpstreamResponse


class Transport(Protocol):
    """Sends one request upstream and returns its answer once the head arrived."""

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
        """Send ``method url`` with ``headers`` and ``body``; the caller reads, then releases, the answer.

        ``body``: bytes, or a ``BodySource`` streamed as the connection drains (large uploads;
        its ``chunks()`` may be called once per attempt).

        ``tenant`` names the credential the headers carry (an opaque tag, never the credential):
        no connection carries two tenants' traffic. ``network``: the deployment's own proxy and
        CA bundle (None: the node's environment, HTTPS_PROXY / HTTP_PROXY / NO_PROXY). Raises ``UpstreamError`` (or ``OSError``)
        when no answer came, ``ValueError`` for an unusable URL or header; a timeout is the
        caller's (``asyncio.timeout`` around the call).
        """
        ...
