"""vLLM's OpenAI-compatible server, served under /v1/vllm/ (GET models is answered locally).

vLLM speaks OpenAI's dialect (errors, listing) under its own prefix; what differs is here.
"""

from __future__ import annotations

from data_plane.providers import openai
from data_plane.providers.dialect import Dialect
from data_plane.providers.endpoint import BodyKind, Endpoint, ModelIn, Streams
from odock.v1 import common_pb2

FAMILY = common_pb2.PROVIDER_FAMILY_VLLM
PREFIX = "/v1/vllm"
# GET /v1/vllm/models lists the key's models from the control plane; it is not proxied.
MODELS_ROUTE = f"{PREFIX}/models"


def _endpoint(path: str, upstream: str, body: BodyKind = "json", streams: Streams = "never") -> Endpoint:
    model_in: ModelIn = "form" if body == "multipart" else "body"
    return Endpoint(
        family=FAMILY,
        method="POST",
        route=f"{PREFIX}{path}",
        name=f"{PREFIX}{path}",
        body=body,
        model_in=model_in,
        streams=streams,
        upstream_path=upstream,
        strip_base_suffix="/v1",  # the base is the server root; "/v1" tolerated
    )


ENDPOINTS = (
    _endpoint("/chat/completions", "/v1/chat/completions", streams="body_flag"),
    _endpoint("/completions", "/v1/completions", streams="body_flag"),
    _endpoint("/responses", "/v1/responses", streams="body_flag"),
    _endpoint("/embeddings", "/v1/embeddings"),
    _endpoint("/audio/transcriptions", "/v1/audio/transcriptions", body="multipart"),
    _endpoint("/audio/translations", "/v1/audio/translations", body="multipart"),
    _endpoint("/tokenize", "/tokenize"),
    _endpoint("/detokenize", "/detokenize"),
    _endpoint("/pooling", "/pooling"),
    _endpoint("/classify", "/classify"),
    _endpoint("/score", "/score"),
    _endpoint("/rerank", "/rerank"),
)

DIALECT = Dialect(
    family=FAMILY,
    name="vllm",
    endpoints=ENDPOINTS,
    auth_header="Authorization",
    auth_prefix="Bearer ",
    error_body=openai.error_body,
    paths=(f"{PREFIX}/",),
    listing=openai.LISTING,
)
