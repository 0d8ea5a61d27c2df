"""OpenAI: the Chat Completions, Responses, Completions, Embeddings and Images APIs."""

from __future__ import annotations

from data_plane.providers.endpoint import BodyKind, Dialect, Endpoint, ModelIn, Streams
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

DIALECT = Dialect(
    family=FAMILY,
    endpoints=ENDPOINTS,
    auth_header="Authorization",
    auth_prefix="Bearer ",
    # These pick which organisation/project the provider key bills: the gateway's call.
    drop_headers=frozenset({"openai-organization", "openai-project"}),
)
