"""The response's public feed API (``feed_data``/``feed_eof``/``set_exception``), driven by a fake source.

The connection feeds answers only through these names; a fake transport may do the same.
"""

from __future__ import annotations

import asyncio

import pytest

from data_plane.upstream import UpstreamBroken
from data_plane.upstream.response import HIGH_WATER, Source, UpstreamResponse
from tests.data_plane.upstream.conftest import Run


class FakeSource:
    """A source that records what the answer asks of it."""

    def __init__(self) -> None:
        self.paused = False
        self.resumed = 0
        self.finished_with: list[bool] = []

    def resume(self) -> None:
        self.paused = False
        self.resumed += 1

    def finished(self, clean: bool) -> None:
        self.finished_with.append(clean)


def answer() -> tuple[UpstreamResponse, FakeSource]:
    source = FakeSource()
    typed: Source = source  # the fake satisfies the protocol the answer knows its feeder by
    return UpstreamResponse(typed), source


def test_bytes_fed_are_read_in_order_then_eof_reads_empty(run: Run[None]) -> None:
    async def scenario() -> None:
        resp, source = answer()
        assert resp.read_nowait() == b"" and not resp.is_eof() and not resp.at_eof()
        assert resp.feed_data(b"ab") is False
        assert resp.feed_data(b"cd") is False
        assert resp.read_nowait() == b"abcd"
        resp.feed_data(b"ef")
        resp.feed_eof()
        assert resp.is_eof() and not resp.at_eof()  # fed, not yet read
        assert await resp.read() == b"ef"
        assert resp.at_eof()
        assert await resp.read() == b""  # reading after the end: b"", at once
        assert resp.read_nowait() == b""
        resp.release()
        resp.release()  # idempotent: the source hears of it once
        assert source.finished_with == [True]

    run(scenario())


def test_a_waiting_read_wakes_on_data_and_on_eof(run: Run[None]) -> None:
    async def scenario() -> None:
        resp, _ = answer()
        reader = asyncio.create_task(resp.read())
        await asyncio.sleep(0)
        assert not reader.done()
        resp.feed_data(b"x")
        assert await reader == b"x"
        reader = asyncio.create_task(resp.read())
        await asyncio.sleep(0)
        assert not reader.done()
        resp.feed_eof()
        assert await reader == b""

    run(scenario())


def test_an_exception_is_raised_after_the_bytes_that_came_before_it(run: Run[None]) -> None:
    async def scenario() -> None:
        resp, source = answer()
        resp.feed_data(b"partial")
        error = UpstreamBroken("cut")
        resp.set_exception(error)
        resp.set_exception(UpstreamBroken("later"))  # the first failure is the one reported
        assert not resp.is_eof()
        assert await resp.read() == b"partial"
        with pytest.raises(UpstreamBroken) as raised:
            resp.read_nowait()
        assert raised.value is error
        with pytest.raises(UpstreamBroken):
            await resp.read()
        resp.release()
        assert source.finished_with == [False]  # a cut body never goes back to the pool

    run(scenario())


def test_a_waiting_read_wakes_on_an_exception(run: Run[None]) -> None:
    async def scenario() -> None:
        resp, _ = answer()
        reader = asyncio.create_task(resp.read())
        await asyncio.sleep(0)
        resp.set_exception(UpstreamBroken("reset"))
        with pytest.raises(UpstreamBroken):
            await reader

    run(scenario())


def test_an_exception_after_eof_is_ignored(run: Run[None]) -> None:
    async def scenario() -> None:
        resp, _ = answer()
        resp.feed_data(b"whole")
        resp.feed_eof()
        resp.set_exception(UpstreamBroken("connection closed after a complete answer"))
        assert await resp.read() == b"whole"
        assert await resp.read() == b""

    run(scenario())


def test_feed_data_says_when_the_reader_lags_and_reading_resumes_a_paused_source(run: Run[None]) -> None:
    async def scenario() -> None:
        resp, source = answer()
        assert resp.feed_data(b"a" * HIGH_WATER) is False  # at the mark: not over it
        assert resp.feed_data(b"b") is True
        source.paused = True  # what the connection does on True
        assert len(resp.read_nowait()) == HIGH_WATER + 1
        assert source.resumed == 1 and not source.paused
        assert resp.feed_data(b"c") is False  # the count restarts once read
        resp.close()
        assert source.finished_with == [False]  # close: never reused, whatever the state

    run(scenario())
