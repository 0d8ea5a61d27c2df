"""The SSE tap's shortcuts against the straightforward algorithm they replaced (issue 16).

``Reference`` is the tap as it was before the shortcuts of session 10 (every block searched
forward for candidates, every part between them stripped of null members from scratch,
every event's lines walked): on any block of events, the tap must relay the same bytes and
leave its meter in the same state. The events are drawn from layouts real providers send and
from hostile ones (nulls in every position, CR line ends, several data lines, duplicate
members, "usage" inside strings, usage chunks in the middle of a block).
"""

from __future__ import annotations

import re

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.providers.openai import CHAT_USAGE, ChatTap
from data_plane.sse import EVENT_END
from data_plane.usage import stream
from data_plane.usage.stream import _COMPACT_LAST, event_start
from tests.data_plane.usage.test_stream_taps import meter

_LINE = re.compile(rb"\r\n|\r|\n")


def reference_event_fields(event: bytes) -> tuple[bytes, bytes]:
    name = b""
    data: list[bytes] = []
    for line in _LINE.split(event):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    return name, b"\n".join(data)


class Reference(ChatTap):
    """The tap before the shortcuts: forward search, and each part stripped from scratch (the
    tap's own ``_strip_nulls`` without a ``cut``: the previous function, plus a return for a part
    without "usage" that changes no result)."""

    def relay(self, data: bytes) -> bytes:
        if not data or self._candidate is None:
            return data
        if self._strip:
            cut = data.replace(_COMPACT_LAST, b"}\n")
            if b'"usage"' not in cut:
                return cut
        found = self._candidate.search(data)
        if found is None:
            return self._strip_nulls(data) if self._strip else data
        out: list[bytes] = []
        changed = False
        done = 0
        while found is not None:
            start = event_start(data, found.start(), done)
            end_match = EVENT_END.search(data, found.end())
            body_end, end = (end_match.start(), end_match.end()) if end_match else (len(data), len(data))
            if start > done:
                out.append(self._strip_nulls(data[done:start]) if self._strip else data[done:start])
            raw = data[start:end]
            kept = self._event(data[start:body_end], raw)
            changed = changed or len(kept) != len(raw)
            out.append(kept)
            done = end
            found = self._candidate.search(data, end)
        if done < len(data):
            out.append(self._strip_nulls(data[done:]) if self._strip else data[done:])
        if not changed and not self._strip:
            return data
        return b"".join(out)


USAGE = orjson.dumps({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})
CHOICES = b'"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]'
BODIES = [
    b'{"id":"c",' + CHOICES + b',"usage":null}',  # OpenAI with include_usage
    b'{"id":"c",' + CHOICES + b"}",  # without it
    b'{"usage":null,"id":"c",' + CHOICES + b"}",  # first member
    b'{"id":"c","usage":null,' + CHOICES + b"}",  # middle member
    b'{"id": "c", ' + CHOICES + b', "usage" : null }',  # spaced
    b'{"id":"c","choices":[],"usage":' + USAGE + b"}",  # the usage-only chunk
    b'{"id":"c",' + CHOICES + b',"usage":' + USAGE + b"}",  # usage on a chunk with choices
    b'{"id":"c","choices":[],"usage":' + USAGE + b',"usage":null}',  # duplicate member, null last
    b'{"id":"c","usage":null,"x":1,"usage":null}',  # two nulls
    b'{"id":"c","choices":[{"delta":{"usage":null,"content":"x"}}],"usage":null}',  # nested null
    b'{"id":"c","choices":[{"delta":{"content":"\\"usage\\": {\\"prompt_tokens\\": 9}"}}],"usage":null}',
    b'{"id":"c","choices":[],"usage":5}',  # malformed usage
    b'{"id":"c","choices":[],"usage":{"prompt_tokens":-1}}',  # malformed counts
    b'{"id":"c","usage":null,"usage":null}',
    b'{"id":"c","usage"usage":null,"x":1}',  # '"usage"' overlapping itself: a candidate, then a null
    b'{"id":"c","usages":{"a":1},"usage":null}',  # a longer name starting the same
    b'{"id":"c","usage":null]',  # a null member not followed by , or }: a candidate
    b"[DONE]",
]


@st.composite
def events(draw: st.DrawFn) -> bytes:
    body = draw(st.sampled_from(BODIES))
    newline = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    prefix = draw(st.sampled_from([b"data: ", b"data:"]))
    if draw(st.booleans()) and b"\n" not in body:  # the JSON split over two data lines
        cut = draw(st.integers(1, max(1, len(body) - 1)))
        lines = prefix + body[:cut] + newline + prefix + body[cut:] + newline
    else:
        lines = prefix + body + newline
    if draw(st.booleans()):
        lines = b"event: chunk" + newline + lines
    return lines + newline


@settings(max_examples=600, deadline=None)
@given(st.lists(events(), min_size=1, max_size=8), st.booleans())
def test_the_tap_relays_and_meters_as_the_reference_does(block_events: list[bytes], strip: bool) -> None:
    block = b"".join(block_events)
    fast, slow = meter(CHAT_USAGE), meter(CHAT_USAGE)
    assert ChatTap(fast, strip_injected=strip).relay(block) == Reference(slow, strip_injected=strip).relay(block)
    assert (fast.usage, fast.flags) == (slow.usage, slow.flags)


def test_a_usage_chunk_far_from_the_end_is_still_found() -> None:
    """More null members after the usage chunk than the backward search tries."""
    null = b"data: " + BODIES[0] + b"\n\n"
    usage = b"data: " + BODIES[5] + b"\n\n"
    block = null * 3 + usage + null * (stream._BACKWARD_TRIES + 2)
    fast, slow = meter(CHAT_USAGE), meter(CHAT_USAGE)
    out = ChatTap(fast, strip_injected=True).relay(block)
    assert out == Reference(slow, strip_injected=True).relay(block)
    assert fast.usage is not None and fast.usage == slow.usage
    assert b'"usage"' not in out


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b"data: x", b"data:y", b"event: e", b": c", b"data: {\"a\":1}", b"id: 1"]),
                min_size=1, max_size=4), st.sampled_from([b"\n", b"\r\n", b"\r"]))  # fmt: skip
def test_event_fields_reads_as_the_line_walk(lines: list[bytes], newline: bytes) -> None:
    event = newline.join(lines)
    assert stream.event_fields(event) == reference_event_fields(event)

