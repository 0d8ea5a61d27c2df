"""OpenAI: the Chat Completions, Responses, Completions, Embeddings and Images APIs.

Everything OpenAI-specific lives here: routes and auth, the error document the openai SDK
parses, and the model-listing shape (also vLLM's, and the catch-all for paths no family owns).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from multidict import MultiMapping

from data_plane.governance.domain import ModelSummary
from data_plane.providers.dialect import Dialect, ErrorFacts, Listing, by_status, family_name
from data_plane.providers.endpoint import BodyKind, Endpoint, ModelIn, Streams
from odock.v1 import common_pb2

FAMILY = common_pb2.PROVIDER_FAMILY_OPENAI


def _endpoint(path: str, body: BodyKind = "json", streams: Streams = "never") -> Endpoint:
    model_in: ModelIn = "form" if body == "multipart" else "body"
    return Endpoint(
        family=FAMILY,
        method="POST",
        route=f"/v1{path}",
        name=f"/v1{path}",
        body=body,
        model_in=model_in,
        streams=streams,
        upstream_path=path,  # the base URL is the SDK's, ending in /v1
    )


ENDPOINTS = (
    _endpoint("/chat/completions", streams="body_flag"),
    _endpoint("/responses", streams="body_flag"),
    _endpoint("/completions", streams="body_flag"),
    _endpoint("/embeddings"),
    _endpoint("/images/generations"),
    _endpoint("/images/edits", body="multipart"),
    _endpoint("/images/variations", body="multipart"),
)

# --- errors ------------------------------------------------------------------------------

# status -> error.type
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
}


def error_body(err: ErrorFacts) -> dict[str, Any]:
    """OpenAI's error document (vLLM's server answers the same)."""
    kind = by_status(ERROR_TYPES, err.status)
    return {"error": {"message": err.message, "type": kind, "code": err.code, "param": err.param}}


# --- listing -----------------------------------------------------------------------------


def model_object(model: ModelSummary) -> dict[str, Any]:
    """A model in OpenAI's ``Model`` shape (any family: ``owned_by`` names it)."""
    return {
        "id": model.name,
        "object": "model",
        "created": model.created,
        "owned_by": family_name(model.family),
    }


def model_page(models: Sequence[ModelSummary], query: MultiMapping[str]) -> dict[str, Any]:
    """OpenAI's model list: every model at once (no pagination)."""
    return {"object": "list", "data": [model_object(m) for m in models]}


LISTING = Listing(model=model_object, page=model_page)

DIALECT = Dialect(
    family=FAMILY,
    name="openai",
    endpoints=ENDPOINTS,
    auth_header="Authorization",
    auth_prefix="Bearer ",
    error_body=error_body,
    # These pick which organisation/project the provider key bills: the gateway's call.
    drop_headers=frozenset({"openai-organization", "openai-project"}),
    listing=LISTING,
)
