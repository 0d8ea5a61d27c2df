"""The providers table as the single source of each family's facts: what every endpoint answers
(usage shape, output, include_usage), which paths a family's errors cover, its dropped headers
and its error event. The old code spread these over string tables (usage.shapes, limits.estimate,
app.family_for_path); this pins the same answers on the objects that replaced them."""

from __future__ import annotations

import json

import pytest

from data_plane.errors import GatewayError, sse_error_event
from data_plane.providers import (
    ANTHROPIC,
    DIALECTS,
    ENDPOINTS,
    GEMINI,
    OPENAI,
    VLLM,
    Endpoint,
    dialect_of,
    endpoint_named,
    family_for_path,
)
from data_plane.providers.headers import DROPPED_HEADERS
from data_plane.usage.shapes import NO_USAGE

# Endpoints whose answers carry no generated tokens: the limit estimate reserves no output for them.
NO_OUTPUT = {
    "/v1/embeddings",
    "/v1/moderations",
    "/v1/vllm/embeddings",
    "/v1/vllm/tokenize",
    "/v1/vllm/detokenize",
    "/v1/vllm/pooling",
    "/v1/vllm/classify",
    "/v1/vllm/score",
    "/v1/vllm/rerank",
}
# Streams that report usage only when asked: the gateway asks (stream_options.include_usage).
INJECTABLE = {"/v1/chat/completions", "/v1/completions", "/v1/vllm/chat/completions", "/v1/vllm/completions"}
# endpoint name -> the usage shape's name
SHAPES = {
    "/v1/chat/completions": "openai_chat",
    "/v1/completions": "openai_chat",
    "/v1/responses": "openai_responses",
    "/v1/embeddings": "openai",
    "/v1/images/generations": "openai",
    "/v1/images/edits": "openai",
    "/v1/images/variations": "openai",
    "/v1/audio/transcriptions": "openai_transcription",
    "/v1/audio/translations": "openai_transcription",
    "/v1/audio/speech": "openai_speech",
    "/v1/moderations": "openai",
    "/v1/messages": "anthropic",
    "/v1beta/models/{model}:generateContent": "gemini",
    "/v1beta/models/{model}:streamGenerateContent": "gemini",
    "/v1/vllm/chat/completions": "openai_chat",
    "/v1/vllm/completions": "openai_chat",
    "/v1/vllm/responses": "openai_responses",
    "/v1/vllm/embeddings": "openai",
    "/v1/vllm/audio/transcriptions": "openai",
    "/v1/vllm/audio/translations": "openai",
    "/v1/vllm/tokenize": "tokenize",
    "/v1/vllm/detokenize": "none",
    "/v1/vllm/pooling": "openai",
    "/v1/vllm/classify": "openai",
    "/v1/vllm/score": "openai",
    "/v1/vllm/rerank": "openai",
}


def test_every_endpoint_knows_its_usage_shape_output_and_include_usage() -> None:
    assert {e.name: e.usage.name for e in ENDPOINTS} == SHAPES
    assert {e.name for e in ENDPOINTS if not e.output} == NO_OUTPUT
    assert {e.name for e in ENDPOINTS if e.injectable} == INJECTABLE
    # One shape object per kind of answer, shared by the endpoints answering in it.
    assert endpoint_named("/v1/chat/completions").usage is endpoint_named("/v1/vllm/completions").usage
    assert endpoint_named("/v1/vllm/detokenize").usage is NO_USAGE


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_an_endpoints_errors_are_in_its_own_familys_shape(endpoint: Endpoint) -> None:
    path = endpoint.route.replace("{model}", "gemini-x")
    assert family_for_path(path) == endpoint.family
    assert family_for_path(path + "/more") == endpoint.family


@pytest.mark.parametrize(
    ("path", "family"),
    [
        ("/v1/messages/batches", ANTHROPIC),
        ("/v1/messagesx", OPENAI),
        ("/v1beta/models", GEMINI),
        ("/v1beta", OPENAI),
        ("/v1/vllm/models", VLLM),
        ("/v1/vllm", OPENAI),
        ("/v1/models", OPENAI),
        ("/nowhere", OPENAI),
        ("", OPENAI),
    ],
)
def test_paths_no_family_owns_get_openais_errors(path: str, family: int) -> None:
    assert family_for_path(path) == family


def test_each_dialect_drops_the_common_headers_and_its_own() -> None:
    for dialect in DIALECTS.values():
        assert dialect.dropped_headers == DROPPED_HEADERS | dialect.drop_headers
    assert "x-goog-user-project" in DIALECTS[GEMINI].dropped_headers
    assert "x-goog-user-project" not in DIALECTS[OPENAI].dropped_headers


def test_the_error_event_that_ends_a_stream_is_the_familys() -> None:
    err = GatewayError(502, "upstream_reset", "The provider closed the stream")
    anthropic = sse_error_event(ANTHROPIC, err)
    assert anthropic.startswith(b"event: error\ndata: ") and anthropic.endswith(b"\n\n")
    for family in (OPENAI, GEMINI, VLLM, 0):
        event = sse_error_event(family, err)
        assert event.startswith(b"data: ") and event.endswith(b"\n\n")
        assert json.loads(event[6:]) == dialect_of(family).error_body(err)
    assert dialect_of(0) is DIALECTS[OPENAI]  # a family this build does not know: OpenAI's shape
