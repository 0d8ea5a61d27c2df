"""TLS contexts for deployments that trust a private CA besides the system store.

One ``ssl.SSLContext`` per distinct CA bundle: ``ssl.create_default_context()`` (the system
store, certificate and hostname checks) plus the bundle's certificates. Building one loads the
system store, which blocks for milliseconds, so it happens on a thread, once per bundle; the
contexts are kept in a bounded LRU and only a new connection asks for one, never a request on
a pooled connection.
"""

from __future__ import annotations

import asyncio
import collections
import ssl

from data_plane.upstream.errors import UpstreamUnreachable

CONTEXTS_MAX = 64


def build_context(ca_bundle: str) -> ssl.SSLContext:
    """The system store plus ``ca_bundle`` (PEM); ssl.SSLError or ValueError if it holds no usable certificate."""
    context = ssl.create_default_context()
    context.load_verify_locations(cadata=ca_bundle)
    return context


class TrustStores:
    """Contexts per CA bundle, built off the event loop, at most ``size`` kept (least recently used go)."""

    def __init__(self, size: int = CONTEXTS_MAX) -> None:
        self._size = size
        self._contexts: collections.OrderedDict[str, asyncio.Future[ssl.SSLContext]] = (
            collections.OrderedDict()
        )
        self.built = 0  # contexts built since start (a count for tests)

    async def context(self, ca_bundle: str) -> ssl.SSLContext:
        """The context trusting ``ca_bundle``; UpstreamUnreachable if the bundle is unusable.

        Concurrent first connections with one bundle wait for the same build.
        """
        future = self._contexts.get(ca_bundle)
        if future is None:
            future = asyncio.get_running_loop().run_in_executor(None, build_context, ca_bundle)
            self.built += 1
            self._contexts[ca_bundle] = future
            while len(self._contexts) > self._size:
                self._contexts.popitem(last=False)
        else:
            self._contexts.move_to_end(ca_bundle)
        try:
            return await asyncio.shield(future)  # a cancelled connect leaves the build to finish for others
        except (ssl.SSLError, ValueError):
            # The failure stays cached like a context: a corrected bundle is another key.
            raise UpstreamUnreachable("the deployment's CA bundle holds no usable certificate") from None
