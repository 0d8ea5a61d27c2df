"""Outside-in audit of issue 11 §3 (hostile or broken upstreams) and §2's mid-stream stall.

A real control plane and data plane; the upstream is a raw socket (``raw_upstream``) that says
what a hostile or broken provider would. Every answer is read raw from the gateway's socket,
so the provider key is looked for in everything a client gets: status line, header names and
values, chunk framing, trailers, and the body once de-chunked and decoded as a client would.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from urllib.parse import unquote

import pytest
import pytest_asyncio

from data_plane.scrub import MARKER
from tests.data_plane.helpers import CHAT_MODEL, NativeCall, chat_call
from tests.support.dataplane import DataPlaneProcess, start_data_plane
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned, Provisioner, provision_org
from tests.system.audit.raw_upstream import FAMILIES, RawUpstream, chunk, json_answer, sse_head

MODEL_TIMEOUT_S = 1.0
TOTAL_S = 4.0  # ODOCK_REQUEST_TOTAL_SECONDS of this module's data plane
MAX_EVENT = 4096  # ODOCK_MAX_SSE_EVENT_BYTES of this module's data plane


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def raw() -> AsyncIterator[RawUpstream]:
    async with RawUpstream() as upstream:
        yield upstream


@pytest.fixture(autouse=True)
def _fresh_raw(raw: RawUpstream) -> None:
    raw.reset()


@pytest.fixture(scope="module")
def rdp(cp: ControlPlaneProcess) -> Iterator[DataPlaneProcess]:
    """A data plane with a short total request time and a small SSE event bound."""
    proc = start_data_plane(cp.address, cp.node_token, cp.pepper, extra_env={
        "ODOCK_REQUEST_TOTAL_SECONDS": str(TOTAL_S),
        "ODOCK_MAX_SSE_EVENT_BYTES": str(MAX_EVENT),
    })  # fmt: skip
    try:
        proc.wait_connected()
        yield proc
    finally:
        proc.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def rorg(cp: ControlPlaneProcess, raw: RawUpstream) -> Provisioned:
    """An org whose models (1 s timeout) are on the raw upstream."""
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        return await provision_org(admin, raw, timeout_s=MODEL_TIMEOUT_S)


@dataclass
class Seen:
    """What a client got: the raw bytes, and the parts a client library would decode."""

    raw: bytes
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes  # de-chunked
    trailers: bytes
    complete: bool  # a Content-Length body in full, or the terminating chunk arrived

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def texts(self) -> list[str]:
        """Everything as a client may decode it: raw, JSON-decoded strings, percent-decoded."""
        out = [self.raw.decode("latin-1"), self.body.decode("latin-1"), unquote(self.body.decode("latin-1"))]
        for piece in re.split(rb"\n|\r", self.body):
            text = piece.removeprefix(b"data:").strip()
            try:
                out.append(json.dumps(json.loads(text), ensure_ascii=False))
            except ValueError:
                pass
        for coded in (self.body,):
            for decode in (gzip.decompress, zlib.decompress):
                try:
                    out.append(decode(coded).decode("latin-1"))
                except (OSError, zlib.error, EOFError):
                    pass
        return out

    def leaks(self, key: str) -> bool:
        return any(key in text for text in self.texts())


async def call(dp: DataPlaneProcess, c: NativeCall, *, timeout: float = 15.0) -> Seen:
    """One request on a fresh connection (Connection: close), read to the end."""
    host, port = str(dp.url).rstrip("/").removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = f"POST {c.path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Length: {len(c.body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in c.headers.items())
    writer.write(head.encode() + b"\r\n" + c.body)
    raw = b""
    try:
        async with asyncio.timeout(timeout):
            while data := await reader.read(65536):
                raw += data
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    return parse(raw)


def parse(raw: bytes) -> Seen:
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    _, status, reason = (lines[0].split(" ", 2) + [""])[:3]
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    names = {k.lower(): v for k, v in headers}
    body, trailers, complete = b"", b"", False
    if names.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line, sep, rest = rest.partition(b"\r\n")
            if not sep:
                break
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                trailers, complete = rest, True
                break
            body += rest[:size]
            rest = rest[size + 2 :]
    else:
        length = int(names.get("content-length", "-1"))
        body = rest if length < 0 else rest[:length]
        complete = length < 0 or len(rest) >= length
    return Seen(raw, int(status), reason, headers, body, trailers, complete)


def error_code(family: str, payload: dict[str, object]) -> str:
    err = payload["error"]
    assert isinstance(err, dict)
    if family == "gemini":
        return str(err["details"][0]["reason"])
    return str(err["code"])


def chat(family: str, org: Provisioned, *, stream: bool = False) -> NativeCall:
    return chat_call(family, CHAT_MODEL[family], stream=stream, key=org.key)


# Item (the known hole): a compressed answer would carry the key past the scrubber.


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd", "identity, gzip"])
async def test_a_compressed_error_body_is_refused_not_relayed(
    rdp: DataPlaneProcess, rorg: Provisioned, raw: RawUpstream, family: str, coding: str
) -> None:
    async def script(key: str, w: asyncio.StreamWriter) -> bool:
        body = gzip.compress(json.dumps({"error": {"message": f"bad key {key}"}}).encode())
        w.write(
            f"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Encoding: {coding}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        return True

    raw.script = script
    seen = await call(rdp, chat(family, rorg))
    assert not seen.leaks(raw.secret(family))
    assert seen.status == 502, seen.raw[:300]
    assert error_code(family, json.loads(seen.body)) == "upstream_bad_encoding"
    assert seen.header("content-encoding") is None


@pytest.mark.parametrize("family", FAMILIES)
async def test_a_compressed_stream_is_refused_before_any_byte(
    rdp: DataPlaneProcess, rorg: Provisioned, raw: RawUpstream, family: str
) -> None:
    async def script(key: str, w: asyncio.StreamWriter) -> bool:
        z = zlib.compressobj(wbits=31)  # gzip framing, streamed
        w.write(sse_head("Content-Encoding: gzip\r\n"))
        for event in (b'data: {"n": 1}\n\n', f'data: {{"echo": "{key}"}}\n\n'.encode()):
            w.write(chunk(z.compress(event) + z.flush(zlib.Z_SYNC_FLUSH)))
        w.write(chunk(z.flush()) + b"0\r\n\r\n")
        return True

    raw.script = script
    seen = await call(rdp, chat(family, rorg, stream=True))
    assert not seen.leaks(raw.secret(family))
    assert seen.status == 502, seen.raw[:300]
    assert error_code(family, json.loads(seen.body)) == "upstream_bad_encoding"


@pytest.mark.parametrize("family", ["openai", "gemini"])
async def test_a_transfer_coding_other_than_chunked_is_refused(
    rdp: DataPlaneProcess, rorg: Provisioned, raw: RawUpstream, family: str
) -> None:
    async def script(key: str, w: asyncio.StreamWriter) -> bool:
        body = gzip.compress(f'{{"error": "{key}"}}'.encode())
        w.write(
            b"HTTP/1.1 401 X\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        )
        w.write(chunk(body) + b"0\r\n\r\n")
        return True

    raw.script = script
    seen = await call(rdp, chat(family, rorg))
    assert not seen.leaks(raw.secret(family))
    assert seen.status == 502 and error_code(family, json.loads(seen.body)) == "upstream_bad_encoding"


# Item: the key echoed anywhere in an answer never reaches the client.


def _escaped_json(key: str) -> str:
    """Every character of ``key`` as a JSON unicode escape, lower-case hex."""
    return "".join(f"\\u{ord(c):04x}" for c in key)


ECHOES: dict[str, Callable[[str], tuple[int, str, str, str]]] = {
    # (status, reason, extra header lines, body) built from the key
    "location": lambda k: (401, "X", f"Location: https://e.invalid/?key={k}\r\n", "{}"),
    "link": lambda k: (401, "X", f"Link: <https://e.invalid/{k}>; rel=next\r\n", "{}"),
    "www-authenticate": lambda k: (401, "X", f'WWW-Authenticate: Bearer error="{k}"\r\n', "{}"),
    "set-cookie": lambda k: (200, "OK", f"Set-Cookie: s={k}; Path=/\r\n", "{}"),
    "header-name": lambda k: (401, "X", f"X-{k}: 1\r\n", "{}"),
    "reason": lambda k: (401, f"Bad key {k}", "", "{}"),
    "percent-lower-location": lambda k: (
        401,
        "X",
        "Location: https://e.invalid/?key=" + "".join(f"%{ord(c):02x}" for c in k) + "\r\n",
        "{}",
    ),
    "json-unicode-escape": lambda k: (401, "X", "", f'{{"error": {{"message": "{_escaped_json(k)}"}}}}'),
    "json-partial-escape": lambda k: (401, "X", "", f'{{"error": {{"message": "\\u0073{k[1:]}"}}}}'),
    "percent-lower-body": lambda k: (401, "X", "", json.dumps({"u": "".join(f"%{ord(c):02x}" for c in k)})),
    "percent-mixed-body": lambda k: (401, "X", "", json.dumps({"u": k[:2] + "%2d" + k[3:]})),
    "key-query": lambda k: (400, "X", "", json.dumps({"u": f"https://g.invalid/v1beta?key={k}&alt=sse"})),
    "header-forms": lambda k: (400, "X", "", json.dumps({"m": f"x-goog-api-key: {k}; x-api-key: {k}"})),
    "prefix-of-longer": lambda k: (400, "X", "", json.dumps({"m": f"{k}EXTRA{k}{k}"})),
    "3xx-body": lambda k: (302, "Found", f"Location: https://e.invalid/{k}\r\n", json.dumps({"m": k})),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("where", list(ECHOES))
async def test_a_key_echoed_in_an_answer_never_reaches_the_client(
    rdp: DataPlaneProcess, rorg: Provisioned, raw: RawUpstream, family: str, where: str
) -> None:
    async def script(key: str, w: asyncio.StreamWriter) -> bool:
        status, reason, extra, body = ECHOES[where](key)
        data = body.encode()
        w.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        return True

    raw.script = script
    seen = await call(rdp, chat(family, rorg))
    key = raw.secret(family)
    assert not seen.leaks(key), seen.texts()
    assert key[6:] not in seen.raw.decode("latin-1")  # not even most of it
    if where == "3xx-body":
        assert seen.status == 502 and error_code(family, json.loads(seen.body)) == "upstream_redirect"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("where", ["trailer", "informational", "one-byte-chunks", "one-byte-escaped"])
async def test_a_key_in_the_framing_never_reaches_the_client(
    rdp: DataPlaneProcess, rorg: Provisioned, raw: RawUpstream, family: str, where: str
) -> None:
    async def script(key: str, w: asyncio.StreamWriter) -> bool:
        if where == "informational":
            w.write(f"HTTP/1.1 103 {key}\r\nLink: <{key}>\r\nX-{key}: 1\r\n\r\n".encode())
            await w.drain()
            await asyncio.sleep(0.05)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n")
        w.write(b"Trailer: X-Echo\r\n\r\n" if where == "trailer" else b"\r\n")
        text = f'{{"echo": "{key}", "esc": "{_escaped_json(key)}"}}'.encode()
        if where.startswith("one-byte"):
            for i in range(len(text)):
                w.write(chunk(text[i : i + 1]))
                await w.drain()
                await asyncio.sleep(0.001)
        else:
            w.write(chunk(text))
        w.write(f"0\r\nX-Echo: {key}\r\n\r\n".encode() if where == "trailer" else b"0\r\n\r\n")
        return True

    raw.script = script
    seen = await call(rdp, chat(family, rorg))
    assert seen.status == 200 and seen.complete, seen.raw[:400]
    assert not seen.leaks(raw.secret(family)), seen.texts()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("split", ["one-byte", "event"])
async def test_a_key_in_a_stream_never_reaches_the_client(
    rdp: DataPlaneProcess, rorg: Provisioned, raw: RawUpstream, family: str, split: str
) -> None:
    async def script(key: str, w: asyncio.StreamWriter) -> bool:
        w.write(sse_head())
        events = [b'data: {"n": 1}\n\n', f'data: {{"a": "{key}", "b": "{_escaped_json(key)}"}}\n\n'.encode()]
        for event in events:
            pieces = [event[i : i + 1] for i in range(len(event))] if split == "one-byte" else [event]
            for piece in pieces:
                w.write(chunk(piece))
                await w.drain()
                await asyncio.sleep(0.001 if split == "one-byte" else 0)
        w.write(b"0\r\n\r\n")
        return True

    raw.script = script
    seen = await call(rdp, chat(family, rorg, stream=True))
    assert seen.status == 200 and seen.complete, seen.raw[:400]
    assert not seen.leaks(raw.secret(family)), seen.texts()
    assert seen.body.count(MARKER) == 2


# Item: SSE framing and its bound.


def _events(body: bytes) -> list[bytes]:
    return [e for e in re.split(rb"\r\n\r\n|\n\n|\r\r", body) if e.strip()]


def _last_error(family: str, body: bytes) -> str:
    event = _events(body)[-1].decode()
    return error_code(family, json.loads(event.split("data: ", 1)[1]))


async def _write_slowly(w: asyncio.StreamWriter, data: bytes, piece: int) -> None:
    for i in range(0, len(data), piece):
        w.write(chunk(data[i : i + piece]))
        await w.drain()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("terminator", [b"\n\n", b"\r\n\r\n", b"\r\r"])
async def test_events_of_exactly_the_bound_with_any_terminator_are_relayed_whole(
    rdp: DataPlaneProcess, rorg: Provisioned, raw: RawUpstream, family: str, terminator: bytes
) -> None:
    """Two events whose bytes before the blank line are exactly the bound, fed 1000 bytes (then 1) at a time."""
    event = b"data: " + b"x" * (MAX_EVENT - 6)

    async def script(key: str, w: asyncio.StreamWriter) -> bool:
        w.write(sse_head())
        for _ in range(2):
            await _write_slowly(w, event, 1000)
            await _write_slowly(w, terminator, 1)
        w.write(b"0\r\n\r\n")
        return True

    raw.script = script
    seen = await call(rdp, chat(family, rorg, stream=True))
    assert seen.status == 200 and seen.complete
    assert _events(seen.body) == [event, event], seen.body[-300:]


@pytest.mark.parametrize("family", ["openai", "anthropic"])
async def test_comment_lines_that_never_end_an_event_are_bounded(
    rdp: DataPlaneProcess, rorg: Provisioned, raw: RawUpstream, family: str
) -> None:
    async def script(key: str, w: asyncio.StreamWriter) -> bool:
        w.write(sse_head() + chunk(b'data: {"n": 1}\n\n'))
        for _ in range(400):  # 4.8 MB of ": keepalive\n" lines: no blank line, ever
            w.write(chunk(b": keepalive\n" * 1000))
            await w.drain()
        return False

    raw.script = script
    seen = await call(rdp, chat(family, rorg, stream=True))
    assert seen.status == 200 and seen.complete
    assert _last_error(family, seen.body) == "upstream_event_too_large"
    assert len(seen.body) < MAX_EVENT, len(seen.body)  # the comments were held and dropped, not relayed


@pytest.mark.parametrize("family", ["openai", "gemini"])
async def test_keepalive_comments_keep_a_slow_stream_alive_past_the_model_timeout(
    rdp: DataPlaneProcess, rorg: Provisioned, raw: RawUpstream, family: str
) -> None:
    async def script(key: str, w: asyncio.StreamWriter) -> bool:
        w.write(sse_head() + chunk(b'data: {"n": 1}\n\n'))
        for _ in range(5):  # 2.5 s of silence but for comments, the model's timeout being 1 s
            await asyncio.sleep(0.5)
            w.write(chunk(b": keepalive\n\n"))
            await w.drain()
        w.write(chunk(b'data: {"n": 2}\n\n') + b"0\r\n\r\n")
        return True

    raw.script = script
    seen = await call(rdp, chat(family, rorg, stream=True))
    assert seen.status == 200 and seen.complete
    assert _events(seen.body)[-1] == b'data: {"n": 2}', seen.body


@pytest.mark.parametrize("family", ["openai", "anthropic"])
async def test_many_tiny_events_are_relayed_in_linear_time(
    rdp: DataPlaneProcess, rorg: Provisioned, raw: RawUpstream, family: str
) -> None:
    count = 100_000

    async def script(key: str, w: asyncio.StreamWriter) -> bool:
        w.write(sse_head())
        for _ in range(count // 1000):
            w.write(chunk(b"data: x\n\n" * 999 + b"data: x\r\n\r"))  # a boundary cut across chunks too
            w.write(chunk(b"\n"))
            await w.drain()
        w.write(b"0\r\n\r\n")
        return True

    raw.script = script
    start = time.monotonic()
    seen = await call(rdp, chat(family, rorg, stream=True))
    assert seen.status == 200 and seen.complete, seen.body[-200:]
    assert len(_events(seen.body)) == count
    assert time.monotonic() - start < TOTAL_S


# Item: stalls, mid-stream and after the headers, bounded by the model's timeout and the total.


@pytest.mark.parametrize("family", ["openai", "gemini"])
async def test_one_byte_just_inside_the_model_timeout_forever_is_cut_by_the_total_time(
    rdp: DataPlaneProcess, rorg: Provisioned, raw: RawUpstream, family: str
) -> None:
    async def script(key: str, w: asyncio.StreamWriter) -> bool:
        w.write(sse_head() + chunk(b'data: {"n": 1}\n\n'))
        while True:
            await asyncio.sleep(MODEL_TIMEOUT_S * 0.6)
            w.write(chunk(b"x"))
            await w.drain()

    raw.script = script
    start = time.monotonic()
    seen = await call(rdp, chat(family, rorg, stream=True), timeout=30)
    elapsed = time.monotonic() - start
    assert seen.status == 200 and seen.complete
    assert _last_error(family, seen.body) == "upstream_timeout"
    assert TOTAL_S * 0.9 <= elapsed < TOTAL_S + 3, elapsed


async def test_a_gemini_json_stream_that_stalls_is_aborted_within_the_model_timeout(
    rdp: DataPlaneProcess, rorg: Provisioned, raw: RawUpstream
) -> None:
    async def script(key: str, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        w.write(chunk(b'[{"candidates": []}\n'))
        await w.drain()
        await asyncio.sleep(30)
        return False

    raw.script = script
    c = chat("gemini", rorg, stream=True)
    c = NativeCall(c.path.replace("?alt=sse", ""), c.body, c.headers)
    start = time.monotonic()
    seen = await call(rdp, c, timeout=20)
    elapsed = time.monotonic() - start
    assert seen.status == 200 and not seen.complete, seen.raw[
        -200:
    ]  # no final chunk: not passed off as whole
    assert MODEL_TIMEOUT_S * 0.9 <= elapsed < MODEL_TIMEOUT_S + 3, elapsed


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("sent", [0, 5])
async def test_a_plain_answer_that_stalls_after_its_headers_is_a_504(
    rdp: DataPlaneProcess, rorg: Provisioned, raw: RawUpstream, family: str, sent: int
) -> None:
    """A Content-Length promised and not sent (a HEAD-like empty body), or half sent."""

    async def script(key: str, w: asyncio.StreamWriter) -> bool:
        w.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n" + b"{" * sent
        )
        await w.drain()
        await asyncio.sleep(30)
        return False

    raw.script = script
    start = time.monotonic()
    seen = await call(rdp, chat(family, rorg), timeout=20)
    elapsed = time.monotonic() - start
    assert seen.status == 504 and error_code(family, json.loads(seen.body)) == "upstream_timeout"
    assert elapsed < MODEL_TIMEOUT_S + 3, elapsed


# Item: pool hygiene: nothing of one answer reaches the next request.


async def _two(dp: DataPlaneProcess, org: Provisioned, family: str) -> tuple[Seen, Seen]:
    return await call(dp, chat(family, org)), await call(dp, chat(family, org))


@pytest.mark.parametrize("family", ["openai", "anthropic"])
async def test_an_answer_with_connection_close_is_not_reused(
    rdp: DataPlaneProcess, rorg: Provisioned, raw: RawUpstream, family: str
) -> None:
    async def script(key: str, w: asyncio.StreamWriter) -> bool:
        w.write(json_answer(200, {"n": raw.requests}, extra="Connection: close\r\n"))
        return True  # but the socket is kept open: the gateway must not send on it again

    raw.script = script
    first, second = await _two(rdp, rorg, family)
    assert (first.status, second.status) == (200, 200)
    assert json.loads(first.body) == {"n": 1} and json.loads(second.body) == {"n": 2}
    assert raw.connections == 2


@pytest.mark.parametrize("family", ["openai", "gemini"])
@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(
            lambda k: b'{"ok": 1}HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{"smuggled":1}',
            id="over-length",
        ),
        pytest.param(lambda k: f'{{"ok": 1}}{{"key": "{k}"}}'.encode(), id="over-length-key"),
    ],
)
async def test_bytes_past_the_content_length_never_reach_the_next_request(
    rdp: DataPlaneProcess, rorg: Provisioned, raw: RawUpstream, family: str, extra: Callable[[str], bytes]
) -> None:
    async def script(key: str, w: asyncio.StreamWriter) -> bool:
        if raw.requests == 1:
            w.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n" + extra(key)
            )
        else:
            w.write(json_answer(200, {"n": raw.requests}))
        return True

    raw.script = script
    first, second = await _two(rdp, rorg, family)
    assert first.status == 200 and first.body == b'{"ok": 1}'
    assert second.status == 200 and json.loads(second.body) == {"n": 2}, second.body
    assert not first.leaks(raw.secret(family)) and not second.leaks(raw.secret(family))


@pytest.mark.parametrize("family", ["openai", "vllm"])
async def test_both_content_length_and_transfer_encoding_is_not_relayed_desynchronised(
    rdp: DataPlaneProcess, rorg: Provisioned, raw: RawUpstream, family: str
) -> None:
    async def script(key: str, w: asyncio.StreamWriter) -> bool:
        if raw.requests == 1:
            w.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 3\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + chunk(f'{{"k": "{key}"}}'.encode()) + b"0\r\n\r\n"
            )
        else:
            w.write(json_answer(200, {"n": raw.requests}))
        return True

    raw.script = script
    first, second = await _two(rdp, rorg, family)
    assert first.status in (200, 502), first.raw[:300]
    assert not first.leaks(raw.secret(family))
    assert second.status == 200 and json.loads(second.body) == {"n": 2}, second.raw[:300]


@pytest.mark.parametrize("family", ["openai", "anthropic"])
async def test_a_body_sent_with_a_204_never_reaches_the_next_request(
    rdp: DataPlaneProcess, rorg: Provisioned, raw: RawUpstream, family: str
) -> None:
    async def script(key: str, w: asyncio.StreamWriter) -> bool:
        if raw.requests == 1:
            w.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n" + b'{"ok": 1}')
        else:
            w.write(json_answer(200, {"n": raw.requests}))
        return True

    raw.script = script
    first, second = await _two(rdp, rorg, family)
    assert first.status == 204 and first.body == b"", first.raw[:300]
    assert second.status == 200 and json.loads(second.body) == {"n": 2}, second.raw[:300]


@pytest.mark.parametrize("form", ["literal", "json-escaped", "percent-lower"])
async def test_a_key_split_across_writes_of_a_gemini_json_stream_never_reaches_the_client(
    rdp: DataPlaneProcess, rorg: Provisioned, raw: RawUpstream, form: str
) -> None:
    async def script(key: str, w: asyncio.StreamWriter) -> bool:
        shown = {
            "literal": key,
            "json-escaped": key[:5] + _escaped_json(key[5:]),
            "percent-lower": "".join(f"%{ord(c):02x}" for c in key),
        }[form]
        text = f'[{{"candidates": [{{"content": {{"parts": [{{"text": "{shown}"}}]}}}}]}}]'.encode()
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(text), 3):  # separate reads: the relay sees them one by one
            w.write(chunk(text[i : i + 3]))
            await w.drain()
            await asyncio.sleep(0.002)
        w.write(b"0\r\n\r\n")
        return True

    raw.script = script
    c = chat("gemini", rorg, stream=True)
    seen = await call(rdp, NativeCall(c.path.replace("?alt=sse", ""), c.body, c.headers))
    assert seen.status == 200 and seen.complete, seen.raw[-300:]
    assert not seen.leaks(raw.secret("gemini")), seen.texts()
    assert json.loads(seen.body)[0]["candidates"][0]["content"]["parts"][0]["text"] == MARKER.decode()


@pytest.mark.parametrize("head", ["Content-Encoding: identity\r\n", "Content-Encoding: Identity\r\n", "103"])
async def test_identity_and_a_1xx_coding_are_not_refused(
    rdp: DataPlaneProcess, rorg: Provisioned, raw: RawUpstream, head: str
) -> None:
    """Only the real answer's codings count: identity (any case) passes, and so does a 103 that named gzip."""

    async def script(key: str, w: asyncio.StreamWriter) -> bool:
        if head == "103":
            w.write(b"HTTP/1.1 103 Early Hints\r\nContent-Encoding: gzip\r\n\r\n")
            w.write(json_answer(200, {"n": 1}))
        else:
            w.write(json_answer(200, {"n": 1}, extra=head))
        return True

    raw.script = script
    seen = await call(rdp, chat("openai", rorg))
    assert seen.status == 200 and json.loads(seen.body) == {"n": 1}, seen.raw[:300]
