"""The translated stream's shortcuts (issue 16) answer exactly as the general code they skip:
``split_events`` on a one-event block, the Anthropic writer's data-line reading and its chunks
(serialised from a prefix made once, byte for byte the whole chunk's ``orjson.dumps``)."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.providers.anthropic_reply import MessagesChunks, _data
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
