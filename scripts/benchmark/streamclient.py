"""A small raw-socket HTTP/1.1 client for streams: time to first byte, and many slow streams held open.

The timer starts just before the request is written and each arrival is stamped in
``data_received`` (``perf_counter_ns``), so the figures carry no client-library overhead
beyond one protocol callback.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

from scripts.benchmark.stats import percentile

_EVENT_MARK = b"data:"


def build_request(host: str, port: int, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
    """One POST request on a keep-alive connection, as wire bytes."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}"]  # fmt: skip
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class ResponseParser:
    """Incremental HTTP/1.1 response parser that stamps the first byte and the first SSE event."""

    started_ns: int = 0
    status: int = 0
    first_byte_ns: int = 0
    first_event_ns: int = 0
    done_ns: int = 0
    body_bytes: int = 0
    _buf: bytearray = field(default_factory=bytearray)
    _in_head: bool = True
    _chunked: bool = False
    _remaining: int = 0  # Content-Length bytes left, or bytes left in the current chunk
    _state: str = "size"  # chunked decoding: size, data, crlf, trailer
    _tail: bytes = b""  # last bytes of the body, to find an event mark split across reads

    @property
    def done(self) -> bool:
        return self.done_ns != 0

    def feed(self, data: bytes, now_ns: int) -> None:
        """Consume bytes that arrived at ``now_ns``."""
        if not self.first_byte_ns:
            self.first_byte_ns = now_ns
        self._buf += data
        if self._in_head and not self._parse_head(now_ns):
            return
        if self._chunked:
            self._parse_chunks(now_ns)
        else:
            take = min(self._remaining, len(self._buf))
            self._body(bytes(self._buf[:take]), now_ns)
            del self._buf[:take]
            self._remaining -= take
            if self._remaining == 0:
                self.done_ns = now_ns

    def _parse_head(self, now_ns: int) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(self._buf[:end]).split(b"\r\n")
        del self._buf[: end + 4]
        self.status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True
        self._in_head = False
        self._remaining = 0 if self._chunked else length
        if not self._chunked and length == 0:
            self.done_ns = now_ns
        return True

    def _parse_chunks(self, now_ns: int) -> None:
        buf = self._buf
        while True:
            if self._state == "data":
                take = min(self._remaining, len(buf))
                if take:
                    self._body(bytes(buf[:take]), now_ns)
                    del buf[:take]
                    self._remaining -= take
                if self._remaining:
                    return
                self._state = "crlf"
            if self._state == "crlf":
                if len(buf) < 2:
                    return
                del buf[:2]
                self._state = "size"
            if self._state == "size":
                line_end = buf.find(b"\r\n")
                if line_end < 0:
                    return
                size = int(bytes(buf[:line_end]).split(b";", 1)[0], 16)
                del buf[: line_end + 2]
                if size:
                    self._remaining = size
                    self._state = "data"
                    continue
                self._state = "trailer"
            # Last chunk seen: the response ends at an empty line (after any trailers).
            if bytes(buf[:2]) != b"\r\n" and buf.find(b"\r\n\r\n") < 0:
                return
            buf.clear()
            self.done_ns = now_ns
            return

    def _body(self, piece: bytes, now_ns: int) -> None:
        if not piece:
            return
        self.body_bytes += len(piece)
        if not self.first_event_ns and _EVENT_MARK in self._tail + piece:
            self.first_event_ns = now_ns
        self._tail = piece[-(len(_EVENT_MARK) - 1) :]


class StreamProtocol(asyncio.Protocol):
    """One client connection issuing one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser()
        self.first_event: asyncio.Future[None] | None = None
        self.finished: asyncio.Future[ResponseParser] | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for fut in (self.first_event, self.finished):
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionError("connection closed"))
                fut.exception()  # retrieved: nobody may be waiting any more
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, wire: bytes) -> None:
        """Write one request and start its clock."""
        loop = asyncio.get_running_loop()
        self.first_event = loop.create_future()
        self.finished = loop.create_future()
        self.parser = ResponseParser(started_ns=time.perf_counter_ns())
        assert self.transport is not None
        self.transport.write(wire)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        parser = self.parser
        parser.feed(data, now)
        if parser.first_event_ns and self.first_event is not None and not self.first_event.done():
            self.first_event.set_result(None)
        if parser.done and self.finished is not None and not self.finished.done():
            if self.first_event is not None and not self.first_event.done():
                self.first_event.set_result(None)
            self.finished.set_result(parser)


async def connect(host: str, port: int) -> StreamProtocol:
    """An open connection."""
    _, proto = await asyncio.get_running_loop().create_connection(StreamProtocol, host, port)
    return proto


@dataclass(frozen=True)
class TtfbResult:
    """Time-to-first-byte figures for sequential streamed requests on one connection (ms)."""

    count: int
    errors: int
    first_byte_p50: float
    first_byte_p99: float
    first_event_p50: float
    first_event_p99: float
    total_p50: float


async def measure_ttfb(host: str, port: int, wire: bytes, count: int, warmup: int = 20) -> TtfbResult:
    """Send ``warmup + count`` streamed requests one after another; time the last ``count``."""
    proto = await connect(host, port)
    first_byte: list[float] = []
    first_event: list[float] = []
    total: list[float] = []
    errors = 0
    try:
        for i in range(warmup + count):
            proto.send(wire)
            assert proto.finished is not None
            parser = await asyncio.wait_for(proto.finished, 30)
            if i < warmup:
                continue
            if parser.status != 200 or not parser.first_event_ns:
                errors += 1
                continue
            start = parser.started_ns
            first_byte.append((parser.first_byte_ns - start) / 1e6)
            first_event.append((parser.first_event_ns - start) / 1e6)
            total.append((parser.done_ns - start) / 1e6)
    finally:
        if proto.transport is not None:
            proto.transport.close()
    if not first_byte:
        raise RuntimeError(f"no successful streamed request ({errors} errors)")
    return TtfbResult(count=len(first_byte), errors=errors,
                      first_byte_p50=percentile(first_byte, 50), first_byte_p99=percentile(first_byte, 99),
                      first_event_p50=percentile(first_event, 50), first_event_p99=percentile(first_event, 99),
                      total_p50=percentile(total, 50))  # fmt: skip


class HeldStreams:
    """Many streamed requests open at once (for memory measurements); close them with ``close()``."""

    def __init__(self) -> None:
        self.protocols: list[StreamProtocol] = []
        self.failures: collections.Counter[str] = collections.Counter()  # why streams did not open

    async def open(self, host: str, port: int, wire: bytes, count: int, timeout: float = 60.0) -> int:
        """Open ``count`` streams and wait until each has delivered its first event; returns how many did."""

        async def one() -> StreamProtocol:
            proto = await connect(host, port)
            self.protocols.append(proto)
            proto.send(wire)
            assert proto.first_event is not None
            await proto.first_event
            return proto

        results = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count)),
                                                        return_exceptions=True), timeout)  # fmt: skip
        self.failures = collections.Counter(
            f"HTTP {r.parser.status}" if isinstance(r, StreamProtocol) else type(r).__name__
            for r in results
            if not (isinstance(r, StreamProtocol) and r.parser.status == 200)
        )
        return sum(1 for r in results if isinstance(r, StreamProtocol) and r.parser.status == 200)

    async def close(self) -> None:
        """Disconnect every stream (the proxy must cancel its upstream requests)."""
        for proto in self.protocols:
            if proto.transport is not None:
                proto.transport.close()
        for proto in self.protocols:
            await proto.lost
        self.protocols.clear()
