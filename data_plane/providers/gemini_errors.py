"""Gemini's error document ``{"error": {"code", "message", "status"}}`` -> OpenAI's error (issue 13).

Gemini echoes the API key in some messages (an invalid key is a 400 ``API_KEY_INVALID``), so an
authentication or permission failure gets the gateway's own wording, never Gemini's; other
messages are echoed, bounded, with anything shaped like a Google API key masked.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from data_plane.providers.translator import OpenAIError

MAX_MESSAGE = 512
MAX_RETRY_AFTER = 86_400
# google.rpc.RetryInfo's retryDelay, a protobuf Duration in JSON ("12s", "0.5s"): Gemini's 429s carry
# no Retry-After header, so the client's Retry-After comes from it.
_DELAY = re.compile(r"(\d{1,9}(?:\.\d{1,9})?)s")
_OVERFLOW = re.compile(r"input token count.{0,80}exceeds|exceeds the maximum number of tokens|too many tokens",
                       re.IGNORECASE | re.DOTALL)
_GOOGLE_KEY = re.compile(r"AIza[0-9A-Za-z_\-]{20,}")
_AUTH_STATUSES = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}
_STATUS_CODES = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "NOT_FOUND": 404,
                 "RESOURCE_EXHAUSTED": 429, "INTERNAL": 500, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}
_AUTH_MESSAGE = {401: "The upstream provider rejected the gateway's credentials for this model.",
                 403: "The gateway's credentials for this model are not allowed to use it upstream."}


def _facts(body: bytes) -> tuple[int, str, str, str, str | None]:
    """(error.code, error.status, error.message, the details' reasons joined, RetryInfo's delay in
    whole seconds) of a Gemini error body."""
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 0, "", "", "", None
    if isinstance(doc, list) and doc:  # the non-SSE stream wraps it in an array
        doc = doc[0]
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        return 0, "", "", "", None
    code = err.get("code")
    details = [d for d in err.get("details") or () if isinstance(d, dict)] if isinstance(
        err.get("details"), list) else []
    reasons = " ".join(str(d.get("reason", "")) for d in details)
    delays = [d["retryDelay"] for d in details if isinstance(d.get("retryDelay"), str)]
    found = _DELAY.fullmatch(delays[0]) if delays else None
    retry = str(min(math.ceil(float(found.group(1))), MAX_RETRY_AFTER)) if found else None
    return (code if isinstance(code, int) and not isinstance(code, bool) else 0, str(err.get("status", "")),
            str(err.get("message", "")), reasons, retry)


def _bounded(message: str, fallback: str) -> str:
    message = _GOOGLE_KEY.sub("[redacted]", message.strip()) or fallback
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def error(status: int, body: bytes) -> OpenAIError:
    """The upstream's error answer (``status`` 0: the status from the body, e.g. an error event)."""
    code, name, message, reasons, retry = _facts(body)
    status = status if status >= 400 else code if code >= 400 else _STATUS_CODES.get(name, 500)
    if "API_KEY" in reasons or status in (401, 403) or name in _AUTH_STATUSES:
        status = _AUTH_STATUSES.get(name, status if status in (401, 403) else 401)
        kind = "authentication_error" if status == 401 else "permission_error"
        return OpenAIError(status, _AUTH_MESSAGE[status], kind, code=None)
    if status == 429:
        return OpenAIError(429, _bounded(message, "Rate limit reached upstream."), "rate_limit_error",
                           code="rate_limit_exceeded", retry_after=retry)
    if status >= 500:
        status = status if status in (500, 502, 503, 504) else 502
        return OpenAIError(status, _bounded(message, "The upstream provider failed."), "server_error",
                           code="server_error")
    if status == 404:
        return OpenAIError(404, _bounded(message, "The model was not found upstream."), "invalid_request_error",
                           code="model_not_found")
    if _OVERFLOW.search(message):
        return OpenAIError(400, _bounded(message, ""), "invalid_request_error", code="context_length_exceeded",
                           param="messages")
    return OpenAIError(status, _bounded(message, "The upstream provider rejected the request."),
                       "invalid_request_error")


def stream_error(err: OpenAIError) -> bytes:
    """The error event a stream ends with (no ``[DONE]`` after it)."""
    return b"data: " + orjson.dumps(err.body()) + b"\n\n"
