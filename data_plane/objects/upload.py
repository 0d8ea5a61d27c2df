"""A ``POST /v1/files`` form received with bounded memory: its file part spooled to disk.

The form is read as it arrives (aiohttp's streaming multipart reader, paced like every body:
``data_plane.body.BodyPace``), its small fields kept (each at most ``MAX_FIELD_BYTES``), its
``file`` part written to a temporary file in ``ODOCK_UPLOAD_DIR`` in ``WRITE_BYTES`` pieces,
each write in a worker thread. The file's size is bounded while it arrives (``limit``), so
an oversized upload is refused before it fills the disk. A full disk answers 507, any other
write failure (a short write included) 503: nothing has been sent upstream yet at that point.
The spool is removed on every path (:class:`Spool` is a context manager).

The upstream form is rebuilt around the spooled file (:func:`upstream_form`): the fields the
gateway forwards, then the file part, streamed from disk (``data_plane.upstream.body``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import secrets
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BodyPartReader
from aiohttp.web_protocol import RequestPayloadError

from data_plane.body import BodyPace, too_large
from data_plane.errors import GatewayError
from data_plane.settings import Timeouts
from data_plane.upstream.body import BytesBody, FileBody

MAX_FIELD_BYTES = 4096
MAX_PARTS = 32
READ_BYTES = 256 * 1024  # one read from the client
WRITE_BYTES = 1024 * 1024  # one write to the spool (one thread hop)
MAX_FILENAME = 255
# A part's Content-Type passed on: type/subtype and parameters, printable ASCII only.
_MEDIA_TYPE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:[ \t]*;[ -~]*)?")


def no_space() -> GatewayError:
    return GatewayError(
        507, "insufficient_storage", "The gateway has no disk space left to receive this upload; retry later",
        retry_after=30,
    )  # fmt: skip


def spool_failed() -> GatewayError:
    return GatewayError(
        503, "upload_spool_failed", "The gateway could not store this upload; retry shortly", retry_after=5
    )


def spool_error(exc: OSError) -> GatewayError:
    """A spool write's failure as the client sees it (the path never named)."""
    return no_space() if exc.errno in (errno.ENOSPC, errno.EDQUOT) else spool_failed()


def malformed(why: str) -> GatewayError:
    return GatewayError(400, "invalid_multipart", f"malformed multipart body: {why}", close=True)


def write_all(fd: int, data: bytes, write: Callable[[int, memoryview], int] = os.write) -> None:
    """Write every byte (a short write is continued; a write of nothing is a failure)."""
    view = memoryview(data)
    while view:
        written = write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[written:]


class Spool:
    """A temporary file holding one upload (removed when the context ends, however it ends).

    Its descriptor is only written and closed under a lock, in worker threads: a request
    cancelled while a write is in flight (the client went away) leaves that thread running,
    and closing the descriptor under it would let a later ``open`` reuse the number and receive
    the rest of the write. The lock makes the close wait for that write (in a thread, never
    on the event loop).
    """

    def __init__(self, directory: Path | None, write: Callable[[int, bytes], None] = write_all) -> None:
        self.directory = directory
        self.path = ""
        self.size = 0
        self._fd = -1
        self._write = write  # tests inject failures here
        self._lock = threading.Lock()

    async def __aenter__(self) -> Self:
        made = asyncio.ensure_future(
            asyncio.to_thread(tempfile.mkstemp, prefix="odock-upload-", dir=self.directory)
        )
        try:
            self._fd, self.path = await asyncio.shield(made)
        except asyncio.CancelledError:
            made.add_done_callback(_discard_made)  # the file may still be made: removed when it is
            raise
        except OSError as exc:
            raise spool_error(exc) from None
        return self

    def _write_locked(self, data: bytes) -> None:
        with self._lock:
            if self._fd < 0:
                raise OSError(errno.EBADF, "the spool is closed")
            self._write(self._fd, data)

    async def write(self, data: bytes) -> None:
        if not data:
            return
        try:
            await asyncio.to_thread(self._write_locked, data)
        except OSError as exc:
            raise spool_error(exc) from None
        self.size += len(data)

    def _close_unlocked(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def _close(self) -> None:
        with self._lock:
            self._close_unlocked()

    async def finish(self) -> None:
        """Done writing (the descriptor closed; the file stays until the context ends)."""
        try:
            await asyncio.to_thread(self._close)
        except OSError as exc:
            raise spool_error(exc) from None

    def _discard_unlocked(self) -> None:
        with contextlib.suppress(OSError):
            self._close_unlocked()
        if self.path:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def _discard(self) -> None:
        with self._lock:
            self._discard_unlocked()

    async def __aexit__(self, *exc: object) -> None:
        # No await here (this also runs in a cancelled task): at once when no write holds the lock
        # (two quick system calls), else in a thread once that write is done.
        if self._lock.acquire(blocking=False):
            try:
                self._discard_unlocked()
            finally:
                self._lock.release()
        else:
            asyncio.get_running_loop().run_in_executor(None, self._discard)


def _discard_made(made: asyncio.Future[tuple[int, str]]) -> None:
    """A spool file made for a request that was cancelled meanwhile: closed and removed."""
    if made.cancelled() or made.exception() is not None:
        return
    fd, path = made.result()
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(path)


@dataclass(slots=True)
class FilePart:
    filename: str = "file"
    content_type: str = "application/octet-stream"
    size: int = 0


@dataclass(slots=True)
class Form:
    """The form's fields (name -> value; the first of each name) and its spooled file part."""

    fields: dict[str, str] = field(default_factory=dict)
    file: FilePart | None = None


async def receive_form(
    request: web.Request, spool: Spool, timeouts: Timeouts, limit: Callable[[Form], int]
) -> Form:
    """Read the multipart form, the ``file`` part into ``spool``; ``limit(form)`` bounds its size
    (asked again as fields arrive: a ``purpose`` before the file lowers it at once)."""
    if not request.content_type.startswith("multipart/form-data"):
        raise GatewayError(
            400, "invalid_multipart", "The upload must be a multipart/form-data form with a 'file' part", param="file"
        )
    paced = _Paced(timeouts)
    form = Form()
    try:
        reader = await request.multipart()
        parts = 0
        while True:
            part = await paced(reader.next())
            if part is None:
                break
            parts += 1
            if parts > MAX_PARTS:
                raise malformed(f"more than {MAX_PARTS} parts")
            if not isinstance(part, BodyPartReader):
                raise malformed("nested multipart parts are not accepted")
            name = part.name or ""
            if name == "file" and part.filename is not None:
                if form.file is not None:
                    raise malformed("more than one 'file' part")
                form.file = _file_part(part)
                buf = bytearray()
                while chunk := await paced(part.read_chunk(READ_BYTES)):
                    form.file.size += len(chunk)
                    if form.file.size > limit(form):
                        raise too_large(limit(form))
                    buf += chunk
                    if len(buf) >= WRITE_BYTES:
                        await spool.write(bytes(buf))
                        buf.clear()
                await spool.write(bytes(buf))
                continue
            value = bytearray()
            while chunk := await paced(part.read_chunk(MAX_FIELD_BYTES)):
                value += chunk
                if len(value) > MAX_FIELD_BYTES:
                    raise GatewayError(
                        400, "invalid_multipart", f"form field {name[:64]!r} is longer than {MAX_FIELD_BYTES} bytes",
                        param=name[:64] or None,
                    )  # fmt: skip
            if name and name not in form.fields:
                form.fields[name] = value.decode("utf-8", "replace")
            if form.file is not None and form.file.size > limit(form):
                raise too_large(limit(form))
    except (ValueError, AssertionError, LookupError, HttpProcessingError, RequestPayloadError, ConnectionError):
        raise malformed("the form could not be parsed") from None
    await spool.finish()
    if form.file is None:
        raise GatewayError(400, "missing_file", "The form has no 'file' part (the file to upload)", param="file")
    return form


_T = TypeVar("_T")


class _Paced:
    """Awaits on the client's body under the pacing rules (``data_plane.body``: rate, idle, total)."""

    def __init__(self, timeouts: Timeouts) -> None:
        self.loop = asyncio.get_running_loop()
        self.pace = BodyPace.start(timeouts, self.loop.time(), 0)
        self.received = 0

    async def __call__(self, step: Awaitable[_T]) -> _T:
        task = asyncio.ensure_future(step)
        try:
            while True:
                wait = self.pace.wait(self.loop.time(), self.received)  # raises the 408 when too slow
                done, _ = await asyncio.wait((task,), timeout=wait)
                if done:
                    result = task.result()
                    if isinstance(result, (bytes, bytearray)):
                        self.received += len(result)
                    return result
        finally:
            if not task.done():
                task.cancel()


def _file_part(part: BodyPartReader) -> FilePart:
    filename = "".join(c for c in (part.filename or "") if c.isprintable() and c not in '"\\\r\n')
    content_type = part.headers.get("Content-Type", "").strip()
    if not _MEDIA_TYPE.fullmatch(content_type):
        content_type = "application/octet-stream"
    return FilePart(filename[:MAX_FILENAME] or "file", content_type[:200])


class ChainBody:
    """Byte strings and file pieces sent one after another as one request body."""

    __slots__ = ("_parts",)

    def __init__(self, *parts: BytesBody | FileBody) -> None:
        self._parts = parts

    @property
    def length(self) -> int:
        return sum(p.length for p in self._parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        for part in self._parts:
            async for chunk in part.chunks():
                yield chunk


def upstream_form(fields: list[tuple[str, str]], file: FilePart, path: str, size: int) -> tuple[str, ChainBody]:
    """The upstream request's Content-Type and body: ``fields``, then the file (``size`` bytes at ``path``)."""
    boundary = "odock-" + secrets.token_hex(16)
    head = bytearray()
    for name, value in fields:
        head += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        head += value.encode("utf-8") + b"\r\n"
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file.filename}"\r\n'
        f"Content-Type: {file.content_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    body = ChainBody(BytesBody(bytes(head)), FileBody(path, 0, size), BytesBody(tail))
    return f"multipart/form-data; boundary={boundary}", body
