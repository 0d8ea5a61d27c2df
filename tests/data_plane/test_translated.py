"""The translated path's own pieces, in-process (issue 13): parsing, n, URL joining, event
splitting, merging n answers. The whole path runs end to end in tests/data_plane/translated/."""

from __future__ import annotations

from typing import Any

import pytest

from data_plane.errors import GatewayError
from data_plane.governance.domain import Route
from data_plane.providers import ANTHROPIC, GEMINI, OPENAI, VLLM
from data_plane.translated import choices_asked, merge_answers, parse_chat, translator_for
from data_plane.translated_relay import split_events, upstream_url


def route(family: int, opted: bool) -> Route:
    return Route(org_id="org_x", model_id="mdl_x", model_name="m", family=family, upstream_slug="s",
                 base_url="https://api.example.com", secret=b"k", timeout=30.0, enabled=True, credential_id="cred_x",
                 openai_compatible=opted)  # fmt: skip


def test_parse_chat_reads_stream_and_include_usage_strictly() -> None:
    chat = parse_chat(b'{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}')
    assert chat.stream and chat.include_usage and chat.body["model"] == "m"
    assert not parse_chat(b'{"stream":"yes","stream_options":{"include_usage":true}}').stream
    assert not parse_chat(b'{"stream":false,"stream_options":{"include_usage":true}}').include_usage
    for bad in (b"[1]", b"{", b'"x"'):
        with pytest.raises(GatewayError) as caught:
            parse_chat(bad)
        assert caught.value.status == 400 and caught.value.code == "invalid_json"


@pytest.mark.parametrize(("n", "expected"), [(None, 1), (1, 1), (2, 2), (8, 8)])
def test_n_within_bounds(n: int | None, expected: int) -> None:
    body = b'{"n":null}' if n is None else b'{"n":%d}' % n
    assert choices_asked(parse_chat(body)) == expected
    assert choices_asked(parse_chat(b"{}")) == 1


@pytest.mark.parametrize("raw", [b'{"n":0}', b'{"n":9}', b'{"n":2.0}', b'{"n":true}', b'{"n":"2"}'])
def test_n_outside_bounds_is_400_naming_n(raw: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        choices_asked(parse_chat(raw))
    assert (caught.value.status, caught.value.param) == (400, "n")


def test_only_opted_in_models_of_translated_families_get_a_translator() -> None:
    assert translator_for(route(ANTHROPIC, True)) is not None
    assert translator_for(route(GEMINI, True)) is not None
    assert translator_for(route(ANTHROPIC, False)) is None
    assert translator_for(route(OPENAI, True)) is None and translator_for(route(VLLM, True)) is None


def test_upstream_url_joins_the_base_path_and_queries() -> None:
    assert (
        upstream_url("https://api.anthropic.com", "/v1/messages") == "https://api.anthropic.com/v1/messages"
    )
    assert upstream_url("http://h:8/prefix/", "/v1beta/models/g:streamGenerateContent?alt=sse") == (
        "http://h:8/prefix/v1beta/models/g:streamGenerateContent?alt=sse"
    )
    assert upstream_url("https://h/p?tenant=a", "/x?alt=sse") == "https://h/p/x?tenant=a&alt=sse"
    for bad in ("ftp://h", "/relative", "https://"):
        with pytest.raises(ValueError):
            upstream_url(bad, "/v1/messages")


def test_split_events_handles_every_line_ending_and_a_final_unterminated_event() -> None:
    block = b"event: a\ndata: 1\n\nevent: b\r\ndata: 2\r\n\r\n\n\ndata: 3\r\rdata: 4"
    assert split_events(block) == [b"event: a\ndata: 1", b"event: b\r\ndata: 2", b"data: 3", b"data: 4"]
    assert split_events(b"") == [] and split_events(b"\n\n") == []


def test_merge_answers_indexes_choices_and_sums_usage() -> None:
    one: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0, "message": {"content": "a"}}],
           "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                     "prompt_tokens_details": {"cached_tokens": 1}}}  # fmt: skip
    two = {**one, "choices": [{"index": 0, "message": {"content": "b"}}]}
    merged = merge_answers([one, two])
    assert [(c["index"], c["message"]["content"]) for c in merged["choices"]] == [(0, "a"), (1, "b")]
    assert merged["usage"] == {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10,
                               "prompt_tokens_details": {"cached_tokens": 2}}  # fmt: skip
    assert merged["id"] == "chatcmpl-1" and one["choices"][0]["index"] == 0
