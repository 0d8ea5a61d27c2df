"""Anthropic: the Messages API.

Everything Anthropic-specific lives here: the route, the ``x-api-key`` auth and default
``anthropic-version``, how answers and streams report usage (``message_start`` then running
``message_delta`` totals), the error document and the ``event: error`` that ends a broken
stream, and the Models API listing shape (``ModelInfo``, ``limit`` / ``after_id`` / ``before_id``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
from multidict import MultiMapping

from data_plane.governance.domain import ModelSummary
from data_plane.providers.dialect import (
    Dialect,
    ErrorFacts,
    Listing,
    bad_parameter,
    by_status,
    clip,
    int_parameter,
)
from data_plane.providers.endpoint import Endpoint
from data_plane.usage.shapes import Shape, usage_member
from data_plane.usage.stream import SseTap, event_fields, read_apart
from data_plane.usage.tokens import MalformedUsage, Usage, as_object, count, make_usage
from odock.v1 import common_pb2

if TYPE_CHECKING:
    from data_plane.usage.meter import RequestMeter

FAMILY = common_pb2.PROVIDER_FAMILY_ANTHROPIC
# Anthropic refuses requests without a version header; the SDK always sends one, curl may not.
DEFAULT_VERSION = "2023-06-01"
VERSION_HEADER = "anthropic-version"

# --- usage -------------------------------------------------------------------------------


def anthropic_usage(raw: object) -> Usage:
    """Anthropic usage (a message's, or the merged fields of a stream's events).

    ``input_tokens`` excludes ``cache_read_input_tokens`` and ``cache_creation_input_tokens``;
    all three are input (cache writes are priced as ordinary input, reads at the cached price).
    """
    u = as_object(raw)
    read = count(u, "cache_read_input_tokens")
    written = count(u, "cache_creation_input_tokens")
    return make_usage(
        input=count(u, "input_tokens") + read + written,
        output=count(u, "output_tokens"),
        cached=read,
        parts=False,
    )


class _Typed(msgspec.Struct):
    type: Any = None
    message: Any = None
    usage: Any = None


_TYPED = msgspec.json.Decoder(_Typed)


class MessagesTap(SseTap):
    """Messages streams: ``message_start`` (once: final) carries the input, ``message_delta``
    events running totals; the fields seen so far are merged, the last merge wins.

    The OpenAI translation of a stream parses these events anyway: its writer
    (``anthropic_reply.MessagesChunks``) hands them over already decoded (:meth:`parsed`), and
    any event it could not parse as a JSON object raw (:meth:`unparsed`), instead of the relay
    running :meth:`relay` over every block a second time (issue 16). The meter sees the same reports.
    """

    candidate = re.compile(rb"message_(?:start|delta)")

    def __init__(self, meter: RequestMeter, *, strip_injected: bool) -> None:
        super().__init__(meter, strip_injected=strip_injected)
        self._merged: dict[str, Any] = {}
        self._started = False

    def _read(self, event: bytes, raw: bytes) -> bytes:
        name, data = event_fields(event)
        if b"message_start" in name + data or b"message_delta" in name + data:
            typed = _TYPED.decode(data)
            self._message_event(typed.type, typed.message, typed.usage)
        return raw

    def parsed(self, kind: object, message: object, usage: object, event: bytes) -> None:
        """``event``'s ``type``, ``message`` and ``usage`` members, decoded by its reader."""
        counts = message.get("usage") if kind == "message_start" and isinstance(message, dict) else usage
        if read_apart(counts):
            self.unparsed(event)
            return
        try:
            self._message_event(kind, message, usage)
        except MalformedUsage:
            self._meter.malformed()

    def _message_event(self, kind: object, message: object, usage: object) -> None:
        if kind == "message_start":
            if self._started:
                self._meter.report(None, final=True)  # a second start: flagged, ignored
                return
            self._started = True
            self._meter.report(None, final=True)
            usage = message.get("usage") if isinstance(message, dict) else None
        elif kind != "message_delta":
            return
        if usage is None:
            return
        if not isinstance(usage, dict):
            raise MalformedUsage("usage is not an object")
        merged = {**self._merged, **{k: v for k, v in usage.items() if v is not None}}
        reading = anthropic_usage(merged)  # raises before anything is kept
        self._merged = merged
        self._meter.report(reading, final=False)


USAGE = Shape("anthropic", body=usage_member(anthropic_usage), value=anthropic_usage, sse_tap=MessagesTap)

# --- endpoints ---------------------------------------------------------------------------

ENDPOINTS = (
    Endpoint(
        family=FAMILY,
        method="POST",
        route="/v1/messages",
        name="/v1/messages",
        body="json",
        model_in="body",
        streams="body_flag",
        upstream_path="/v1/messages",  # the base URL is the server root
        usage=USAGE,
    ),
)

# --- errors ------------------------------------------------------------------------------

# status -> error.type
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_body(err: ErrorFacts) -> dict[str, Any]:
    """Anthropic's error document."""
    kind = by_status(ERROR_TYPES, err.status)
    return {"type": "error", "error": {"type": kind, "message": err.message, "code": err.code}}


# --- listing -----------------------------------------------------------------------------

LIMIT = (1, 1000, 20)  # min, max, default (Anthropic's Models API)
_LIFECYCLES = frozenset({"active", "deprecated", "retired"})


def _rfc3339(unix_seconds: int) -> str:
    return datetime.fromtimestamp(max(0, unix_seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def model_object(model: ModelSummary) -> dict[str, Any]:
    """A model in Anthropic's ``ModelInfo`` shape (every model the gateway lists is ``active``)."""
    return {
        "type": "model",
        "id": model.name,
        "display_name": model.name,
        "created_at": _rfc3339(model.created),
        "lifecycle": "active",
    }


def _lifecycles(query: MultiMapping[str]) -> frozenset[str] | None:
    values = [*query.getall("lifecycle", []), *query.getall("lifecycle[]", [])]
    if not values:
        return None
    chosen = frozenset(v.strip() for raw in values for v in raw.split(","))
    unknown = chosen - _LIFECYCLES
    if unknown:
        raise bad_parameter("lifecycle", f"lifecycle: unknown value {clip(min(unknown))!r}")
    return chosen


def _cursor_index(ids: Sequence[str], name: str, value: str) -> int:
    try:
        return ids.index(value)
    except ValueError:
        raise bad_parameter(name, f"{name}: no model {clip(value)!r} in this list") from None


def model_page(models: Sequence[ModelSummary], query: MultiMapping[str]) -> dict[str, Any]:
    """One page of Anthropic's model list: newest first, ``limit`` 1..1000 (20), ``after_id``/``before_id``."""
    low, high, default = LIMIT
    limit = int_parameter(query, "limit", default)
    if not low <= limit <= high:
        raise bad_parameter("limit", f"limit: must be between {low} and {high}")
    after, before = query.get("after_id") or None, query.get("before_id") or None
    if after is not None and before is not None:
        raise bad_parameter("before_id", "Give after_id or before_id, not both")
    lifecycles = _lifecycles(query)
    if lifecycles is not None and "active" not in lifecycles:
        models = []
    ordered = sorted(models, key=lambda m: (-m.created, m.name))
    ids = [m.name for m in ordered]
    if before is not None:
        end = _cursor_index(ids, "before_id", before)
        start = max(0, end - limit)
        page, has_more = ordered[start:end], start > 0
    else:
        start = _cursor_index(ids, "after_id", after) + 1 if after is not None else 0
        page, has_more = ordered[start : start + limit], start + limit < len(ordered)
    return {
        "data": [model_object(m) for m in page],
        "has_more": has_more,
        "first_id": page[0].name if page else None,
        "last_id": page[-1].name if page else None,
    }


DIALECT = Dialect(
    family=FAMILY,
    name="anthropic",
    endpoints=ENDPOINTS,
    auth_header="x-api-key",
    error_body=error_body,
    default_headers={VERSION_HEADER: DEFAULT_VERSION},
    sse_error_name="error",
    paths=("/v1/messages",),
    listing=Listing(model=model_object, page=model_page),
)
