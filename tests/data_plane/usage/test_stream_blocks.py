"""The SSE tap on whole blocks of events (how a fast upstream's stream arrives: many events per
read), the include_usage stripping for every member layout, and lookalikes that must not count."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.providers.anthropic import USAGE as ANTHROPIC_USAGE
from data_plane.providers.gemini import USAGE as GEMINI_USAGE
from data_plane.providers.openai import CHAT_USAGE, RESPONSES_USAGE
from data_plane.sse import EventSplitter
from data_plane.usage.meter import FLAG_DUPLICATE, FLAG_MALFORMED, RequestMeter
from data_plane.usage.shapes import Shape
from data_plane.usage.stream import event_start
from data_plane.usage.tokens import Usage
from tests.data_plane.usage.test_stream_taps import ask, frames_of, meter, relay
from tests.fakes import anthropic_shapes, gemini_shapes, openai_shapes
from tests.fakes.reply import sse

USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def one_block(m: RequestMeter, frames: list[bytes], *, strip: bool = False) -> bytes:
    """The whole stream through splitter and tap in one read, as a fast upstream delivers it."""
    return relay(m, [b"".join(frames)], strip=strip)


def streams() -> list[tuple[str, Shape, list[bytes], bool]]:
    asked = {"stream_options": {"include_usage": True}}
    return [
        ("chat asked", CHAT_USAGE, frames_of(openai_shapes.chat(ask("openai", asked))), False),
        ("chat injected", CHAT_USAGE, frames_of(openai_shapes.chat(ask("openai", asked))), True),
        ("completions injected", CHAT_USAGE,
         frames_of(openai_shapes.completions(ask("openai", asked))), True),
        ("responses", RESPONSES_USAGE, frames_of(openai_shapes.responses(ask("openai", {}))), False),
        ("anthropic", ANTHROPIC_USAGE, frames_of(anthropic_shapes.messages(ask("anthropic", {}))), False),
        ("gemini sse", GEMINI_USAGE,
         frames_of(gemini_shapes.generate(ask("gemini", {}, query={"alt": "sse"}))), False),
    ]  # fmt: skip


@pytest.mark.parametrize(("name", "shape", "frames", "strip"), streams(), ids=lambda v: str(v)[:24])
def test_one_block_equals_event_by_event(name: str, shape: Shape, frames: list[bytes], strip: bool) -> None:
    by_event, whole = meter(shape), meter(shape)
    expected = relay(by_event, frames, strip=strip)
    assert one_block(whole, frames, strip=strip) == expected
    assert whole.usage == by_event.usage == Usage(input=17, output=5)
    assert whole.flags == by_event.flags == 0


def test_injected_usage_is_stripped_from_a_block_in_every_layout() -> None:
    choices = [{"index": 0, "delta": {"content": "hi"}}]
    plain = [{"id": "c1", "choices": choices}, {"id": "c2", "choices": choices}]
    layouts: list[tuple[list[bytes], list[bytes]]] = [
        # last member (OpenAI, vLLM), first member, middle member, spaced separators
        ([sse({**c, "usage": None}) for c in plain], [sse(c) for c in plain]),
        ([sse({"usage": None, **c}) for c in plain], [sse(c) for c in plain]),
        ([sse({"id": c["id"], "usage": None, "choices": choices}) for c in plain], [sse(c) for c in plain]),
        (
            [f'data: {{"id": "{c["id"]}", "usage" : null }}\n\n'.encode() for c in plain],
            [f'data: {{"id": "{c["id"]}" }}\n\n'.encode() for c in plain],
        ),
    ]
    usage_chunk = sse({"id": "c3", "choices": [], "usage": USAGE})
    for sent, seen in layouts:
        m = meter(CHAT_USAGE)
        assert one_block(m, [*sent, usage_chunk, sse("[DONE]")], strip=True) == b"".join(
            [*seen, sse("[DONE]")]
        )
        assert m.usage == Usage(input=7, output=3) and m.flags == 0


def test_nested_null_usage_is_left_alone_when_stripping() -> None:
    nested = {"id": "c1", "choices": [{"index": 0, "delta": {"usage": None, "content": "x"}}]}
    m = meter(CHAT_USAGE)
    out = one_block(m, [sse({**nested, "usage": None}), sse("[DONE]")], strip=True)
    assert out == sse(nested) + sse("[DONE]")
    assert m.usage is None and m.flags == 0


def test_lookalikes_are_not_usage() -> None:
    chunks = [
        sse({"id": "c1", "choices": [{"delta": {"content": "usage"}}], "usage": None}),
        sse(
            {"id": "c2", "choices": [{"delta": {"content": '"usage": {"prompt_tokens": 99}'}}], "usage": None}
        ),
        sse({"id": "c3", "choices": [], "usage": USAGE}),
    ]
    m = meter(CHAT_USAGE)
    assert one_block(m, chunks) == b"".join(chunks)
    assert m.usage == Usage(input=7, output=3) and m.flags == 0


def test_usage_on_chunks_with_choices_is_cumulative_and_a_second_final_is_flagged() -> None:
    chunks = [
        sse(
            {"id": "c1", "choices": [{"delta": {"content": "a"}}], "usage": {**USAGE, "completion_tokens": 1}}
        ),
        sse({"id": "c2", "choices": [], "usage": USAGE}),
        sse({"id": "c3", "choices": None, "usage": {**USAGE, "completion_tokens": 50}}),
    ]
    m = meter(CHAT_USAGE)
    one_block(m, chunks)
    assert m.usage == Usage(input=7, output=3) and m.flags == FLAG_DUPLICATE


def test_a_non_object_usage_in_a_block_is_malformed() -> None:
    chunks = [sse({"id": "c1", "choices": [], "usage": 5}), sse("[DONE]")]
    m = meter(CHAT_USAGE)
    assert one_block(m, chunks) == b"".join(chunks)
    assert m.usage is None and m.flags == FLAG_MALFORMED


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_events_are_found_whatever_the_line_ends(newline: str) -> None:
    frames = [
        sse({"type": "message_start", "message": {"usage": {"input_tokens": 4, "output_tokens": 1}}},
            event="message_start", newline=newline),
        sse({"type": "ping"}, event="ping", newline=newline),
        sse({"type": "message_delta", "usage": {"output_tokens": 9}}, event="message_delta", newline=newline),
    ]  # fmt: skip
    for step in (0, 1, 5, 1000):
        m = meter(ANTHROPIC_USAGE)
        data = b"".join(frames)
        chunks = [data[i : i + step] for i in range(0, len(data), step)] if step else [data]
        assert relay(m, chunks) == data
        assert m.usage == Usage(input=4, output=9) and m.flags == 0


def test_event_start() -> None:
    data = b"event: a\r\ndata: 1\r\n\r\nevent: b\ndata: 2\n\ndata: 3\r\rdata: 4"
    for text, start in ((b"1", 0), (b"a", 0), (b"b", data.index(b"event: b")), (b"2", data.index(b"event: b")),
                        (b"3", data.index(b"data: 3")), (b"4", data.index(b"data: 4"))):  # fmt: skip
        assert event_start(data, data.index(text)) == start


def _event_start_by_definition(data: bytes, pos: int, lo: int) -> int:
    """event_start as first written: the latest of the three blank-line forms in [lo, pos)."""
    at = max(data.rfind(b"\n\n", lo, pos), data.rfind(b"\r\r", lo, pos), data.rfind(b"\n\r", lo, pos))
    if at < 0:
        return lo
    at += 2
    while at < pos and data[at] in b"\r\n":
        at += 1
    return at


@settings(max_examples=500, deadline=None)
@given(
    data=st.lists(st.sampled_from([b"\n", b"\r", b"\r\n", b"data: x", b"e", b"\n\n", b"\r\r"]), max_size=30).map(b"".join),
    cut=st.tuples(st.integers(0, 200), st.integers(0, 200)),
)
def test_event_start_finds_what_the_three_searches_find(data: bytes, cut: tuple[int, int]) -> None:
    lo, pos = sorted(min(c, len(data)) for c in cut)
    assert event_start(data, pos, lo) == _event_start_by_definition(data, pos, lo)


def test_splitter_hands_over_whole_blocks_and_holds_partial_events() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b"data: 1\n\ndata: 2\n\n") == b"data: 1\n\ndata: 2\n\n"
    assert splitter.pending == b""
    assert splitter.feed(b"data: 3\n\ndata: 4") == b"data: 3\n\n"
    assert splitter.feed(b"\r\n") == b""
    assert splitter.feed(b"\r\n") == b"data: 4\r\n\r\n"
    assert splitter.feed(b"data: 5\r") == b""
    assert splitter.feed(b"\n\r\ndata: 6\n") == b"data: 5\r\n\r\n"
    assert splitter.flush() == b"data: 6\n"


def _chunk(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"c{i}", "choices": [{"index": 0, "delta": {"content": str(i)}}], **extra}


def test_many_events_per_block_at_random_cuts() -> None:
    sent = [sse(_chunk(i, usage=None)) for i in range(30)] + [
        sse({"choices": [], "usage": USAGE}),
        sse("[DONE]"),
    ]
    seen = b"".join([*(sse(_chunk(i)) for i in range(30)), sse("[DONE]")])
    data = b"".join(sent)
    for step in (17, 250, 1024, len(data)):
        m = meter(CHAT_USAGE)
        chunks = [data[i : i + step] for i in range(0, len(data), step)]
        assert relay(m, chunks, strip=True) == seen
        assert m.usage == Usage(input=7, output=3) and m.flags == 0
    assert json.loads(seen.split(b"\n\n")[0][6:]) == _chunk(0)
