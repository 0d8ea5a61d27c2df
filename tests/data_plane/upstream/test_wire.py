"""Request heads and URL splitting (pure functions)."""

from __future__ import annotations

import pytest

from data_plane.upstream.url import split_url
from data_plane.upstream.wire import encode_head


def test_head_has_request_line_host_headers_and_length() -> None:
    head = encode_head("POST", "/v1/chat?a=1", "api.example:8443", {"Content-Type": "application/json"}, b"{}")
    assert head == (
        b"POST /v1/chat?a=1 HTTP/1.1\r\nHost: api.example:8443\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\n\r\n"
    )


def test_post_without_body_says_length_zero_and_get_says_nothing() -> None:
    assert b"Content-Length: 0\r\n" in encode_head("POST", "/", "h", {}, None)
    assert b"Content-Length" not in encode_head("GET", "/", "h", {}, None)
    assert b"Content-Length: 0\r\n" in encode_head("GET", "/", "h", {}, b"")


@pytest.mark.parametrize(
    "headers",
    [
        {"X-A": "v\r\nInjected: 1"},
        {"X-A": "v\nInjected: 1"},
        {"X-A": "v\rx"},
        {"X-A\r\nInjected": "1"},
    ],
)
def test_cr_or_lf_in_a_header_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        encode_head("POST", "/", "h", headers, b"")


def test_header_bytes_pass_through_as_the_server_decoded_them() -> None:
    raw = "caf\u00e9 \udcff"  # utf-8 text, and an undecodable byte kept by surrogateescape
    head = encode_head("GET", "/", "h", {"X-Note": raw}, None)
    assert b"X-Note: caf\xc3\xa9 \xff\r\n" in head


@pytest.mark.parametrize(
    ("url", "key", "host", "port", "tls", "host_header", "target"),
    [
        ("http://api.example/v1/x", "http://api.example:80", "api.example", 80, False, "api.example", "/v1/x"),
        ("https://API.example/v1", "https://api.example:443", "api.example", 443, True, "api.example", "/v1"),
        ("https://h:8443", "https://h:8443", "h", 8443, True, "h:8443", "/"),
        ("http://[::1]:9000/a?b=c&d", "http://[::1]:9000", "::1", 9000, False, "[::1]:9000", "/a?b=c&d"),
        ("http://h/models/a%2Fb:gen?alt=sse", "http://h:80", "h", 80, False, "h", "/models/a%2Fb:gen?alt=sse"),
        ("http://h/caf\u00e9 x", "http://h:80", "h", 80, False, "h", "/caf%C3%A9%20x"),
    ],
)
def test_split_url(url: str, key: str, host: str, port: int, tls: bool, host_header: str, target: str) -> None:
    origin, got_target = split_url(url)
    assert (origin.key, origin.host, origin.port, origin.tls, origin.host_header) == (key, host, port, tls, host_header)
    assert got_target == target
    assert split_url(url) == (origin, got_target)  # cached, same answer


@pytest.mark.parametrize(
    "url", ["ftp://h/x", "http:///x", "http://user:pw@h/x", "http://h:99999/x", "http://h:port/x", "/relative"]
)
def test_unusable_urls_are_value_errors(url: str) -> None:
    with pytest.raises(ValueError):
        split_url(url)
