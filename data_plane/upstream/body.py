"""Request bodies written upstream piece by piece: a length known up front, bytes produced on demand.

A ``bytes`` body is written in one go (the chat path: nothing changes for it). A
:class:`BodySource` is for bodies too large to hold whole (an audio file, a batch's JSONL,
spooled to disk by the handler): the connection writes its chunks as the socket drains,
with the transport's flow control, so the node holds about one chunk per request.

``chunks()`` returns a new iterator each call: a request replayed on a fresh connection
(the pool's single retry of an idempotent request) reads the body again from its start.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Protocol

# One read from a spool file: big enough that the thread hop is noise, small enough that a
# request holds little (the transport's buffer pauses the writer beyond 64 KiB, so one
# request's body costs about this plus that in memory).
CHUNK_BYTES = 256 * 1024


class BodySource(Protocol):
    """A replayable request body of a known length."""

    @property
    def length(self) -> int:
        """The body's exact size in bytes (sent as Content-Length)."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """A fresh iterator over the body's bytes (its pieces together are exactly ``length`` bytes)."""
        ...


class BytesBody:
    """A body already in memory, behind the source interface (one chunk)."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    @property
    def length(self) -> int:
        return len(self._data)

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._data:
            yield self._data


class FileBody:
    """``length`` bytes of the file at ``path`` from ``offset``, read in chunks off the event loop.

    Each read opens, reads and closes the file in a worker thread (``asyncio.to_thread``): a
    request cancelled mid-read leaves no descriptor shared with a thread still reading it.
    A file shorter than announced raises ``OSError`` (the connection then fails the request).
    """

    __slots__ = ("_chunk", "_length", "_offset", "_path")

    def __init__(self, path: str | os.PathLike[str], offset: int, length: int, *, chunk: int = CHUNK_BYTES) -> None:
        if offset < 0 or length < 0 or chunk <= 0:
            raise ValueError("offset and length must be >= 0, chunk > 0")
        self._path = os.fspath(path)
        self._offset = offset
        self._length = length
        self._chunk = chunk

    @property
    def length(self) -> int:
        return self._length

    async def chunks(self) -> AsyncIterator[bytes]:
        position, end = self._offset, self._offset + self._length
        while position < end:
            data = await asyncio.to_thread(_read_at, self._path, position, min(self._chunk, end - position))
            position += len(data)
            yield data


def _read_at(path: str, position: int, size: int) -> bytes:
    """Exactly ``size`` bytes at ``position`` (a worker thread's job); OSError if the file ends first."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        parts: list[bytes] = []
        got = 0
        while got < size:
            data = os.pread(fd, size - got, position + got)
            if not data:
                raise OSError(f"the body file ended {size - got} bytes before its announced length")
            parts.append(data)
            got += len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)
