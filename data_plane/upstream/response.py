"""One upstream answer: status and headers, then its body as it arrives (bounded buffering)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from multidict import CIMultiDict

from data_plane.upstream.errors import UpstreamBroken

if TYPE_CHECKING:
    from data_plane.upstream.connection import Connection

# Body bytes buffered beyond what the reader took before the socket stops being read: a
# consumer slower than the provider holds at most about this much (plus one socket read).
HIGH_WATER = 256 * 1024


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

    def __init__(self, conn: Connection) -> None:
        self._conn: Connection | None = conn
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

    async def read(self) -> bytes:
        """The next body bytes, waiting for them; b"" at the end; ``UpstreamBroken`` if the body was cut."""
        if not self._chunks and not self._done and self._error is None:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
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

    # Called by the connection.

    def _feed(self, data: bytes) -> bool:
        """Add body bytes; whether the reader now lags by more than ``HIGH_WATER``."""
        self._chunks.append(data)
        self._size += len(data)
        self._wake()
        return self._size > HIGH_WATER

    def _finish(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, error: UpstreamBroken) -> None:
        if not self._done and self._error is None:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
