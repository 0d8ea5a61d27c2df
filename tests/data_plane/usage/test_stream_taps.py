"""Usage read from streams as they pass: every family's real stream shape (the fake's), split at
arbitrary byte boundaries, duplicated or malformed usage, and the include_usage stripping."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.providers.anthropic import USAGE as ANTHROPIC_USAGE
from data_plane.providers.gemini import USAGE as GEMINI_USAGE
from data_plane.providers.openai import CHAT_USAGE, RESPONSES_USAGE
from data_plane.providers.openai import USAGE as OPENAI_USAGE
from data_plane.sse import EVENT_END, EventSplitter
from data_plane.usage.inject import ensure_include_usage
from data_plane.usage.meter import FLAG_DUPLICATE, FLAG_MALFORMED, RequestMeter
from data_plane.usage.shapes import Shape
from data_plane.usage.stream import blank_line, event_bounds, make_tap
from data_plane.usage.tokens import Usage
from odock.v1 import node_pb2
from tests.fakes import anthropic_shapes, gemini_shapes, openai_shapes
from tests.fakes.reply import Ask, StreamReply, sse

PIECES = tuple(f"piece{i} " for i in range(5))


class Sink:
    def __init__(self) -> None:
        self.records: list[node_pb2.UsageRecord] = []

    def submit_closed(self, meter: RequestMeter) -> None:
        self.records.append(meter.final_record())


def ask(family: str, payload: dict[str, Any], *, query: dict[str, str] | None = None) -> Ask:
    return Ask(
        family=family,
        path="/",
        query=query or {},
        body=b"",
        payload=payload,
        form=[],
        model="m",
        stream=True,
        prompt_tokens=17,
        pieces=PIECES,
    )


def meter(shape: Shape, streamed: bool = True) -> RequestMeter:
    m = RequestMeter(
        Sink(),
        request_id="req_1",
        node_id="n",
        org_id="org_1",
        key_id="key_1",
        family=1,
        endpoint="/x",
        shape=shape,
    )
    m.streamed = streamed
    return m


def relay(
    m: RequestMeter, frames: list[bytes], *, sse_stream: bool = True, strip: bool = False, step: int = 0
) -> bytes:
    """Feed the stream through splitter + tap as the proxy does; ``step`` re-cuts it into pieces of that size."""
    tap = make_tap(m, is_sse=sse_stream, strip_injected=strip)
    assert tap is not None
    data = b"".join(frames)
    chunks = [data[i : i + step] for i in range(0, len(data), step)] if step else frames
    splitter = EventSplitter() if sse_stream else None
    out = bytearray()
    for chunk in chunks:
        ready = splitter.feed(chunk) if splitter is not None else chunk
        out += tap.relay(ready) if ready else b""
    if splitter is not None and splitter.pending:
        out += tap.relay(splitter.flush())
    return bytes(out)


def frames_of(reply: Any) -> list[bytes]:
    assert isinstance(reply, StreamReply)
    return reply.frames


def test_openai_chat_usage_chunk_at_any_split() -> None:
    frames = frames_of(openai_shapes.chat(ask("openai", {"stream_options": {"include_usage": True}})))
    for step in (0, 1, 7, 64):
        m = meter(CHAT_USAGE)
        assert relay(m, frames, step=step) == b"".join(frames)  # the client asked: nothing removed
        assert m.usage == Usage(input=17, output=5) and m.flags == 0


def test_injected_include_usage_is_invisible_to_the_client() -> None:
    asked = frames_of(openai_shapes.chat(ask("openai", {"stream_options": {"include_usage": True}})))
    plain = frames_of(openai_shapes.chat(ask("openai", {})))
    for step in (0, 3, 50):
        m = meter(CHAT_USAGE)
        assert relay(m, asked, strip=True, step=step) == b"".join(plain)
        assert m.usage == Usage(input=17, output=5)
    completions = frames_of(
        openai_shapes.completions(ask("openai", {"stream_options": {"include_usage": True}}))
    )
    m = meter(CHAT_USAGE)
    assert relay(m, completions, strip=True) == b"".join(
        frames_of(openai_shapes.completions(ask("openai", {})))
    )
    assert m.usage == Usage(input=17, output=5)


def test_duplicate_usage_chunk_is_flagged_and_counted_once() -> None:
    frames = frames_of(openai_shapes.chat(ask("openai", {"stream_options": {"include_usage": True}})))
    usage_chunk = frames[-2]
    doubled = json.loads(usage_chunk[len(b"data: ") :])
    doubled["usage"]["completion_tokens"] = 999
    m = meter(CHAT_USAGE)
    relay(m, [*frames[:-1], sse(doubled), frames[-1]])
    assert m.usage == Usage(input=17, output=5) and m.flags == FLAG_DUPLICATE


def test_malformed_usage_is_flagged_and_the_stream_passes_unchanged() -> None:
    bad = [
        sse({"choices": [], "usage": {"prompt_tokens": "many"}}),
        b'data: {"usage": {broken\n\n',
        sse("[DONE]"),
    ]
    m = meter(CHAT_USAGE)
    assert relay(m, bad) == b"".join(bad)
    assert m.usage is None and m.flags == FLAG_MALFORMED


def test_openai_responses_completed_event() -> None:
    frames = frames_of(openai_shapes.responses(ask("openai", {})))
    for step in (0, 5):
        m = meter(RESPONSES_USAGE)
        assert relay(m, frames, step=step) == b"".join(frames)
        assert m.usage == Usage(input=17, output=5)


def test_anthropic_message_start_then_delta() -> None:
    frames = frames_of(anthropic_shapes.messages(ask("anthropic", {})))
    for step in (0, 2, 33):
        m = meter(ANTHROPIC_USAGE)
        assert relay(m, frames, step=step) == b"".join(frames)
        assert m.usage == Usage(input=17, output=5) and m.flags == 0


def test_anthropic_cut_before_message_delta_keeps_what_was_seen() -> None:
    frames = frames_of(anthropic_shapes.messages(ask("anthropic", {})))
    m = meter(ANTHROPIC_USAGE)
    relay(m, frames[:3])
    assert m.usage == Usage(input=17, output=1)


def test_gemini_sse_last_usage_wins() -> None:
    frames = frames_of(gemini_shapes.generate(ask("gemini", {}, query={"alt": "sse"})))
    for step in (0, 1, 9):
        m = meter(GEMINI_USAGE)
        assert relay(m, frames, step=step) == b"".join(frames)
        assert m.usage == Usage(input=17, output=5) and m.flags == 0


def test_gemini_json_array_stream_at_any_split() -> None:
    frames = frames_of(gemini_shapes.generate(ask("gemini", {})))
    for step in (0, 1, 2, 13, 100):
        m = meter(GEMINI_USAGE)
        assert relay(m, frames, sse_stream=False, step=step) == b"".join(frames)
        assert m.usage == Usage(input=17, output=5) and m.flags == 0
    m = meter(GEMINI_USAGE)
    relay(m, frames[:2], sse_stream=False)  # cut after the second chunk
    assert m.usage == Usage(input=17, output=2)


def test_json_tap_ignores_lookalike_strings_and_bounds_memory() -> None:
    doc = (
        b'{"note": "usage", "text": "\\"usage\\": {\\"prompt_tokens\\": 99}", '
        b'"usage": {"prompt_tokens": 4, "completion_tokens": 2}}'
    )
    for step in (0, 1, 3):
        m = meter(OPENAI_USAGE, streamed=False)
        relay(m, [doc], sse_stream=False, step=step)
        assert m.usage == Usage(4, 2) and m.flags == 0
    huge = b'{"usage": {"prompt_tokens": 1, "pad": "' + b"x" * 200_000 + b'"}}'
    m = meter(OPENAI_USAGE, streamed=False)
    relay(m, [huge], sse_stream=False, step=4096)
    assert m.usage is None and m.flags == FLAG_MALFORMED


def test_include_usage_injection_keeps_bytes_or_reencodes() -> None:
    body = b'{"model":"m","stream":true,"messages":[]}'
    out, injected = ensure_include_usage(body)
    assert (
        injected
        and out == b'{"stream_options":{"include_usage":true},"model":"m","stream":true,"messages":[]}'
    )
    assert ensure_include_usage(b'{"model":"m","stream_options":{"include_usage":true}}')[1] is False
    out, injected = ensure_include_usage(b'{"model":"m","stream_options":{"include_usage":false,"x":1}}')
    assert injected and json.loads(out) == {"model": "m", "stream_options": {"include_usage": True, "x": 1}}
    out, injected = ensure_include_usage(b'{"model":"m","stream_options":null}')
    assert injected and json.loads(out)["stream_options"] == {"include_usage": True}
    assert ensure_include_usage(b'{"model":"m","stream_options":"x"}')[1] is False


@settings(max_examples=800, deadline=None)
@given(
    st.lists(st.sampled_from([b"data: x", b'"usage":{}', b"event: e", b": c"]), max_size=12),
    st.sampled_from([b"\n", b"\r\n", b"\r"]), st.booleans(),
    st.integers(0, 200), st.integers(0, 200), st.integers(0, 200),
)  # fmt: skip
def test_event_bounds_by_blank_line_are_the_general_ones(
    parts: list[bytes], end: bytes, mixed: bool, a: int, b: int, c: int
) -> None:
    """Blocks whose line ends are all LF or all CRLF: two C searches find what event_start and
    EVENT_END find; any other block (mixed ends, bare CR) takes the general path."""
    # Pieces joined by one or two line ends (a blank line), of one form unless ``mixed``.
    other = b"\r\n" if end == b"\n" else b"\n"
    data = b"".join(p + end * (1 + len(p) % 2) + (other if mixed and i == 1 else b"") for i, p in enumerate(parts))
    blank = blank_line(data)
    if b"\r" not in data:
        assert blank == b"\n\n"
    elif end == b"\r" or (mixed and len(parts) > 1):
        assert blank is None
    else:
        assert blank == b"\r\n\r\n"
    # As the tap calls it: ``pos``..``after`` a match (not a line end), ``lo`` where an event starts.
    text = [i for i in range(len(data)) if data[i] not in b"\r\n"]
    if not text:
        return
    pos = text[a % len(text)]
    after = max(pos + 1, text[b % len(text)] + 1)
    starts = [0] + [m.end() for m in EVENT_END.finditer(data) if m.end() <= pos]
    lo = starts[c % len(starts)]
    assert event_bounds(data, pos, after, lo, blank) == event_bounds(data, pos, after, lo, None)
