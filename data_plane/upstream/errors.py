"""The upstream client's errors.

    UpstreamError                      anything that went wrong talking to the provider
    ├── UpstreamUnreachable            no connection: refused, unresolvable, TLS handshake failed
    ├── UpstreamConnectTimeout         no connection within the connect timeout (also a TimeoutError)
    ├── UpstreamBroken                 the connection closed, reset or spoke malformed HTTP
    │                                  before the answer was complete
    └── RequestBodyFailed              a streamed request body (``body.BodySource``) could not be
                                       read, or did not match its length: never retried
"""

from __future__ import annotations


class UpstreamError(Exception):
    """Base of every upstream client error."""


class UpstreamUnreachable(UpstreamError):
    """The connection could not be opened."""


class UpstreamConnectTimeout(UpstreamError, TimeoutError):
    """Opening the connection (or waiting for a pool slot) took longer than the connect timeout."""


class UpstreamBroken(UpstreamError):
    """The connection ended, or the answer was malformed, before the answer was complete."""


class RequestBodyFailed(UpstreamError):
    """The request's streamed body failed (e.g. a disk read error) before it was wholly written."""
