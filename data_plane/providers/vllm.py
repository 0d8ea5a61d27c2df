"""vLLM's OpenAI-compatible server, served under /v1/vllm/ (GET models is answered locally).

vLLM speaks OpenAI's dialect (usage, errors, listing) under its own prefix; what differs is
here: the routes, the server-root base URL, and ``/tokenize``'s ``count``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from data_plane.providers import openai
from data_plane.providers.dialect import Dialect
from data_plane.providers.endpoint import BodyKind, Endpoint, ModelIn, Streams
from data_plane.usage.shapes import NO_USAGE, Shape
from data_plane.usage.tokens import MalformedUsage, Usage, make_usage
from odock.v1 import common_pb2

FAMILY = common_pb2.PROVIDER_FAMILY_VLLM
PREFIX = "/v1/vllm"
# GET /v1/vllm/models lists the key's models from the control plane; it is not proxied.
MODELS_ROUTE = f"{PREFIX}/models"


def tokenize_usage(count: object) -> Usage:
    """vLLM ``/tokenize``: the number of prompt tokens."""
    if type(count) is not int or count < 0:
        raise MalformedUsage("count: not a token count")
    return make_usage(input=count)


class _Count(msgspec.Struct):
    count: Any = None


_COUNT = msgspec.json.Decoder(_Count)


def _tokenize_body(body: bytes) -> Usage | None:
    raw = _COUNT.decode(body).count
    return None if raw is None else tokenize_usage(raw)


# Its answers only: a /tokenize stream is never read.
TOKENIZE_USAGE = Shape("tokenize", body=_tokenize_body)
CHAT, RESPONSES, OTHER = openai.CHAT_USAGE, openai.RESPONSES_USAGE, openai.USAGE


def _endpoint(
    path: str,
    upstream: str,
    usage: Shape,
    body: BodyKind = "json",
    streams: Streams = "never",
    *,
    output: bool = True,
) -> Endpoint:
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
        usage=usage,
        output=output,
    )


ENDPOINTS = (
    _endpoint("/chat/completions", "/v1/chat/completions", CHAT, streams="body_flag"),
    _endpoint("/completions", "/v1/completions", CHAT, streams="body_flag"),
    _endpoint("/responses", "/v1/responses", RESPONSES, streams="body_flag"),
    _endpoint("/embeddings", "/v1/embeddings", OTHER, output=False),
    _endpoint("/audio/transcriptions", "/v1/audio/transcriptions", OTHER, body="multipart"),
    _endpoint("/audio/translations", "/v1/audio/translations", OTHER, body="multipart"),
    _endpoint("/tokenize", "/tokenize", TOKENIZE_USAGE, output=False),
    _endpoint("/detokenize", "/detokenize", NO_USAGE, output=False),
    _endpoint("/pooling", "/pooling", OTHER, output=False),
    _endpoint("/classify", "/classify", OTHER, output=False),
    _endpoint("/score", "/score", OTHER, output=False),
    _endpoint("/rerank", "/rerank", OTHER, output=False),
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
