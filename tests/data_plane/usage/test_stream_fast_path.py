"""The injected-stream shortcut of ``SseTap.relay`` (issue 16): whenever it answers, its answer is
the general path's, byte for byte, and the meter sees the same (blocks the shortcut must leave
to the general path: real usage, spaced or first-member nulls, "usage" inside a value)."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from data_plane.providers.openai import CHAT_USAGE, ChatTap
from data_plane.usage.meter import FLAG_DUPLICATE
from data_plane.usage.stream import SseTap
from data_plane.usage.tokens import Usage
from tests.data_plane.usage.test_stream_taps import meter


def general(tap: ChatTap, data: bytes) -> bytes:
    """What relay answered before the shortcut: a block without a candidate lost its null members
    (``_strip_nulls``), a block with one took the event-by-event path (where the shortcut never answers)."""
    candidate = ChatTap.candidate
    assert candidate is not None
    if tap._strip and candidate.search(data) is None:
        return tap._strip_nulls(data)
    return SseTap.relay(tap, data)


def chunk(content: str, usage: Any = None, *, layout: str = "last") -> bytes:
    body: dict[str, Any] = {"id": "c", "object": "chat.completion.chunk",
                            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}  # fmt: skip
    if layout == "first":
        body = {"usage": usage, **body}
    elif layout == "last":
        body = {**body, "usage": usage}
    raw = orjson.dumps(body)
    if layout == "spaced":
        raw = raw[:-1] + b', "usage": null}'
    return b"data: " + raw + b"\n\n"


USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
EVENTS = [
    chunk("hi"),
    chunk('the "usage" word'),
    chunk("usage"),
    chunk("x", layout="first"),
    chunk("y", layout="spaced"),
    chunk("z", layout="none"),
    b'data: {"id":"c","choices":[],"usage":' + orjson.dumps(USAGE) + b"}\n\n",
    b"data: [DONE]\n\n",
]


@pytest.mark.parametrize("strip", [True, False])
def test_shortcut_answers_as_the_general_path(strip: bool) -> None:
    for size in (1, 2, 3):
        for block_events in itertools.product(EVENTS, repeat=size):
            block = b"".join(block_events)
            fast, slow = meter(CHAT_USAGE), meter(CHAT_USAGE)
            out = ChatTap(fast, strip_injected=strip).relay(block)
            assert out == general(ChatTap(slow, strip_injected=strip), block), block
            assert (fast.usage, fast.flags) == (slow.usage, slow.flags), block
            assert fast.usage == (Usage(input=5, output=2) if EVENTS[6] in block_events else None)
            assert fast.flags == (FLAG_DUPLICATE if block_events.count(EVENTS[6]) > 1 else 0)
            assert (EVENTS[6] in out) == (EVENTS[6] in block_events and not strip)


def test_compact_nulls_are_cut_without_the_general_path() -> None:
    block = chunk("a") + chunk("b")
    m = meter(CHAT_USAGE)
    assert ChatTap(m, strip_injected=True).relay(block) == chunk("a", layout="none") + chunk(
        "b", layout="none"
    )
    assert m.usage is None and m.flags == 0
