"""A fast fake LLM provider on raw asyncio (uvloop): ``asyncio.Protocol``, precomputed answers.

Answers ``POST .../chat/completions`` (JSON, or SSE when the body says ``"stream": true``),
``.../messages`` (Anthropic, JSON or SSE) and ``.../embeddings``; anything else is a 404.
Per-request knobs, as request headers (the gateway forwards them unchanged):

- ``x-fake-delay-ms``: wait this long before answering (a slow model's first byte);
- ``x-fake-interval-ms``: wait this long between SSE events (a slow stream);
- ``x-fake-tokens``: how many content deltas a stream carries (default 20).

Run: ``python -m scripts.benchmark.upstream --port 0 --ready-file PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import cast

from scripts.benchmark.responses import DEFAULT_EVENTS, Answer, answers

MAX_HEAD = 64 * 1024
_OVERLAP = len(b'"stream": true') - 1
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
    b"x-request-id: req_fakeupstream0001\r\nTransfer-Encoding: chunked\r\n\r\n"
)
_NOT_FOUND = b'{"error":{"message":"Unknown endpoint","type":"invalid_request_error","code":"not_found"}}'


def _json_response(body: bytes, status: bytes = b"200 OK") -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\nContent-Type: application/json\r\nx-request-id: req_fakeupstream0001\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Catalog:
    """Precomputed wire bytes for every answer, and streams of other lengths built on demand."""

    def __init__(self) -> None:
        self._by_tokens: dict[int, dict[tuple[str, bool], Answer]] = {DEFAULT_EVENTS: answers()}
        self.json_wire: dict[str, bytes] = {
            kind: _json_response(a.body) for (kind, streamed), a in self._by_tokens[DEFAULT_EVENTS].items()
            if not streamed
        }  # fmt: skip
        self.not_found = _json_response(_NOT_FOUND, b"404 Not Found")
        self._chunks: dict[tuple[str, int], tuple[bytes, ...]] = {}

    def stream_chunks(self, kind: str, tokens: int) -> tuple[bytes, ...]:
        """The SSE events of ``kind`` as HTTP chunks (the last one carries the terminator)."""
        cached = self._chunks.get((kind, tokens))
        if cached is not None:
            return cached
        table = self._by_tokens.get(tokens)
        if table is None:
            table = self._by_tokens[tokens] = answers(tokens)
        chunks = [_chunk(e) for e in table[(kind, True)].events]
        chunks[-1] += b"0\r\n\r\n"
        self._chunks[(kind, tokens)] = result = tuple(chunks)
        return result


def _kind(path: bytes) -> str | None:
    path = path.split(b"?", 1)[0]
    if path.endswith(b"/chat/completions"):
        return "chat"
    if path.endswith(b"/messages"):
        return "messages"
    if path.endswith(b"/embeddings"):
        return "embeddings"
    return None


def _wants_stream(body: bytes) -> bool:
    # Cheap on purpose: the fake must never be the bottleneck, and the bench sends compact JSON.
    return b'"stream":true' in body or b'"stream": true' in body


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: parse a request, answer it, repeat."""

    def __init__(self, catalog: Catalog, stats: dict[str, int]) -> None:
        self.catalog = catalog
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.head: tuple[bytes, dict[bytes, bytes]] | None = None
        self.need = 0  # body bytes still expected (Content-Length)
        self.chunked = False
        self.body = bytearray()
        self.stream_seen = False
        self.busy = False
        self.close_after = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._process()

    def _process(self) -> None:
        while not self.busy and self.transport is not None:
            if self.head is None and not self._parse_head():
                return
            body = self._take_body()
            if body is None:
                return
            assert self.head is not None
            path, headers = self.head
            self.head = None
            self._answer(path, headers, body)

    def _parse_head(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEAD and self.transport is not None:
                self.transport.close()
            return False
        lines = bytes(self.buf[:end]).split(b"\r\n")
        del self.buf[: end + 4]
        parts = lines[0].split(b" ")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        self.head = (parts[1] if len(parts) > 1 else b"/", headers)
        self.chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        self.need = int(headers.get(b"content-length", b"0") or b"0")
        self.close_after = headers.get(b"connection", b"").lower() == b"close"
        self.body = bytearray()
        self.stream_seen = False
        return True

    def _take_body(self) -> bytes | None:
        if not self.chunked:
            # Only whether the body asks for a stream matters: scan it as it arrives and drop it,
            # so a 1 MB body costs one pass and no copies (keeping a marker's worth of overlap).
            take = min(self.need, len(self.buf))
            if take:
                buf = self.buf
                if not self.stream_seen and (
                    _wants_stream(bytes(self.body) + bytes(buf[: min(take, _OVERLAP)]))
                    or buf.find(b'"stream":true', 0, take) >= 0
                    or buf.find(b'"stream": true', 0, take) >= 0
                ):
                    self.stream_seen = True
                self.body = bytearray(buf[max(0, take - _OVERLAP) : take])
                del buf[:take]
                self.need -= take
            if self.need:
                return None
            return b'"stream":true' if self.stream_seen else b""
        while True:  # chunked: decode what has arrived; None until the last chunk
            line_end = self.buf.find(b"\r\n")
            if line_end < 0:
                return None
            size = int(bytes(self.buf[:line_end]).split(b";", 1)[0], 16)
            if size == 0:
                trailer_end = self.buf.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    return None
                del self.buf[: trailer_end + 4]
                return bytes(self.body)
            if len(self.buf) < line_end + 2 + size + 2:
                return None
            self.body += self.buf[line_end + 2 : line_end + 2 + size]
            del self.buf[: line_end + 2 + size + 2]

    def _answer(self, path: bytes, headers: dict[bytes, bytes], body: bytes) -> None:
        self.stats["requests"] += 1
        kind = _kind(path)
        delay = int(headers.get(b"x-fake-delay-ms", b"0")) / 1000
        if kind is None:
            self._later(delay, lambda: self._send_whole(self.catalog.not_found))
        elif kind != "embeddings" and _wants_stream(body):
            interval = int(headers.get(b"x-fake-interval-ms", b"0")) / 1000
            tokens = int(headers.get(b"x-fake-tokens", b"0")) or DEFAULT_EVENTS
            chunks = self.catalog.stream_chunks(kind, tokens)
            self._later(delay, lambda: self._stream(chunks, interval))
        else:
            wire = self.catalog.json_wire[kind]
            self._later(delay, lambda: self._send_whole(wire))

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        if delay <= 0:
            action()
            return
        self.busy = True
        self.timer = asyncio.get_running_loop().call_later(delay, action)

    def _send_whole(self, wire: bytes) -> None:
        self.timer = None
        if self.transport is None:
            return
        self.transport.write(wire)
        self._done()

    def _stream(self, chunks: tuple[bytes, ...], interval: float) -> None:
        self.timer = None
        transport = self.transport
        if transport is None:
            return
        transport.write(_SSE_HEAD + chunks[0])
        if interval <= 0 or len(chunks) == 1:
            for piece in chunks[1:]:  # one write per event, as a token-by-token provider does
                transport.write(piece)
            self._done()
            return
        self.busy = True
        self.timer = asyncio.get_running_loop().call_later(interval, self._stream_next, chunks, 1, interval)

    def _stream_next(self, chunks: tuple[bytes, ...], index: int, interval: float) -> None:
        self.timer = None
        if self.transport is None:
            return
        self.transport.write(chunks[index])
        if index + 1 >= len(chunks):
            self._done()
            return
        self.timer = asyncio.get_running_loop().call_later(
            interval, self._stream_next, chunks, index + 1, interval
        )

    def _done(self) -> None:
        self.busy = False
        if self.close_after and self.transport is not None:
            self.transport.close()
            return
        if self.buf:
            asyncio.get_running_loop().call_soon(self._process)


async def serve(host: str, port: int, ready_file: Path | None) -> None:
    """Serve until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    catalog = Catalog()
    stats = {"requests": 0}
    server = await loop.create_server(lambda: UpstreamProtocol(catalog, stats), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()
    if ready_file is not None:
        tmp = ready_file.with_name(ready_file.name + ".tmp")
        tmp.write_text(json.dumps({"http": f"{bound[0]}:{bound[1]}", "pid": os.getpid()}))
        os.replace(tmp, ready_file)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="bench-upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path, default=None)
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(serve(args.host, args.port, args.ready_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
