"""A batch create's body, checked as OpenAI checks it before anything else is asked.

The gateway reads only what it must decide on (the input file, the endpoint) and refuses what
OpenAI would refuse with the same parameter names, so a bad request costs no ledger lookup and
no upstream call. The body is then forwarded as the client sent it: it names no model (the input
file's lines do, checked and rewritten when the file was uploaded).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from data_plane.errors import GatewayError, clip

# The endpoints OpenAI's Batch API runs (a line's url must equal the batch's: the provider checks it).
BATCH_ENDPOINTS = frozenset(
    {"/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/moderations"}
)
COMPLETION_WINDOWS = frozenset({"24h"})
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
# output_expires_after.seconds: OpenAI accepts one hour to thirty days.
MIN_EXPIRY_SECONDS = 3600
MAX_EXPIRY_SECONDS = 2_592_000


@dataclass(frozen=True, slots=True)
class BatchCreate:
    """What the gateway needs of a valid create request."""

    input_file_id: str
    endpoint: str


def invalid(message: str, param: str | None, code: str = "invalid_value") -> GatewayError:
    """A 400 in OpenAI's shape naming the parameter at fault."""
    return GatewayError(400, code, message, param=param)


def _missing(name: str) -> GatewayError:
    return invalid(f"Missing required parameter: '{name}'.", name, "missing_required_parameter")


def _required_string(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise _missing(name)
    if not isinstance(value, str) or not value:
        raise invalid(f"Invalid type for '{name}': expected a non-empty string.", name, "invalid_type")
    return value


def _check_metadata(metadata: object) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise invalid("Invalid type for 'metadata': expected an object.", "metadata", "invalid_type")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise invalid(f"Invalid 'metadata': at most {MAX_METADATA_PAIRS} key-value pairs.", "metadata")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY:
            raise invalid(f"Invalid 'metadata': keys are at most {MAX_METADATA_KEY} characters.", "metadata")
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE:
            raise invalid(
                f"Invalid 'metadata': values are strings of at most {MAX_METADATA_VALUE} characters.", "metadata"
            )


def _check_expiry(expiry: object) -> None:
    if expiry is None:
        return
    name = "output_expires_after"
    if not isinstance(expiry, dict):
        raise invalid(f"Invalid type for '{name}': expected an object.", name, "invalid_type")
    if expiry.get("anchor") != "created_at":
        raise invalid(f"Invalid '{name}.anchor': expected 'created_at'.", f"{name}.anchor")
    seconds = expiry.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise invalid(f"Invalid type for '{name}.seconds': expected an integer.", f"{name}.seconds", "invalid_type")
    if not MIN_EXPIRY_SECONDS <= seconds <= MAX_EXPIRY_SECONDS:
        raise invalid(
            f"Invalid '{name}.seconds': must be between {MIN_EXPIRY_SECONDS} and {MAX_EXPIRY_SECONDS}.",
            f"{name}.seconds",
        )


def parse_create(raw: bytes) -> BatchCreate:
    """The create request in ``raw`` (a JSON object), or the 400 OpenAI would answer."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise invalid("We could not parse the JSON body of your request.", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", None, "invalid_json")
    input_file_id = _required_string(body, "input_file_id")
    endpoint = _required_string(body, "endpoint")
    if endpoint not in BATCH_ENDPOINTS:
        raise invalid(
            f"Invalid value for 'endpoint': {clip(endpoint)!r}; supported: {', '.join(sorted(BATCH_ENDPOINTS))}.",
            "endpoint",
        )
    window = _required_string(body, "completion_window")
    if window not in COMPLETION_WINDOWS:
        raise invalid(f"Invalid value for 'completion_window': {clip(window)!r}; supported: '24h'.", "completion_window")
    _check_metadata(body.get("metadata"))
    _check_expiry(body.get("output_expires_after"))
    return BatchCreate(input_file_id, endpoint)
