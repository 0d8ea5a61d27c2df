"""Gateway errors and their rendering in each provider family's own error shape.

One exception, :class:`GatewayError`, is raised anywhere in request handling and
rendered once (by the middleware in ``app.py``) as the JSON error body the
endpoint family's official SDK expects, so each SDK raises its usual exception
class carrying our message and code. The table of codes is docs/errors.md.
Upstream errors never pass through here: they reach the client as the provider
sent them.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from odock.v1 import common_pb2

OPENAI = common_pb2.PROVIDER_FAMILY_OPENAI
ANTHROPIC = common_pb2.PROVIDER_FAMILY_ANTHROPIC
GEMINI = common_pb2.PROVIDER_FAMILY_GEMINI
VLLM = common_pb2.PROVIDER_FAMILY_VLLM

MAX_ECHO = 64

# status -> (openai/vllm error.type, anthropic error.type, gemini error.status)
_TYPES: dict[int, tuple[str, str, str]] = {
    400: ("invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    401: ("authentication_error", "authentication_error", "UNAUTHENTICATED"),
    403: ("permission_error", "permission_error", "PERMISSION_DENIED"),
    404: ("invalid_request_error", "not_found_error", "NOT_FOUND"),
    405: ("invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    408: ("invalid_request_error", "invalid_request_error", "DEADLINE_EXCEEDED"),
    413: ("invalid_request_error", "request_too_large", "INVALID_ARGUMENT"),
    415: ("invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    429: ("rate_limit_error", "rate_limit_error", "RESOURCE_EXHAUSTED"),
    500: ("api_error", "api_error", "INTERNAL"),
    502: ("api_error", "api_error", "UNAVAILABLE"),
    503: ("api_error", "overloaded_error", "UNAVAILABLE"),
    504: ("api_error", "timeout_error", "DEADLINE_EXCEEDED"),
}

FAMILY_NAMES: dict[int, str] = {OPENAI: "openai", ANTHROPIC: "anthropic", GEMINI: "gemini", VLLM: "vllm"}


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


def clip(value: str, limit: int = MAX_ECHO) -> str:
    """A bounded, printable rendering of client-supplied text for error messages."""
    cleaned = "".join(c if c.isprintable() else "?" for c in value[: limit + 1])
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


def family_name(family: int) -> str:
    """Lower-case name of a provider family (``unknown`` for values this build does not know)."""
    return FAMILY_NAMES.get(family, "unknown")


def _types(status: int) -> tuple[str, str, str]:
    if status in _TYPES:
        return _TYPES[status]
    return _TYPES[500] if status >= 500 else _TYPES[400]


def error_body(family: int, err: GatewayError) -> dict[str, Any]:
    """The JSON error document for ``err`` in ``family``'s shape."""
    openai_type, anthropic_type, gemini_status = _types(err.status)
    if family == ANTHROPIC:
        return {"type": "error", "error": {"type": anthropic_type, "message": err.message, "code": err.code}}
    if family == GEMINI:
        details: list[dict[str, str]] = [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": err.code, "domain": "odock.ai"}
        ]
        if err.retry_after is not None:
            # Google APIs say how long to wait in a RetryInfo detail (google.rpc.RetryInfo).
            details.append(
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{err.retry_after}s"}
            )
        return {
            "error": {"code": err.status, "message": err.message, "status": gemini_status, "details": details}
        }
    return {"error": {"message": err.message, "type": openai_type, "code": err.code, "param": err.param}}


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
    data = json.dumps(error_body(family, err), ensure_ascii=False)
    if family == ANTHROPIC:
        return f"event: error\ndata: {data}\n\n".encode()
    return f"data: {data}\n\n".encode()
