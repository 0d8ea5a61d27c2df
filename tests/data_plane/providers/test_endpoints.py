"""Every native endpoint: its route, its upstream URL per base-URL style, and the query filter."""

from __future__ import annotations

import pytest
from aiohttp import web
from multidict import MultiDict

from data_plane.providers import DIALECTS, ENDPOINTS, LOCAL_ROUTES, Endpoint, endpoint_named
from odock.v1 import common_pb2

OPENAI = common_pb2.PROVIDER_FAMILY_OPENAI
ANTHROPIC = common_pb2.PROVIDER_FAMILY_ANTHROPIC
GEMINI = common_pb2.PROVIDER_FAMILY_GEMINI
VLLM = common_pb2.PROVIDER_FAMILY_VLLM

# name -> (family, body, model_in, streams, native path after the base URL)
EXPECTED: dict[str, tuple[int, str, str, str, str]] = {
    "/v1/chat/completions": (OPENAI, "json", "body", "body_flag", "/chat/completions"),
    "/v1/responses": (OPENAI, "json", "body", "body_flag", "/responses"),
    "/v1/completions": (OPENAI, "json", "body", "body_flag", "/completions"),
    "/v1/embeddings": (OPENAI, "json", "body", "never", "/embeddings"),
    "/v1/images/generations": (OPENAI, "json", "body", "never", "/images/generations"),
    "/v1/images/edits": (OPENAI, "multipart", "form", "never", "/images/edits"),
    "/v1/images/variations": (OPENAI, "multipart", "form", "never", "/images/variations"),
    "/v1/audio/transcriptions": (OPENAI, "multipart", "form", "body_flag", "/audio/transcriptions"),
    "/v1/audio/translations": (OPENAI, "multipart", "form", "never", "/audio/translations"),
    "/v1/audio/speech": (OPENAI, "json", "body", "always", "/audio/speech"),
    "/v1/moderations": (OPENAI, "json", "body", "never", "/moderations"),
    "/v1/messages": (ANTHROPIC, "json", "body", "body_flag", "/v1/messages"),
    "/v1beta/models/{model}:generateContent": (
        GEMINI, "json", "path", "never", "/v1beta/models/SLUG:generateContent"),
    "/v1beta/models/{model}:streamGenerateContent": (
        GEMINI, "json", "path", "always", "/v1beta/models/SLUG:streamGenerateContent"),
    "/v1/vllm/chat/completions": (VLLM, "json", "body", "body_flag", "/v1/chat/completions"),
    "/v1/vllm/completions": (VLLM, "json", "body", "body_flag", "/v1/completions"),
    "/v1/vllm/responses": (VLLM, "json", "body", "body_flag", "/v1/responses"),
    "/v1/vllm/embeddings": (VLLM, "json", "body", "never", "/v1/embeddings"),
    "/v1/vllm/audio/transcriptions": (VLLM, "multipart", "form", "never", "/v1/audio/transcriptions"),
    "/v1/vllm/audio/translations": (VLLM, "multipart", "form", "never", "/v1/audio/translations"),
    "/v1/vllm/tokenize": (VLLM, "json", "body", "never", "/tokenize"),
    "/v1/vllm/detokenize": (VLLM, "json", "body", "never", "/detokenize"),
    "/v1/vllm/pooling": (VLLM, "json", "body", "never", "/pooling"),
    "/v1/vllm/classify": (VLLM, "json", "body", "never", "/classify"),
    "/v1/vllm/score": (VLLM, "json", "body", "never", "/score"),
    "/v1/vllm/rerank": (VLLM, "json", "body", "never", "/rerank"),
}  # fmt: skip

# Representative base URLs per family -> the origin+prefix every native path is appended to.
BASES: dict[int, list[tuple[str, str]]] = {
    OPENAI: [
        ("https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("https://api.openai.com/v1/", "https://api.openai.com/v1"),
        ("http://127.0.0.1:8081/v1", "http://127.0.0.1:8081/v1"),
        ("https://gw.example.com/openai/v1", "https://gw.example.com/openai/v1"),
    ],
    ANTHROPIC: [
        ("https://api.anthropic.com", "https://api.anthropic.com"),
        ("https://api.anthropic.com/", "https://api.anthropic.com"),
        ("http://127.0.0.1:8082", "http://127.0.0.1:8082"),
    ],
    GEMINI: [
        ("https://generativelanguage.googleapis.com", "https://generativelanguage.googleapis.com"),
        ("https://generativelanguage.googleapis.com/", "https://generativelanguage.googleapis.com"),
        ("http://[::1]:8083", "http://[::1]:8083"),
    ],
    VLLM: [
        ("http://vllm:8000", "http://vllm:8000"),
        ("http://vllm:8000/", "http://vllm:8000"),
        ("http://vllm:8000/v1", "http://vllm:8000"),
        ("http://vllm:8000/v1/", "http://vllm:8000"),
        ("https://gpu.example.com/serving/v1", "https://gpu.example.com/serving"),
    ],
}


def test_endpoint_table_is_complete_and_exact() -> None:
    assert {e.name for e in ENDPOINTS} == set(EXPECTED)
    assert len(ENDPOINTS) == len(EXPECTED)  # no duplicates
    for e in ENDPOINTS:
        family, body, model_in, streams, _ = EXPECTED[e.name]
        assert (e.family, e.method, e.route, e.body, e.model_in, e.streams) == (
            family, "POST", e.name, body, model_in, streams)  # fmt: skip
        assert endpoint_named(e.name) is e
        assert e in DIALECTS[e.family].endpoints


def test_locally_served_listings_are_not_proxied() -> None:
    routes = {e.route for e in ENDPOINTS}
    assert ("GET", "/v1/vllm/models") in LOCAL_ROUTES
    assert ("GET", "/v1/models") in LOCAL_ROUTES
    assert ("GET", "/v1/vllm/models/{model}") in LOCAL_ROUTES
    assert not routes & {path for _, path in LOCAL_ROUTES}


def test_every_route_registers_in_aiohttp() -> None:
    app = web.Application()

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    for e in ENDPOINTS:
        app.router.add_route(e.method, e.route, handler, name=None)
    for method, path in LOCAL_ROUTES:
        app.router.add_route(method, path, handler)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_upstream_url_for_every_base_url_style(endpoint: Endpoint) -> None:
    native = EXPECTED[endpoint.name][4].replace("SLUG", "gemini-2.5-flash")
    for base, prefix in BASES[endpoint.family]:
        assert endpoint.upstream_url(base, "gemini-2.5-flash", None) == prefix + native
        assert endpoint.upstream_url(base, "gemini-2.5-flash", "") == prefix + native


def test_body_model_slug_never_enters_the_path() -> None:
    chat = endpoint_named("/v1/chat/completions")
    assert chat.upstream_url("https://api.openai.com/v1", "../../admin?x#y", None) == (
        "https://api.openai.com/v1/chat/completions"
    )


def test_query_keeps_alt_sse_and_drops_every_auth_parameter() -> None:
    stream = endpoint_named("/v1beta/models/{model}:streamGenerateContent")
    base = "https://generativelanguage.googleapis.com"
    want = f"{base}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert stream.upstream_url(base, "gemini-2.5-flash", "alt=sse&key=odk-secret") == want
    assert stream.upstream_url(base, "gemini-2.5-flash", MultiDict([("key", "a"), ("alt", "sse")])) == want
    assert stream.upstream_url(base, "gemini-2.5-flash", [("alt", "sse"), ("KEY", "a")]) == want
    for param in ("key", "Key", "api_key", "apikey", "api-key", "access_token", "oauth_token", "$key"):
        assert stream.upstream_url(base, "gemini-2.5-flash", f"{param}=s&alt=sse") == want
    # Repeated parameters survive, and encoded text stays encoded (no injection of '&' or '#').
    url = stream.upstream_url(base, "m", "alt=sse&x=1&x=2&y=%26key%3Dz%23frag")
    assert url.endswith("?alt=sse&x=1&x=2&y=%26key%3Dz%23frag")


def test_query_text_cannot_reach_the_path() -> None:
    chat = endpoint_named("/v1/vllm/chat/completions")
    url = chat.upstream_url("http://vllm:8000", "llama", "a=/../../admin&b=%2F..%2F&c=?#")
    path, _, query = url.partition("?")
    assert path == "http://vllm:8000/v1/chat/completions"
    assert "/" not in query and "#" not in query and "?" not in query


def test_base_url_must_be_http() -> None:
    chat = endpoint_named("/v1/chat/completions")
    for bad in ("ftp://x/v1", "api.openai.com/v1", "", "https:///v1"):
        with pytest.raises(ValueError):
            chat.upstream_url(bad, "m", None)


def test_url_for_path_keeps_the_base_query_and_drops_credentials_from_the_clients() -> None:
    from data_plane.providers.endpoint import url_for_path

    url = url_for_path("https://api.example.com/v1?api-version=2", "/files/file-1%2F/content", "after=x&key=secret")
    assert url == "https://api.example.com/v1/files/file-1%2F/content?api-version=2&after=x"
    assert url_for_path("https://api.example.com/v1/", "/batches") == "https://api.example.com/v1/batches"
    with pytest.raises(ValueError):
        url_for_path("ftp://api.example.com", "/files")
