"""EventSplitter: complete events pass at once, a partial one is held back (bounded, in linear time)."""

from __future__ import annotations

import time

import pytest

from data_plane.providers.gemini import USAGE as GEMINI_USAGE
from data_plane.sse import EventSplitter, EventTooLarge
from data_plane.usage.meter import RequestMeter
from data_plane.usage.stream import make_tap


def test_complete_events_pass_through_immediately() -> None:
    s = EventSplitter()
    assert s.feed(b"data: 1\n\ndata: 2\n\n") == b"data: 1\n\ndata: 2\n\n"
    assert s.pending == b""


@pytest.mark.parametrize("nl", ["\n", "\r\n", "\r"])
def test_partial_event_is_held_until_its_blank_line(nl: str) -> None:
    s = EventSplitter()
    first = f"event: a{nl}data: 1{nl}{nl}".encode()
    assert s.feed(first + b'data: {"par') == first
    assert s.pending == b'data: {"par'
    assert s.feed(f'tial"}}{nl}'.encode()) == b""
    assert s.feed(nl.encode()) == f'data: {{"partial"}}{nl}{nl}'.encode()
    assert s.pending == b""


def test_boundary_split_across_chunks() -> None:
    s = EventSplitter()
    assert s.feed(b"data: x\r\n") == b""
    assert s.feed(b"\r") == b"data: x\r\n\r"
    assert s.feed(b"\ndata: y\n\n") == b"\ndata: y\n\n"


def test_flush_returns_a_final_event_without_blank_line() -> None:
    s = EventSplitter()
    assert s.feed(b"data: [DONE]") == b""
    assert s.flush() == b"data: [DONE]" and s.pending == b""


def test_an_unterminated_event_over_the_bound_raises() -> None:
    s = EventSplitter(max_event=4096)
    assert s.feed(b"data: ok\n\n") == b"data: ok\n\n"
    with pytest.raises(EventTooLarge):
        for _ in range(100):
            s.feed(b"data: " + b"x" * 100)
    assert s.pending == b""  # nothing kept once refused


def test_an_event_up_to_the_bound_passes_whole() -> None:
    s = EventSplitter(max_event=4096)
    body = b"data: " + b"x" * 4000
    for i in range(0, len(body), 7):
        assert s.feed(body[i : i + 7]) == b""
    assert s.feed(b"\n\n") == body + b"\n\n"


def _split_seconds(size: int, piece: int = 32) -> float:
    """Best of three: CPU time to feed ``size`` bytes of one unterminated event in ``piece``-byte chunks."""
    chunk = b"x" * piece
    best = float("inf")
    for _ in range(3):
        s = EventSplitter(max_event=size + 1)
        start = time.process_time()
        for _ in range(size // piece):
            s.feed(chunk)
        assert s.feed(b"\n\n").endswith(b"x\n\n") and s.pending == b""
        best = min(best, time.process_time() - start)
    return best


def test_splitting_is_linear_in_the_bytes_fed() -> None:
    # Linear: 4x the bytes take about 4x the time; re-copying the held event per chunk
    # (quadratic) takes 16x. The margin leaves room for a busy machine.
    small = _split_seconds(256 * 1024)
    large = _split_seconds(1024 * 1024)
    assert large < 8 * small, (small, large)


class _Sink:
    def submit_closed(self, meter: RequestMeter) -> None:
        meter.final_record()


def _tap_seconds(events: int) -> float:
    """Best of three: the usage tap over one block of ``events`` events that each hold a usage report."""
    event = b'data: {"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1,"totalTokenCount":2}}\n\n'
    block = event * events
    best = float("inf")
    for _ in range(3):
        meter = RequestMeter(_Sink(), request_id="r", node_id="n", org_id="o", key_id="k", family=3,
                             endpoint="/x", shape=GEMINI_USAGE)  # fmt: skip
        tap = make_tap(meter, is_sse=True, strip_injected=False)
        assert tap is not None
        start = time.process_time()
        assert tap.relay(block) == block
        best = min(best, time.process_time() - start)
    return best


def test_the_usage_tap_finds_events_in_linear_time() -> None:
    # Each event's start was searched back to the block's start: quadratic in the block
    # (8x the events took 35x the time; linear takes about 8x, often less).
    small = _tap_seconds(1000)
    large = _tap_seconds(8000)
    assert large < 16 * small, (small, large)


@pytest.mark.parametrize("terminator", [b"\n\n", b"\r\n\r\n", b"\r\r", b"\n\r\n"])
def test_an_event_of_exactly_the_bound_passes_whatever_the_cuts_in_its_blank_line(terminator: bytes) -> None:
    s = EventSplitter(max_event=4096)
    event = b"data: " + b"x" * (4096 - 6)
    assert s.feed(event) == b""
    out = b"".join(s.feed(terminator[i : i + 1]) for i in range(len(terminator)))
    assert out.startswith(event) and out + s.flush() == event + terminator  # "\r\n\r" already ends it
    with pytest.raises(EventTooLarge):
        s.feed(event + b"xxxx")  # one byte over the bound, and the room for a blank line's start
