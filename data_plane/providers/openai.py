"""OpenAI: the Chat Completions, Responses, Completions, Embeddings, Images, Audio and Moderations APIs.

Everything OpenAI-specific lives here: routes and auth, how answers report usage (chat and
completions streams only when asked: ``include_usage``; Responses in its final event), the
error document the openai SDK parses, and the model-listing shape. vLLM speaks the same
(``vllm.py`` reuses these), and paths no family owns get OpenAI's errors.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec
from multidict import MultiMapping

from data_plane.governance.domain import ModelSummary
from data_plane.providers.dialect import Dialect, ErrorFacts, Listing, by_status, family_name
from data_plane.providers.endpoint import BodyKind, Endpoint, ModelIn, Streams
from data_plane.providers.openai_audio import SPEECH_USAGE, TRANSCRIPTION_USAGE, duration_usage
from data_plane.usage.shapes import Shape, usage_member
from data_plane.usage.stream import SseTap, event_fields
from data_plane.usage.tokens import MalformedUsage, Usage, as_object, count, details, make_usage
from odock.v1 import common_pb2

FAMILY = common_pb2.PROVIDER_FAMILY_OPENAI

# --- usage -------------------------------------------------------------------------------


def openai_usage(raw: object) -> Usage | None:
    """OpenAI-style usage (chat, completions, embeddings, responses, images, audio, vLLM pooling).

    Chat/completions/embeddings (and vLLM): ``prompt_tokens`` (includes
    ``prompt_tokens_details.cached_tokens``), ``completion_tokens`` (includes
    ``completion_tokens_details.reasoning_tokens``). Responses/images, audio
    ``{"type": "tokens"}``: ``input_tokens`` / ``output_tokens`` with
    ``input_tokens_details.cached_tokens`` and ``output_tokens_details.reasoning_tokens``.
    """
    u = as_object(raw)
    if u.get("type") == "duration":
        return duration_usage(u)  # audio billed by seconds of input (vLLM's transcriptions too)
    if "prompt_tokens" in u or "completion_tokens" in u:
        return make_usage(
            input=count(u, "prompt_tokens"),
            output=count(u, "completion_tokens"),
            cached=details(u, "prompt_tokens_details", "cached_tokens"),
            reasoning=details(u, "completion_tokens_details", "reasoning_tokens"),
        )
    if "input_tokens" in u or "output_tokens" in u:
        return make_usage(
            input=count(u, "input_tokens"),
            output=count(u, "output_tokens"),
            cached=details(u, "input_tokens_details", "cached_tokens"),
            reasoning=details(u, "output_tokens_details", "reasoning_tokens"),
        )
    if "total_tokens" in u:
        return make_usage(input=count(u, "total_tokens"))
    raise MalformedUsage("no token counts in usage")


class _Chunk(msgspec.Struct):
    usage: Any = None
    choices: msgspec.Raw = msgspec.Raw(b"null")  # only "is it empty?" matters: never built as objects


_CHUNK = msgspec.json.Decoder(_Chunk)
_EMPTY_CHOICES = re.compile(rb"[ \t\r\n]*(?:\[[ \t\r\n]*\]|null)[ \t\r\n]*")


class ChatTap(SseTap):
    """Chat and text completions streams: usage on a chunk, the usage-only chunk is final."""

    # Any "usage" member except a plain null one (with include_usage every chunk carries
    # "usage":null, and those must cost no decoding at all).
    candidate = re.compile(rb'"usage"(?![ \t]*:[ \t]*null[ \t]*[,}])')
    strips = True

    def _read(self, event: bytes, raw: bytes) -> bytes:
        _, data = event_fields(event)
        if b'"usage"' not in data:
            return self._without_null_usage(raw)
        chunk = _CHUNK.decode(data)
        if chunk.usage is None:
            return self._without_null_usage(raw)
        usage_only = _EMPTY_CHOICES.fullmatch(bytes(chunk.choices)) is not None
        self._meter.report(openai_usage(chunk.usage), final=usage_only)
        return b"" if (self._strip and usage_only) else raw


class _Done(msgspec.Struct):
    type: Any = None
    response: Any = None


_DONE = msgspec.json.Decoder(_Done)
_RESPONSE_DONE = re.compile(rb"response\.(?:completed|incomplete|failed)")
_RESPONSE_DONE_TYPES = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesTap(SseTap):
    """Responses streams: the usage is in the final ``response.completed`` (or incomplete/failed) event."""

    candidate = _RESPONSE_DONE

    def _read(self, event: bytes, raw: bytes) -> bytes:
        _, data = event_fields(event)
        if not _RESPONSE_DONE.search(data):
            return raw
        done = _DONE.decode(data)
        if done.type in _RESPONSE_DONE_TYPES and isinstance(done.response, dict):
            usage = done.response.get("usage")
            self._meter.report(None if usage is None else openai_usage(usage), final=True)
        return raw


_BODY = usage_member(openai_usage)
CHAT_USAGE = Shape("openai_chat", body=_BODY, value=openai_usage, sse_tap=ChatTap, injectable=True)
RESPONSES_USAGE = Shape("openai_responses", body=_BODY, value=openai_usage, sse_tap=ResponsesTap)
# Embeddings, images and the like: usage in the answer; their streams (if any) are not read.
USAGE = Shape("openai", body=_BODY, value=openai_usage, sse_tap=SseTap)

# --- endpoints ---------------------------------------------------------------------------


def _endpoint(
    path: str,
    usage: Shape,
    body: BodyKind = "json",
    streams: Streams = "never",
    *,
    output: bool = True,
    body_is_text: bool = True,
) -> Endpoint:
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
        usage=usage,
        output=output,
        body_is_text=body_is_text,
    )


ENDPOINTS = (
    _endpoint("/chat/completions", CHAT_USAGE, streams="body_flag"),
    _endpoint("/responses", RESPONSES_USAGE, streams="body_flag"),
    _endpoint("/completions", CHAT_USAGE, streams="body_flag"),
    _endpoint("/embeddings", USAGE, output=False),
    _endpoint("/images/generations", USAGE),
    _endpoint("/images/edits", USAGE, body="multipart"),
    _endpoint("/images/variations", USAGE, body="multipart"),
    # Audio (openai_audio.py): a transcription streams when its form says stream=true (its
    # answer is SSE); speech always streams its audio bytes through as they come.
    _endpoint("/audio/transcriptions", TRANSCRIPTION_USAGE, body="multipart", streams="body_flag", body_is_text=False),
    _endpoint("/audio/translations", TRANSCRIPTION_USAGE, body="multipart", body_is_text=False),
    _endpoint("/audio/speech", SPEECH_USAGE, streams="always"),
    # No usage in its answers: metered as a request (a record with the model, no units).
    _endpoint("/moderations", USAGE, output=False),
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


# Codes the gateway keeps for its records and logs but sends as null, as OpenAI does (its
# "No such File object" 404 has "code": null).
NULL_CODES = frozenset({"object_not_found"})


def error_body(err: ErrorFacts) -> dict[str, Any]:
    """OpenAI's error document (vLLM's server answers the same)."""
    kind = by_status(ERROR_TYPES, err.status)
    code = None if err.code in NULL_CODES else err.code
    return {"error": {"message": err.message, "type": kind, "code": code, "param": err.param}}


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
