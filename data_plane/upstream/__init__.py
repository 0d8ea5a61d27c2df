"""A lean HTTP/1.1 client for the upstream hop: exactly what the proxy needs (see docs/architecture.md)."""

from data_plane.upstream.errors import (
    UpstreamBroken,
    UpstreamConnectTimeout,
    UpstreamError,
    UpstreamUnreachable,
)
from data_plane.upstream.pool import UpstreamClient
from data_plane.upstream.response import UpstreamResponse

__all__ = [
    "UpstreamBroken",
    "UpstreamClient",
    "UpstreamConnectTimeout",
    "UpstreamError",
    "UpstreamResponse",
    "UpstreamUnreachable",
]
