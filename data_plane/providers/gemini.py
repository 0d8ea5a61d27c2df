"""Gemini (Google AI): generateContent and streamGenerateContent, the model in the path.

Everything Gemini-specific lives here: the routes under ``/v1beta/``, the ``x-goog-api-key``
auth, how answers report usage (``usageMetadata``, running totals on every streamed
element), Google's error document (``google.rpc`` details), and the ``models/<name>``
listing with ``pageSize`` / ``pageToken``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Any

import msgspec
from multidict import MultiMapping

from data_plane.governance.domain import ModelSummary
from data_plane.providers.dialect import Dialect, ErrorFacts, Listing, bad_parameter, by_status, int_parameter
from data_plane.providers.endpoint import SLUG, Endpoint, Streams
from data_plane.usage.shapes import Shape
from data_plane.usage.stream import SseTap, event_fields, read_apart
from data_plane.usage.tokens import MalformedUsage, Usage, as_object, count, make_usage
from odock.v1 import common_pb2

FAMILY = common_pb2.PROVIDER_FAMILY_GEMINI
PATH_PARAM = "model"
# The generation methods served, and whether each streams (the listing names them too).
METHODS: tuple[tuple[str, Streams], ...] = (("generateContent", "never"), ("streamGenerateContent", "always"))


# --- usage -------------------------------------------------------------------------------


def gemini_usage(raw: object) -> Usage:
    """Gemini ``usageMetadata``.

    ``promptTokenCount`` includes ``cachedContentTokenCount``; ``toolUsePromptTokenCount`` is
    extra input; ``thoughtsTokenCount`` is output not included in ``candidatesTokenCount``.
    """
    u = as_object(raw)
    thoughts = count(u, "thoughtsTokenCount")
    return make_usage(
        input=count(u, "promptTokenCount") + count(u, "toolUsePromptTokenCount"),
        output=count(u, "candidatesTokenCount") + thoughts,
        cached=count(u, "cachedContentTokenCount"),
        reasoning=thoughts,
    )


class _Metadata(msgspec.Struct):
    usageMetadata: Any = None  # the provider's member name


_METADATA = msgspec.json.Decoder(_Metadata)


def _body_usage(body: bytes) -> Usage | None:
    raw = _METADATA.decode(body).usageMetadata
    return None if raw is None else gemini_usage(raw)


class GenerateTap(SseTap):
    """``streamGenerateContent?alt=sse``: every event may carry running totals."""

    candidate = re.compile(rb"usageMetadata")

    def _read(self, event: bytes, raw: bytes) -> bytes:
        _, data = event_fields(event)
        if b"usageMetadata" in data:
            meta = _METADATA.decode(data).usageMetadata
            if meta is not None:
                self._meter.report(gemini_usage(meta), final=False)
        return raw

    def parsed(self, meta: object, event: bytes) -> None:
        """``event``'s top-level ``usageMetadata``, decoded by the translator's writer (issue 16)."""
        if meta is None:
            return
        if read_apart(meta):
            self.unparsed(event)
            return
        try:
            self._meter.report(gemini_usage(meta), final=False)
        except MalformedUsage:
            self._meter.malformed()


USAGE = Shape(
    "gemini",
    body=_body_usage,
    value=gemini_usage,
    sse_tap=GenerateTap,
    streamed_key=b"usageMetadata",
    streamed_final=False,
    array_when_streamed=True,
)

# --- endpoints ---------------------------------------------------------------------------


def _endpoint(method: str, streams: Streams) -> Endpoint:
    # aiohttp's default {model} pattern excludes "/", so "a/b" or "../x" never match;
    # an encoded "%2F" arrives decoded in match_info and is only ever a lookup key.
    route = f"/v1beta/models/{{{PATH_PARAM}}}:{method}"
    return Endpoint(
        family=FAMILY,
        method="POST",
        route=route,
        name=route,
        body="json",
        model_in="path",
        streams=streams,
        upstream_path=f"/v1beta/models/{SLUG}:{method}",
        path_param=PATH_PARAM,
        usage=USAGE,
    )


# With ?alt=sse (the google-genai SDK) streamGenerateContent is SSE, else a streamed JSON array.
ENDPOINTS = tuple(_endpoint(method, streams) for method, streams in METHODS)

# --- errors ------------------------------------------------------------------------------

# status -> error.status (google.rpc.Code name)
ERROR_STATUSES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    408: "DEADLINE_EXCEEDED",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_body(err: ErrorFacts) -> dict[str, Any]:
    """Google's error document: the gateway's code as an ``ErrorInfo`` reason, the wait as ``RetryInfo``."""
    details: list[dict[str, str]] = [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": err.code, "domain": "odock.ai"}
    ]
    if err.retry_after is not None:
        # Google APIs say how long to wait in a RetryInfo detail (google.rpc.RetryInfo).
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{err.retry_after}s"}
        )
    status = by_status(ERROR_STATUSES, err.status)
    return {"error": {"code": err.status, "message": err.message, "status": status, "details": details}}


# --- listing -----------------------------------------------------------------------------

PAGE_SIZE = (1000, 50)  # max (larger sizes are clamped, as Google does), default


def model_object(model: ModelSummary) -> dict[str, Any]:
    """A model in Gemini's ``Model`` shape; ``name`` is what generateContent takes."""
    return {
        "name": f"models/{model.name}",
        "baseModelId": model.name,
        "displayName": model.name,
        "supportedGenerationMethods": [method for method, _ in METHODS],
    }


def _page_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode("utf-8")).decode("ascii").rstrip("=")


def _after_token(token: str) -> str:
    try:
        padded = token + "=" * (-len(token) % 4)
        name = base64.b64decode(padded, altchars=b"-_", validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        name = ""
    if not name:
        raise bad_parameter("pageToken", "pageToken: not a token this list handed out")
    return name


def model_page(models: Sequence[ModelSummary], query: MultiMapping[str]) -> dict[str, Any]:
    """One page of Gemini's model list, by name; ``pageSize`` (50, at most 1000), ``pageToken``.

    The token names the last model of the previous page, so a model deleted between two
    pages does not break the listing.
    """
    high, default = PAGE_SIZE
    size = int_parameter(query, "pageSize", default)
    if size < 0:
        raise bad_parameter("pageSize", "pageSize: must not be negative")
    size = min(size or default, high)
    token = query.get("pageToken") or None
    ordered = sorted(models, key=lambda m: m.name)
    if token is not None:
        after = _after_token(token)
        ordered = [m for m in ordered if m.name > after]
    page = ordered[:size]
    body: dict[str, Any] = {"models": [model_object(m) for m in page]}
    if len(ordered) > size:
        body["nextPageToken"] = _page_token(page[-1].name)
    return body


DIALECT = Dialect(
    family=FAMILY,
    name="gemini",
    endpoints=ENDPOINTS,
    auth_header="x-goog-api-key",
    error_body=error_body,
    # Picks the Google Cloud project billed for the call: the gateway's decision.
    drop_headers=frozenset({"x-goog-user-project"}),
    paths=("/v1beta/",),
    listing=Listing(model=model_object, page=model_page),
)
