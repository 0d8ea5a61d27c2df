"""The translated stream's shortcuts (issue 16) answer exactly as the general code they skip:
``split_events`` on a one-event block, the Anthropic writer's data-line reading and its chunks
(serialised from a prefix made once, byte for byte the whole chunk's ``orjson.dumps``)."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.providers.anthropic_reply import _TEXT_DELTA_HEAD, MessagesChunks, _data
from data_plane.providers.translator import ReplyIds
from data_plane.sse import EVENT_END
from data_plane.translated_relay import split_events

IDS = ReplyIds(id="chatcmpl-x", created=1_700_000_000, model="claude-x")


def general_split(block: bytes) -> list[bytes]:
    """split_events as it was: every boundary found by the regex."""
    events: list[bytes] = []
    start = 0
    for match in EVENT_END.finditer(block):
        event = block[start : match.start()]
        if event.strip():
            events.append(event)
        start = match.end()
    rest = block[start:]
    if rest.strip():
        events.append(rest)
    return events


def general_data(event: bytes) -> bytes:
    return b"\n".join(line[5:].strip() for line in event.splitlines() if line.startswith(b"data:"))


PIECES = [b"event: x", b"data: {}", b'data:{"a":1}', b" data: y", b"event: data: z", b"", b":c", b"data:"]
ENDS = [b"\n", b"\r\n", b"\r", b"\n\n", b"\r\n\r\n", b"\n\r\n", b""]


def test_split_and_data_answer_as_the_general_code() -> None:
    seen = 0
    for a, b in itertools.product(PIECES, repeat=2):
        for e1, e2 in itertools.product(ENDS, repeat=2):
            block = a + e1 + b + e2
            assert split_events(block) == general_split(block), block
            assert _data(block) == general_data(block), block
            seen += 1
    for block in (b"x", b"\n", b"\n\n", b"\n\n\n", b"a\n\n\n", b"a\n\nb\n\n", b"data: 1\n\n"):
        assert split_events(block) == general_split(block), block
        assert _data(block) == general_data(block), block
    assert seen > 1000


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(PIECES + ENDS + [b" ", b"\t", b"\x0b", b"\x0c", b"event: e\ndata: {}\n\n"]), max_size=14))
def test_split_of_many_event_blocks_answers_as_the_general_code(parts: list[bytes]) -> None:
    block = b"".join(parts)
    assert split_events(block) == general_split(block), block


def chunk_dump(head: dict[str, Any], delta: dict[str, Any], finish: str | None) -> bytes:
    whole = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(whole) + b"\n\n"


def test_chunks_are_the_whole_dicts_dump() -> None:
    for include_usage in (False, True):
        writer = MessagesChunks(IDS, include_usage)
        head: dict[str, Any] = {"id": IDS.id, "object": "chat.completion.chunk", "created": IDS.created,
                                "model": IDS.model}  # fmt: skip
        if include_usage:
            head["usage"] = None
        for delta, finish in (({"content": 'a "quoted" \u00e9 \n'}, None), ({}, "stop"), ({}, "tool_calls"),
                              ({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}, None)):  # fmt: skip
            assert writer._chunk(delta, finish) == chunk_dump(head, delta, finish)


def general_writer(include_usage: bool) -> MessagesChunks:
    """A writer that never takes the text-delta shortcut."""
    writer = MessagesChunks(IDS, include_usage)
    writer.feed(b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":3}}}')
    return writer


def feed_general(writer: MessagesChunks, event: bytes, monkeypatch: Any) -> bytes:
    import data_plane.providers.anthropic_reply as reply

    with monkeypatch.context() as m:
        m.setattr(reply, "_TEXT_DELTA_HEAD", re.compile(rb"(?!)"))  # matches nothing
        return writer.feed(event)


def text_events(text: str) -> list[bytes]:
    """The same text delta as Anthropic sends it and as other encoders would."""
    body = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
    encodings = [json.dumps(body, separators=(",", ":")).encode(),
                 json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"),
                 json.dumps(body).encode()]  # fmt: skip
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in text):  # orjson refuses to write a lone surrogate
        encodings.insert(0, orjson.dumps(body))
    out = []
    for encoded in encodings:
        for head in (b"event: content_block_delta\ndata: ", b"data: ", b"data:", b"event:content_block_delta\ndata:"):
            out.append(head + encoded)
    return out


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=24))
def test_a_text_delta_answers_as_the_general_path_byte_for_byte(text: str) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        for event in text_events(text):
            for include_usage in (False, True):
                fast, general = general_writer(include_usage), general_writer(include_usage)
                assert fast.feed(event) == feed_general(general, event, monkeypatch), event


MUTATIONS = [b"\xff", b"\xed\xa0\x80", b"\\u0041", b"\\/", b"\x01", b'"', b"\\", b"\\x", b"\n", b"\r", b" "]


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(text_events("hello world")[:4]), st.integers(0, 200), st.sampled_from(MUTATIONS))
def test_a_damaged_text_delta_answers_as_the_general_path(event: bytes, at: int, piece: bytes) -> None:
    damaged = event[: at % (len(event) + 1)] + piece + event[at % (len(event) + 1) :]
    with pytest.MonkeyPatch.context() as monkeypatch:
        fast, general = general_writer(False), general_writer(False)
        assert fast.feed(damaged) == feed_general(general, damaged, monkeypatch), damaged


def test_text_delta_shortcut_cases() -> None:
    """Odd indexes, an empty text, the JSON output already seen: the general path's answers."""
    cases = [
        b'data: {"type":"content_block_delta","index":01,"delta":{"type":"text_delta","text":"a"}}',
        b'data: {"type":"content_block_delta","index":-1,"delta":{"type":"text_delta","text":"a"}}',
        b'data: {"type":"content_block_delta","index":7,"delta":{"type":"text_delta","text":""}}',
        b'data: {"type":"content_block_delta","index":7,"delta":{"type":"text_delta","text":"caf\\u00e9"}}',
        b'data: {"type":"content_block_delta","index":7,"delta":{"type":"text_delta","text":"a\\ud800"}}',
        b'data: {"type":"content_block_delta","index":7,"delta":{"type":"text_delta","text":"a"}}\n',
        b'id: 1\ndata: {"type":"content_block_delta","index":7,"delta":{"type":"text_delta","text":"a"}}',
    ]
    with pytest.MonkeyPatch.context() as monkeypatch:
        for event in cases:
            fast, general = general_writer(False), general_writer(False)
            assert fast.feed(event) == feed_general(general, event, monkeypatch), event
        # After the JSON output's tool block began, text is not content (as in map_answer).
        start = (b'data: {"type":"content_block_start","index":0,"content_block":'
                 b'{"type":"tool_use","id":"t","name":"json_answer","input":{}}}')  # fmt: skip
        event = b'data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"a"}}'
        fast, general = general_writer(False), general_writer(False)
        fast.feed(start)
        general.feed(start)
        assert fast.feed(event) == feed_general(general, event, monkeypatch) == b""
    # And the shortcut is taken for what Anthropic sends (its answer is the chunk of that text).
    event = text_events(" a b é")[0]
    assert _TEXT_DELTA_HEAD.match(event) is not None
    chunk = general_writer(False).feed(event)
    assert orjson.loads(chunk[len(b"data: ") :])["choices"][0]["delta"] == {"content": " a b é"}


TRIVIAL_EVENTS = [
    b'event: ping\ndata: {"type":"ping"}',
    b'event: message_stop\ndata: {"type":"message_stop"}',
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}',
    b'data: {"type":"content_block_stop","index":1}',
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
    b'data:{"type":"content_block_start","index":3,"content_block":{"type":"text","text":""}}',
]
TOOL_START = (b'data: {"type":"content_block_start","index":1,"content_block":'
              b'{"type":"tool_use","id":"t","name":"f","input":{}}}')  # fmt: skip
# Forwarded only while the tool block is open (not after its stop).
TOOL_PIECE = b'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"1"}}'


def run_writer(events: list[bytes], monkeypatch: Any | None) -> list[bytes | str]:
    """Every answer of a writer fed ``events`` (after a tool block began at index 1), then a piece of
    that block, then its close: the general path's when ``monkeypatch`` is given."""
    import data_plane.providers.anthropic_reply as reply

    writer = general_writer(False)
    out: list[bytes | str] = [writer.feed(TOOL_START)]
    with pytest.MonkeyPatch.context() as m:
        if monkeypatch is not None:
            m.setattr(reply, "_TRIVIAL", re.compile(rb"(?!)"))
        for event in events:
            out.append(writer.feed(event))
        out.append(writer.feed(TOOL_PIECE))
        try:
            out.append(writer.close())
        except ValueError as exc:
            out.append(str(exc))
    return out


def test_trivial_events_are_recognised_as_anthropic_sends_them() -> None:
    import data_plane.providers.anthropic_reply as reply

    for event in TRIVIAL_EVENTS:
        assert reply._TRIVIAL.fullmatch(event) is not None, event
    # And they change what follows as the general path does: message_stop lets the stream close,
    # the tool block's stop sends its empty arguments.
    fast = run_writer(TRIVIAL_EVENTS, None)
    assert fast == run_writer(TRIVIAL_EVENTS, True)
    assert fast[4] == general_writer(False)._arguments([0, False], "{}") and fast[-2] == b""
    last = fast[-1]
    assert isinstance(last, bytes) and last.endswith(b"data: [DONE]\n\n")  # message_stop seen


@settings(max_examples=800, deadline=None)
@given(
    st.lists(st.sampled_from(TRIVIAL_EVENTS), min_size=1, max_size=4),
    st.integers(0, 200),
    st.sampled_from(MUTATIONS + [b"}", b",", b'"type":"error"', b"0", b"9" * 10, b'","text":"x']),
)
def test_a_damaged_trivial_event_answers_as_the_general_path(events: list[bytes], at: int, piece: bytes) -> None:
    first = events[0]
    events[0] = first[: at % (len(first) + 1)] + piece + first[at % (len(first) + 1) :]
    assert run_writer(events, None) == run_writer(events, True), events[0]
