"""Gemini (Google AI): generateContent and streamGenerateContent, the model in the path."""

from __future__ import annotations

from data_plane.providers.endpoint import SLUG, Dialect, Endpoint, Streams
from odock.v1 import common_pb2

FAMILY = common_pb2.PROVIDER_FAMILY_GEMINI
PATH_PARAM = "model"


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
    )


ENDPOINTS = (
    _endpoint("generateContent", "never"),
    # With ?alt=sse (the google-genai SDK) the stream is SSE, else a streamed JSON array.
    _endpoint("streamGenerateContent", "always"),
)

DIALECT = Dialect(
    family=FAMILY,
    endpoints=ENDPOINTS,
    auth_header="x-goog-api-key",
    # Picks the Google Cloud project billed for the call: the gateway's decision.
    drop_headers=frozenset({"x-goog-user-project"}),
)
