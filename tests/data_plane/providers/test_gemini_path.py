"""Gemini puts the model in the URL path: hostile names stay a lookup key, never an upstream path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import unquote

import pytest
from aiohttp import web
from yarl import URL

from data_plane.providers import ENDPOINTS, endpoint_named
from data_plane.providers.endpoint import encode_gemini_slug

BASE = "https://generativelanguage.googleapis.com"
GENERATE = endpoint_named("/v1beta/models/{model}:generateContent")
STREAM = endpoint_named("/v1beta/models/{model}:streamGenerateContent")
HOSTILE = [
    "../x",
    "../../v1/files",
    "..",
    ".",
    "%2e%2e%2f",
    "a/b",
    "a?b",
    "a#b",
    "a\r\nHost: evil",
    "a b",
    "a:streamGenerateContent",
    "models/../../x",
    "x" * 10_240,
    "é\u2028\x00",
]


@pytest.mark.parametrize("slug", HOSTILE, ids=lambda s: repr(s[:20]))
def test_hostile_slug_stays_in_its_one_path_segment(slug: str) -> None:
    for endpoint, method in ((GENERATE, "generateContent"), (STREAM, "streamGenerateContent")):
        url = endpoint.upstream_url(BASE, slug, "alt=sse")
        parsed = URL(url, encoded=True)
        assert parsed.raw_host == "generativelanguage.googleapis.com"
        assert parsed.raw_query_string == "alt=sse"
        assert parsed.fragment == ""
        prefix, _, rest = parsed.raw_path.rpartition("/")
        assert prefix == "/v1beta/models"
        segment, sep, tail = rest.rpartition(":")
        assert (sep, tail) == (":", method)
        # One segment that decodes back to exactly the slug (minus a leading models/)...
        assert unquote(segment) == slug.removeprefix("models/")
        assert all(c.isalnum() or c in "%-._~" for c in segment) and segment.isascii()
        # ...and that an HTTP client's URL parsing does not turn into another path.
        assert URL(url).path == parsed.path
        assert URL(url).raw_path.count("/") == 3


def test_gemini_ids_are_kept_readable() -> None:
    assert encode_gemini_slug("gemini-2.5-flash") == "gemini-2.5-flash"
    assert encode_gemini_slug("models/gemini-1.5-pro-001") == "gemini-1.5-pro-001"
    with pytest.raises(ValueError):
        encode_gemini_slug("models/")


@pytest.fixture
async def router_server() -> AsyncIterator[tuple[str, int, list[tuple[str | None, str]]]]:
    """A real aiohttp server with the gemini routes that records what each request resolves to."""
    seen: list[tuple[str | None, str]] = []

    def handler_for(endpoint_name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        endpoint = endpoint_named(endpoint_name)

        async def handler(request: web.Request) -> web.Response:
            model = endpoint.model_from_path(request.match_info)
            # The upstream URL comes from the canonical slug, whatever the client wrote.
            seen.append((model, endpoint.upstream_url(BASE, "canonical-slug", request.query)))
            return web.Response(text="ok")

        return handler

    app = web.Application()
    for e in ENDPOINTS:
        if e.model_in == "path":
            app.router.add_route(e.method, e.route, handler_for(e.name))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield "127.0.0.1", port, seen
    finally:
        await runner.cleanup()


async def _raw_post(host: str, port: int, target: str) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}".encode()
        )
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()
        return int(status_line.split()[1]) if status_line else 0
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("raw_name", "expected_model"),
    [
        ("gemini-2.5-flash", "gemini-2.5-flash"),
        ("models%2Fgemini-2.5-flash", "gemini-2.5-flash"),
        ("a%2Fb", "a/b"),
        ("%2e%2e%2fx", "../x"),
        ("%2e%2e%2f%2e%2e%2fv1%2ffiles", "../../v1/files"),
        ("..", ".."),
        ("a%3Fb", "a?b"),
        ("a%23b", "a#b"),
        ("a%0D%0AHost:%20evil", "a\r\nHost: evil"),
        ("x" * 4_000, "x" * 4_000),
    ],
    ids=lambda v: repr(v[:24]),
)
async def test_path_names_reach_only_the_lookup(
    router_server: tuple[str, int, list[tuple[str | None, str]]], raw_name: str, expected_model: str
) -> None:
    host, port, seen = router_server
    status = await _raw_post(host, port, f"/v1beta/models/{raw_name}:streamGenerateContent?alt=sse&key=k")
    assert status == 200
    assert seen == [
        (expected_model, f"{BASE}/v1beta/models/canonical-slug:streamGenerateContent?alt=sse"),
    ]


@pytest.mark.parametrize(
    "raw_path",
    [
        "/v1beta/models/a/b:generateContent",
        "/v1beta/models/../x:generateContent",
        "/v1beta/models/%2e%2e/x:generateContent",
        "/v1beta/models/:generateContent",
        "/v1beta/models/x:generateContent/extra",
        "/v1beta/models/x:GenerateContent",
        # Past aiohttp's default request-line limit: refused before any routing.
        "/v1beta/models/" + "x" * 10_240 + ":generateContent",
    ],
    ids=lambda v: repr(v[:40]),
)
async def test_paths_outside_the_slot_do_not_match_a_route(
    router_server: tuple[str, int, list[tuple[str | None, str]]], raw_path: str
) -> None:
    host, port, seen = router_server
    assert await _raw_post(host, port, raw_path) in (400, 404)
    assert seen == []
