"""One upstream answer: status and headers, then its body as it arrives (bounded buffering).

Two sides, like aiohttp's ``StreamReader``: whoever parses the answer (the connection, or a
test's fake transport) sets the head attributes and feeds the body through ``feed_data``,
``feed_eof`` and ``set_exception``; the relay reads it with ``read_nowait``/``read`` and hands
it back with ``release``/``close``. The answer knows its feeder only as a :class:`Source`.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from multidict import CIMultiDict

from data_plane import deadlines
from data_plane.upstream.errors import UpstreamBroken

# Body bytes buffered beyond what the reader took before the socket stops being read: a
# consumer slower than the provider holds at most about this much (plus one socket read).
HIGH_WATER = 256 * 1024


class Source(Protocol):
    """What an answer needs of what feeds it: flow control, and where it goes when read."""

    paused: bool  # the feeder stopped reading because the reader lags (see ``feed_data``)

    def resume(self) -> None:
        """The reader caught up: read again."""

    def finished(self, clean: bool) -> None:
        """The reader is done; ``clean``: the whole body arrived (the source may be reused)."""


class UpstreamResponse:
    """The answer to one request; the body is read with ``read_nowait``/``read`` and ends with b""."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_done",
        "_error",
        "_headers",
        "_size",
        "_waiter",
        "close_delimited",
        "content_type",
        "encoded",
        "raw_headers",
        "reason",
        "status",
    )

    def __init__(self, conn: Source) -> None:
        self._conn: Source | None = conn
        self.status = 0
        self.reason = ""
        self.raw_headers: list[tuple[str, str]] = []
        self.content_type = "application/octet-stream"  # lower-case media type, no parameters
        self.close_delimited = False  # no length, not chunked: the body ends when the connection does
        # A content or transfer coding other than identity/chunked: the gateway asked for none
        # (Accept-Encoding: identity), and could not scrub the secret from coded bytes.
        self.encoded = False
        self._headers: CIMultiDict[str] | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False  # the whole body arrived
        self._error: UpstreamBroken | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def headers(self) -> CIMultiDict[str]:
        """The response headers (case-insensitive, repeated names kept in order)."""
        if self._headers is None:
            self._headers = CIMultiDict(self.raw_headers)
        return self._headers

    def at_eof(self) -> bool:
        """Whether the whole body arrived and was read."""
        return self._done and not self._chunks

    def has_body_bytes(self) -> bool:
        """Whether body bytes arrived that were not read yet (a read would return them at once)."""
        return bool(self._chunks)

    def read_nowait(self) -> bytes:
        """Body bytes that already arrived (b"" if none); raises ``UpstreamBroken`` once they ran out on a failure."""
        chunks = self._chunks
        if chunks:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            self._size = 0
            conn = self._conn
            if conn is not None and conn.paused:
                conn.resume()
            return data
        if self._error is not None:
            raise self._error
        return b""

    async def read(self, deadline: float | None = None) -> bytes:
        """The next body bytes, waiting for them; b"" at the end; ``UpstreamBroken`` if the body was cut.

        ``deadline`` (loop time): ``TimeoutError`` if nothing came by then (a wheel slot, not a
        loop timer per wait: ``data_plane/deadlines.py``).
        """
        if not self._chunks and not self._done and self._error is None:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            if deadline is None:
                try:
                    await waiter
                finally:
                    self._waiter = None
            else:
                wheel = deadlines.wheel()
                slot = wheel.add(deadline, waiter, deadlines.fail_with_timeout)
                try:
                    await waiter
                finally:
                    self._waiter = None
                    wheel.discard(slot, waiter)
        return self.read_nowait()

    def release(self) -> None:
        """Done with the answer: the connection goes back to the pool if the body ended cleanly, else it closes."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finished(self._done)

    def close(self) -> None:
        """Done with the answer, and the connection is closed whatever its state."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finished(False)

    # The feeding side (aiohttp's StreamReader names), called by the source as the answer arrives.

    def is_eof(self) -> bool:
        """Whether the end of the body was fed (``feed_eof``), read or not."""
        return self._done

    def feed_data(self, data: bytes) -> bool:
        """Add body bytes; whether the reader now lags by more than ``HIGH_WATER`` (the source should pause)."""
        self._chunks.append(data)
        self._size += len(data)
        self._wake()
        return self._size > HIGH_WATER

    def feed_eof(self) -> None:
        """The whole body arrived: once the buffered bytes are read, ``read`` returns b""."""
        self._done = True
        self._wake()

    def set_exception(self, error: UpstreamBroken) -> None:
        """The body was cut: once the buffered bytes are read, reading raises ``error`` (ignored after ``feed_eof``)."""
        if not self._done and self._error is None:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
