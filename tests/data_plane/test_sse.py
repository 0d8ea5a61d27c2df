"""EventSplitter: complete events pass at once, a partial one is held back."""

from __future__ import annotations

import pytest

from data_plane.sse import EventSplitter


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
