"""Gateway errors and their rendering in each provider family's own error shape.

One exception, :class:`GatewayError`, is raised anywhere in request handling and
rendered once (by the middleware in ``app.py``) as the JSON error body the
endpoint family's official SDK expects, so each SDK raises its usual exception
class carrying our message and code. The table of codes is docs/errors.md.
Upstream errors never pass through here: they reach the client as the provider
sent them.

The shapes themselves belong to the families (``Dialect.error_body`` and
``Dialect.sse_error_name`` in ``data_plane/providers/<family>.py``); this module
is the one renderer every caller goes through.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from data_plane.providers import dialect_of
from data_plane.providers.dialect import MAX_ECHO, clip

__all__ = ["MAX_ECHO", "GatewayError", "clip", "error_body", "render", "sse_error_event"]


class GatewayError(Exception):
    """An error the gateway itself answers with, rendered in the endpoint family's shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        retry_after: int | None = None,
        *,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.retry_after = retry_after
        # Close the client connection afterwards (e.g. an unread oversized body).
        self.close = close


def error_body(family: int, err: GatewayError) -> dict[str, Any]:
    """The JSON error document for ``err`` in ``family``'s shape (OpenAI's for an unknown family)."""
    return dialect_of(family).error_body(err)


def render(family: int, err: GatewayError) -> web.Response:
    """``err`` as an HTTP response in ``family``'s error shape."""
    headers = {}
    if err.retry_after is not None:
        headers["Retry-After"] = str(err.retry_after)
    resp = web.Response(
        status=err.status,
        body=json.dumps(error_body(family, err), ensure_ascii=False).encode("utf-8"),
        content_type="application/json",
        headers=headers,
    )
    if err.close:
        resp.force_close()
    return resp


def sse_error_event(family: int, err: GatewayError) -> bytes:
    """A server-sent event that ends a broken stream in ``family``'s shape (the SDKs raise on it)."""
    dialect = dialect_of(family)
    data = json.dumps(dialect.error_body(err), ensure_ascii=False)
    if dialect.sse_error_name:
        return f"event: {dialect.sse_error_name}\ndata: {data}\n\n".encode()
    return f"data: {data}\n\n".encode()
