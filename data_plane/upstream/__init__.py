"""A lean HTTP/1.1 client for the upstream hop: exactly what the relay needs (see docs/architecture.md).

Modules, each importing only those before it (no cycle, no import under ``TYPE_CHECKING``
against this order):

1. ``errors`` (the error tree), ``url`` (origin and target of a URL), ``body`` (streamed
   request bodies), ``wire`` (the request head), ``egress`` (the connect-time policy),
   ``network`` (a deployment's proxy and CA bundle), ``proxy`` (which proxy: environment,
   NO_PROXY, a deployment's), ``trust`` (TLS contexts per CA bundle): leaves.
2. ``response``: one answer; fed through its public API (``feed_data``, ``feed_eof``,
   ``set_exception``) by a ``Source`` it knows only as a protocol.
3. ``transport``: the one-method ``Transport`` protocol the relay depends on.
4. ``connection``: one keep-alive connection; parses answers and feeds them into responses;
   tells its pool of its state through the ``Owner`` protocol.
5. ``tunnel``: opening a connection through a proxy (CONNECT for https).
6. ``pool``: ``UpstreamClient``, the pool of connections; it implements ``Transport`` and
   ``Owner``.
"""

from data_plane.upstream.body import BodySource, BytesBody, FileBody
from data_plane.upstream.errors import (
    RequestBodyFailed,
    UpstreamBroken,
    UpstreamConnectTimeout,
    UpstreamError,
    UpstreamUnreachable,
)
from data_plane.upstream.pool import UpstreamClient
from data_plane.upstream.response import UpstreamResponse
from data_plane.upstream.transport import Transport

__all__ = [
    "BodySource",
    "BytesBody",
    "FileBody",
    "RequestBodyFailed",
    "Transport",
    "UpstreamBroken",
    "UpstreamClient",
    "UpstreamConnectTimeout",
    "UpstreamError",
    "UpstreamResponse",
    "UpstreamUnreachable",
]
