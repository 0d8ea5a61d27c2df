"""A translated Anthropic stream's usage read by its writer (issue 16) meters exactly what the
native tap, run over the same bytes, meters: the same usage and flags (duplicate, malformed,
clamped) and the same chunks, for any stream, split anywhere, broken or hostile usage included."""

from __future__ import annotations

import itertools
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.providers import ANTHROPIC, GEMINI, TRANSLATORS
from data_plane.providers.anthropic import USAGE as ANTHROPIC_USAGE
from data_plane.providers.gemini import USAGE as GEMINI_USAGE
from data_plane.providers.translator import ChunkWriter
from data_plane.sse import EventSplitter
from data_plane.translated_relay import translate_block
from data_plane.usage.meter import FLAG_CLAMPED, FLAG_DUPLICATE, FLAG_MALFORMED, RequestMeter
from data_plane.usage.shapes import Shape
from data_plane.usage.stream import StreamTap, make_tap
from data_plane.usage.tokens import MAX_TOKENS, Usage
from tests.data_plane.translated.test_stream_fast_paths import IDS
from tests.data_plane.usage.test_stream_taps import meter
from tests.fakes.reply import sse

COUNTS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
# What a hostile or broken upstream may put where a count belongs.
COUNT_VALUES: st.SearchStrategy[Any] = st.one_of(
    st.integers(0, 10**6), st.sampled_from([None, -1, 1.5, "3", True, [], {}, 2**41, 2**63 - 1, 2**64, 2**70])
)
USAGE_VALUES: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(COUNTS), COUNT_VALUES, max_size=4),
    st.sampled_from([[], "usage", 7, [1]]),
)


def named(name: str, data: dict[str, Any]) -> bytes:
    return sse({"type": name, **data}, event=name)


@st.composite
def events(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(
        ["start", "delta", "text", "block", "ping", "stop", "error", "raw", "crlf", "unnamed"]
    ))  # fmt: skip
    if kind == "start":
        message: dict[str, Any] = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}
        usage = draw(USAGE_VALUES)
        if usage is not None or draw(st.booleans()):
            message["usage"] = usage
        return named("message_start", {"message": draw(st.sampled_from([message, None, "m"]))})
    if kind == "delta":
        body: dict[str, Any] = {"delta": {"stop_reason": draw(st.sampled_from([None, "end_turn", "max_tokens"]))}}
        usage = draw(USAGE_VALUES)
        if usage is not None or draw(st.booleans()):
            body["usage"] = usage
        return named("message_delta", body)
    if kind == "text":  # the writer's shortcut; a text naming the usage events is still text
        text = draw(st.sampled_from(["hi", "message_start", 'say "message_delta"', "é\n"]))
        return named("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}})
    if kind == "block":
        return named("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    if kind == "ping":
        return named("ping", {})
    if kind == "stop":
        return named("message_stop", {})
    if kind == "error":
        return named("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
    if kind == "crlf":
        return named("message_delta", {"usage": {"output_tokens": draw(st.integers(0, 99))}}).replace(b"\n", b"\r\n")
    if kind == "unnamed":
        return sse({"type": "message_delta", "usage": {"output_tokens": draw(st.integers(0, 99))}})
    return draw(st.sampled_from([
        b"event: message_start\ndata: {not json\n\n",
        b"event: message_delta\n\n",  # a usage event without data
        b'data: ["message_start"]\n\n',
        b'data: {"type":"message_delta","usage":{"output_tokens":' + str(2**70).encode() + b"}}\n\n",
        b'data: {"type":"message_delta","usage":{"output_tokens":3},"usage":{"input_tokens":4}}\n\n',
        b": a comment naming message_start\n\n",
        b"event: ping\ndata: message_delta\n\n",
    ]))  # fmt: skip


class Breaks:
    """A writer that fails on its ``at``-th event once it decoded it (a translator bug on a shape it
    never saw; the Anthropic writer hands a usage event to the tap as soon as it decoded it)."""

    def __init__(self, writer: ChunkWriter, at: int) -> None:
        self.writer, self.at, self.fed = writer, at, 0
        self.reads_usage = writer.reads_usage

    def feed(self, event: bytes) -> bytes:
        self.fed += 1
        out = self.writer.feed(event)
        if self.fed == self.at:
            raise RuntimeError("untranslatable")
        return out

    def close(self) -> bytes:
        return self.writer.close()


def relay(
    frames: list[bytes], cuts: list[int], *, writer_reads: bool, breaks_at: int = 0, family: int = ANTHROPIC
) -> tuple[bytes, RequestMeter]:
    """The stream as the translated relay handles it (``translate_block``): split at ``cuts``, each
    released block translated; ``breaks_at``: the writer fails on that event, which ends the stream."""
    m = meter(ANTHROPIC_USAGE if family == ANTHROPIC else GEMINI_USAGE)
    tap: StreamTap | None = make_tap(m, is_sse=True, strip_injected=False)
    writer: ChunkWriter = TRANSLATORS[family].chunks(IDS, True, tap if writer_reads else None)
    assert writer.reads_usage is writer_reads
    if breaks_at:
        writer = Breaks(writer, breaks_at)
    data = b"".join(frames)
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    splitter = EventSplitter()
    out = bytearray()
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        block = splitter.feed(data[a:b]) if b > a else b""
        if i == len(bounds) - 2:
            block += splitter.flush()
        piece, failure = translate_block(writer, block, tap)
        out += piece
        if failure is not None:
            return bytes(out) + failure.code.encode(), m
    try:
        out += writer.close()
    except ValueError as exc:
        out += repr(exc).encode()
    return bytes(out), m


@settings(max_examples=400, deadline=None)
@given(st.lists(events(), max_size=10), st.lists(st.integers(0, 10**6), max_size=6), st.integers(0, 12))
def test_the_writer_meters_what_the_tap_meters(frames: list[bytes], cuts: list[int], breaks_at: int) -> None:
    tapped, by_tap = relay(frames, cuts, writer_reads=False, breaks_at=breaks_at)
    written, by_writer = relay(frames, cuts, writer_reads=True, breaks_at=breaks_at)
    assert written == tapped
    assert (by_writer.usage, by_writer.flags) == (by_tap.usage, by_tap.flags)


def test_usage_the_writer_reads() -> None:
    """The cases the property covers, with what they must meter (it cannot fail by agreeing wrongly)."""
    start = named("message_start", {"message": {"usage": {"input_tokens": 10, "cache_read_input_tokens": 5}}})
    delta = named("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}})
    stop = named("message_stop", {})
    cases: list[tuple[list[bytes], Usage, int]] = [
        ([start, delta, stop], Usage(input=15, output=7, cached=5), 0),
        ([start, start, delta, stop], Usage(input=15, output=7, cached=5), FLAG_DUPLICATE),
        ([start, b"event: message_delta\ndata: {broken\n\n", stop], Usage(input=15, cached=5), FLAG_MALFORMED),
        ([start, named("message_delta", {"usage": {"output_tokens": -1}}), stop],
         Usage(input=15, cached=5), FLAG_MALFORMED),
        ([start, named("message_delta", {"usage": {"output_tokens": 2**41}}), stop],
         Usage(input=15, output=MAX_TOKENS, cached=5, clamped=True), FLAG_CLAMPED),
        # Beyond 64 bits: the writer's decoder refuses it, the tap's reads it (and clamps).
        ([start, b'data: {"type":"message_delta","usage":{"output_tokens":' + str(2**70).encode() + b"}}\n\n",
          stop], Usage(input=15, output=MAX_TOKENS, cached=5, clamped=True), FLAG_CLAMPED),
        # Usage after the provider's error event is still metered.
        ([start, named("error", {"error": {"type": "api_error", "message": "x"}}), delta],
         Usage(input=15, output=7, cached=5), 0),
    ]  # fmt: skip
    for frames, usage, flags in cases:
        for reads in (False, True):
            _, m = relay(frames, [], writer_reads=reads)
            assert (m.usage, m.flags) == (usage, flags), (frames, reads)
    # The writer fails on the start, in a block holding the whole stream: the events after it
    # in that block are still metered (the stream itself ends with an error chunk).
    for reads in (False, True):
        out, m = relay([start, delta, stop], [], writer_reads=reads, breaks_at=1)
        assert out.endswith(b"upstream_untranslatable") and m.usage == Usage(input=15, output=7, cached=5), reads


@pytest.mark.parametrize(("family", "other"), [(ANTHROPIC, GEMINI_USAGE), (GEMINI, ANTHROPIC_USAGE)])
def test_a_writer_reads_only_its_own_shapes_tap(family: int, other: Shape) -> None:
    """A meter of another shape (never the case today) keeps its tap on the bytes."""
    writer = TRANSLATORS[family].chunks(IDS, True, make_tap(meter(other), is_sse=True, strip_injected=False))
    assert writer.reads_usage is False


# --- Gemini: every event may carry running totals (usageMetadata) --------------------------------

GEMINI_COUNTS = ("promptTokenCount", "candidatesTokenCount", "cachedContentTokenCount", "thoughtsTokenCount",
                 "toolUsePromptTokenCount", "totalTokenCount")  # fmt: skip


@st.composite
def gemini_events(draw: st.DrawFn) -> bytes:
    end = draw(st.sampled_from(["\r\n", "\n"]))
    kind = draw(st.sampled_from(["chunk", "chunk", "error", "raw"]))
    if kind == "raw":
        return draw(st.sampled_from([
            b"data: {broken usageMetadata\r\n\r\n",
            b'data: ["usageMetadata"]\r\n\r\n',
            b'data: {"usageMetadata":\r\ndata: {"promptTokenCount":4}}\r\n\r\n',  # two data lines
            b'data: {"usageMetadata":{"promptTokenCount":4}}\rdata: {"x":1}\r\n\r\n',  # a bare CR
            b'data: {"usageMetadata":{"promptTokenCount":' + str(2**70).encode() + b"}}\r\n\r\n",
            b'data: {"usageMetadata":{"promptTokenCount":1},"usageMetadata":{"promptTokenCount":2}}\n\n',
            b": usageMetadata in a comment\r\n\r\n",
            b'event: x\rdata: {"usageMetadata":{"promptTokenCount":4}}\r\n\r\n',  # no data line without CR ends
            b"event: usageMetadata\r\n\r\n",
        ]))  # fmt: skip
    body: dict[str, Any] = {}
    if kind == "error":
        body["error"] = {"code": 500, "message": "internal", "status": "INTERNAL"}
    else:
        text = draw(st.sampled_from(["hi ", "usageMetadata", ""]))
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
        if draw(st.booleans()):
            candidate["finishReason"] = draw(st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY"]))
        body["candidates"] = [candidate]
    if draw(st.booleans()):
        body["usageMetadata"] = draw(st.one_of(
            st.dictionaries(st.sampled_from(GEMINI_COUNTS), COUNT_VALUES, max_size=4), st.sampled_from([None, [], "x"])
        ))  # fmt: skip
    return sse(body, newline=end)


@settings(max_examples=400, deadline=None)
@given(st.lists(gemini_events(), max_size=8), st.lists(st.integers(0, 10**6), max_size=6), st.integers(0, 10))
def test_the_gemini_writer_meters_what_the_tap_meters(frames: list[bytes], cuts: list[int], breaks_at: int) -> None:
    tapped, by_tap = relay(frames, cuts, writer_reads=False, breaks_at=breaks_at, family=GEMINI)
    written, by_writer = relay(frames, cuts, writer_reads=True, breaks_at=breaks_at, family=GEMINI)
    assert written == tapped
    assert (by_writer.usage, by_writer.flags) == (by_tap.usage, by_tap.flags)


def test_usage_the_gemini_writer_reads() -> None:
    def chunk(meta: Any, *, error: bool = False) -> bytes:
        body: dict[str, Any] = {"error": {"code": 500}} if error else {
            "candidates": [{"content": {"parts": [{"text": "x"}]}, "index": 0}]}  # fmt: skip
        return sse({**body, "usageMetadata": meta}, newline="\r\n")

    first = chunk({"promptTokenCount": 11, "candidatesTokenCount": 1, "cachedContentTokenCount": 3})
    last = chunk({"promptTokenCount": 11, "candidatesTokenCount": 7, "thoughtsTokenCount": 2})
    cases: list[tuple[list[bytes], Usage | None, int]] = [
        ([first, last], Usage(input=11, output=9, reasoning=2), 0),
        ([first], Usage(input=11, output=1, cached=3), 0),
        ([first, chunk({"promptTokenCount": -1})], Usage(input=11, output=1, cached=3), FLAG_MALFORMED),
        ([first, chunk({"candidatesTokenCount": 2**70})], Usage(output=MAX_TOKENS, clamped=True), FLAG_CLAMPED),
        # The usage on an error event, and after it, is still metered.
        ([first, chunk({"promptTokenCount": 5}, error=True)], Usage(input=5), 0),
        ([first, chunk(None, error=True), last], Usage(input=11, output=9, reasoning=2), 0),
    ]  # fmt: skip
    for frames, usage, flags in cases:
        for reads in (False, True):
            _, m = relay(frames, [], writer_reads=reads, family=GEMINI)
            assert (m.usage, m.flags) == (usage, flags), (frames, reads)


@pytest.mark.parametrize("count", [2**41, 2**63 - 1, 2**64 - 1, 2**70])
def test_hostile_counts_are_clamped_in_what_the_client_is_shown(count: int) -> None:
    """A count the meter clamps is clamped in the translated usage too, as the meter clamps it (the
    total): beyond 64 bits it could not be serialised at all (the stream ended with an error, the
    whole answer failed)."""
    start = named("message_start", {"message": {"usage": {"input_tokens": 2, "cache_read_input_tokens": count}}})
    delta = named("message_delta", {"usage": {"output_tokens": count}})
    out, m = relay([start, delta, named("message_stop", {})], [], writer_reads=True)
    shown = orjson.loads(out.split(b"data: ")[-2])["usage"]
    assert shown["prompt_tokens"] == MAX_TOKENS and shown["completion_tokens"] == MAX_TOKENS
    assert m.usage == Usage(input=MAX_TOKENS, output=MAX_TOKENS, cached=MAX_TOKENS, clamped=True)
    whole = {"content": [{"type": "text", "text": "hi"}], "usage": {"input_tokens": count, "output_tokens": count}}
    answer = TRANSLATORS[ANTHROPIC].answer(json.dumps(whole).encode(), IDS)  # orjson cannot write 2**70
    assert orjson.loads(orjson.dumps(answer))["usage"]["total_tokens"] == 2 * MAX_TOKENS
    meta = {"promptTokenCount": count, "candidatesTokenCount": count}
    gemini = TRANSLATORS[GEMINI].answer(json.dumps({"candidates": [], "usageMetadata": meta}).encode(), IDS)
    assert orjson.loads(orjson.dumps(gemini))["usage"]["total_tokens"] == 2 * MAX_TOKENS
