"""Provider-native error bodies, as each provider sends them."""

from __future__ import annotations

from typing import Any

_OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
                 404: "invalid_request_error", 429: "requests", 500: "server_error", 503: "server_error"}
_OPENAI_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    500: "api_error", 529: "overloaded_error"}
_GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                  404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
                  504: "DEADLINE_EXCEEDED"}
_VLLM_TYPES = {400: "BadRequestError", 401: "Unauthorized", 404: "NotFoundError", 500: "InternalServerError"}


def native_error(family: str, status: int, message: str) -> dict[str, Any]:
    """The body ``family``'s API answers with for ``status``."""
    if family == "anthropic":
        return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message},
                "request_id": "req_fake0001"}
    if family == "gemini":
        return {"error": {"code": status, "message": message, "status": _GOOGLE_STATUS.get(status, "UNKNOWN")}}
    if family == "vllm":
        return {"error": {"message": message, "type": _VLLM_TYPES.get(status, "BadRequestError"),
                          "param": None, "code": status}}
    return {"error": {"message": message, "type": _OPENAI_TYPES.get(status, "server_error"),
                      "param": None, "code": _OPENAI_CODES.get(status)}}
