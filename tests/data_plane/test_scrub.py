"""The secret scrubber: every occurrence and common encoding replaced, wherever chunks are cut."""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

import pytest

from data_plane.scrub import MARKER, Secret, secret_for

KEY = b"sk-proj-Ab3/dE+f9=gh_ij"  # characters that URL, form and JSON encodings change


def _encodings(key: bytes) -> list[bytes]:
    text = key.decode()
    return [
        key,
        quote(text, safe="").encode(),
        quote_plus(text, safe="").encode(),
        json.dumps(text)[1:-1].encode(),
    ]


def _stream(secret: Secret, data: bytes, cuts: list[int]) -> bytes:
    scrub = secret.stream()
    out = b""
    start = 0
    for cut in [*cuts, len(data)]:
        out += scrub.feed(data[start:cut])
        start = cut
    return out + scrub.flush()


@pytest.mark.parametrize("encoded", _encodings(KEY))
def test_whole_bodies_and_header_values_lose_every_encoding(encoded: bytes) -> None:
    secret = secret_for(KEY)
    body = b'{"error":"bad key ' + encoded + b'", "again":"' + encoded + b'"}'
    assert secret.bytes(body) == b'{"error":"bad key ' + MARKER + b'", "again":"' + MARKER + b'"}'
    assert secret.text("Bearer " + encoded.decode()) == "Bearer " + MARKER.decode()


def test_a_secret_split_at_every_position_is_still_scrubbed() -> None:
    secret = Secret(KEY)
    data = b"data: before " + KEY + b" after\n\n"
    for cut in range(1, len(data)):
        assert _stream(secret, data, [cut]) == b"data: before " + MARKER + b" after\n\n", cut


def test_a_secret_fed_byte_by_byte_is_still_scrubbed() -> None:
    secret = Secret(KEY)
    data = b"x" + KEY + b"y" + KEY
    assert _stream(secret, data, list(range(1, len(data)))) == b"x" + MARKER + b"y" + MARKER


def test_only_a_tail_that_starts_the_secret_is_held_back() -> None:
    scrub = Secret(KEY).stream()
    assert scrub.feed(b"data: hello\n\n") == b"data: hello\n\n"  # the usual chunk: nothing held
    assert scrub.feed(b"abc sk-pr") == b"abc "
    assert scrub.feed(b"ivate") == b"sk-private"  # not the secret after all: released
    assert scrub.feed(b"end") == b"end" and scrub.flush() == b""


def test_a_truncated_secret_at_the_end_of_a_stream() -> None:
    scrub = Secret(KEY).stream()
    assert scrub.feed(b"tail " + KEY[:-1]) == b"tail "
    assert scrub.flush() == MARKER  # a long partial secret is not released
    scrub = Secret(KEY).stream()
    assert scrub.feed(b"tail sk-") == b"tail "
    assert scrub.flush() == b"sk-"  # a few bytes that merely start like it are


def test_pool_tags_name_a_secret_without_showing_it() -> None:
    one, other = Secret(KEY), Secret(KEY + b"2")
    assert one.pool_tag == Secret(KEY).pool_tag != other.pool_tag
    assert KEY.decode() not in one.pool_tag and len(one.pool_tag) == 24


def _escapes(key: bytes) -> list[bytes]:
    """Forms a client decodes back to the key: any characters JSON-\\u-escaped or percent-encoded, any hex case."""
    text = key.decode()
    every_json = "".join(f"\\u{ord(c):04x}" for c in text)
    every_pct = "".join(f"%{ord(c):02x}" for c in text)
    mixed = "".join(
        f"\\u{ord(c):04X}" if i % 3 == 0 else f"%{ord(c):02x}" if i % 3 == 1 else c
        for i, c in enumerate(text)
    )
    return [
        s.encode()
        for s in (every_json, every_pct, every_pct.upper(), mixed, "\\u0073" + text[1:], text[:-1] + "%6A")
    ]


@pytest.mark.parametrize("escaped", _escapes(KEY))
def test_a_secret_with_escaped_characters_is_scrubbed(escaped: bytes) -> None:
    secret = Secret(KEY)
    body = b'{"error":"bad key ' + escaped + b'"}'
    assert secret.bytes(body) == b'{"error":"bad key ' + MARKER + b'"}'
    assert (
        secret.text("https://x.invalid/?key=" + escaped.decode())
        == "https://x.invalid/?key=" + MARKER.decode()
    )
    data = b'[{"a": "' + escaped + b'"},\r\n'
    for cut in range(1, len(data)):
        assert _stream(secret, data, [cut]) == b'[{"a": "' + MARKER + b'"},\r\n', cut
    assert _stream(secret, data, list(range(1, len(data)))) == b'[{"a": "' + MARKER + b'"},\r\n'


def test_escapes_that_are_not_the_secret_pass_unchanged_and_unheld() -> None:
    secret = Secret(KEY)
    text = b'data: {"t": "caf\\u00e9 50% \\n sk-proj-%41"}\n\n'
    assert secret.bytes(text) == text
    scrub = secret.stream()
    assert scrub.feed(text) == text  # an SSE event ends with a newline: nothing held
    assert scrub.feed(b"price 50%") == b"price "  # an escape may be under way: held
    assert scrub.feed(b" off\n") == b"50% off\n" and scrub.flush() == b""
