"""Hostile input: ambiguous JSON, huge names, path-escaping model names, slow clients; the node stays healthy."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from tests.data_plane.helpers import CHAT_MODEL, FAMILIES, assert_error, chat_call, send
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned, Provisioner

_MSG = b'"messages":[{"role":"user","content":"hi"}],"max_tokens":8'
DEEP = 200


def _bodies(model: str) -> dict[str, tuple[bytes, str]]:
    m = model.encode()
    return {
        "duplicate top-level model": (
            b'{"model":"' + m + b'","model":"claude",' + _MSG + b"}",
            "duplicate_key",
        ),
        "duplicate nested key": (
            b'{"model":"' + m + b'",' + _MSG + b',"metadata":{"a":1,"a":2}}',
            "duplicate_key",
        ),
        "NaN": (b'{"model":"' + m + b'",' + _MSG + b',"temperature":NaN}', "invalid_json"),
        "Infinity": (b'{"model":"' + m + b'",' + _MSG + b',"temperature":-Infinity}', "invalid_json"),
        "deep nesting": (
            b'{"model":"' + m + b'",' + _MSG + b',"x":' + b"[" * DEEP + b"]" * DEEP + b"}",
            "json_too_deep",
        ),
        "very deep nesting": (
            b'{"model":"' + m + b'","x":' + b"[" * 200_000 + b"]" * 200_000 + b"}",
            "json_too_deep",
        ),
        "invalid UTF-8": (b'{"model":"' + m + b'",' + _MSG + b',"user":"\xff\xfe"}', "invalid_json"),
        "not an object": (b'["model","' + m + b'"]', "invalid_json"),
        "model not a string": (b'{"model":["' + m + b'"],' + _MSG + b"}", "invalid_model"),
    }


@pytest.mark.parametrize("family", ["openai", "anthropic", "vllm"])
async def test_ambiguous_or_invalid_json_is_a_400_in_family_shape(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider, family: str
) -> None:
    call = chat_call(family, CHAT_MODEL[family], key=org.key)
    async with httpx.AsyncClient(base_url=dp.url, timeout=10) as client:
        for name, (body, code) in _bodies(CHAT_MODEL[family]).items():
            resp = await client.post(call.path, content=body, headers=call.headers)
            assert_error(family, resp, 400, code), name
        assert fake_provider.requests == [], "nothing ambiguous reached the provider"
        assert (await send(client, call)).status_code == 200


async def test_gemini_body_is_checked_too(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider
) -> None:
    call = chat_call("gemini", "gemini-flash", key=org.key)
    async with httpx.AsyncClient(base_url=dp.url, timeout=10) as client:
        for body in (b'{"contents":[],"contents":[]}', b'{"contents":[NaN]}', b'{"contents":"\xc3"}'):
            assert_error("gemini", await client.post(call.path, content=body, headers=call.headers), 400)
    assert fake_provider.requests == []


@pytest.mark.parametrize("family", FAMILIES)
async def test_huge_model_names_come_back_as_short_messages(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider, family: str
) -> None:
    async with httpx.AsyncClient(base_url=dp.url, timeout=30) as client:
        for size in (10 * 1024, 10 * 1024 * 1024):
            if family == "gemini" and size > 10 * 1024:
                continue  # a path that long is refused by the HTTP parser itself
            resp = await send(client, chat_call(family, "m" * size, key=org.key))
            if family == "gemini":
                assert resp.status_code in (400, 404, 414, 431), resp.status_code
            else:
                assert_error(family, resp, 404, "model_not_found")
            assert len(resp.content) < 2000
    assert fake_provider.requests == []


async def test_model_names_cannot_escape_their_path_slot(
    dp: DataPlaneProcess, cp: ControlPlaneProcess, org: Provisioned, fake_provider: FakeProvider
) -> None:
    # Names that look like path tricks but are legal model names get a safe slug of their own.
    tricky = {"..": "slug-dotdot", "%2e%2e%2f": "slug-encoded", "a:b": "slug-colon", "..%2Fx": "slug-enc2"}
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        for name, slug in tricky.items():
            await admin.create_model(
                org.org.id,
                name,
                "gemini",
                slug,
                fake_provider.base_url("gemini"),
                org.credentials["gemini"].name,
            )
    async with httpx.AsyncClient(base_url=dp.url, timeout=10) as client:
        for name, slug in tricky.items():
            quoted = "".join(c if c.isalnum() or c in "-_.:" else f"%{ord(c):02X}" for c in name)
            call = chat_call("gemini", quoted, key=org.key)
            resp = await send(client, call)
            assert resp.status_code == 200, (name, resp.text)
            assert fake_provider.last().path == f"/gemini/v1beta/models/{slug}:generateContent"
        fake_provider.reset()
        for hostile in ("../x", "%2e%2e%2fx", "a%2Fb", "a%3Fb", "a%0D%0Ab", "a%20b", "x" * 10240):
            resp = await send(client, chat_call("gemini", hostile, key=org.key))
            assert resp.status_code in (400, 404), (hostile, resp.status_code)
            for family in ("openai", "anthropic", "vllm"):
                unquoted = hostile.replace("%2F", "/").replace("%0D%0A", "\r\n").replace("%3F", "?")
                resp = await send(client, chat_call(family, unquoted, key=org.key))
                assert_error(family, resp, 404, "model_not_found")
    assert fake_provider.requests == [], [r.raw_path for r in fake_provider.requests]


async def _raw_exchange(dp: DataPlaneProcess, chunks: list[bytes], gap: float) -> tuple[bytes, float]:
    host, port = dp.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.monotonic()

    async def trickle() -> None:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(gap)

    sender = asyncio.create_task(trickle())
    try:
        answer = await asyncio.wait_for(reader.read(), 10)  # until the server closes
    finally:
        sender.cancel()
        writer.close()
    return answer, time.monotonic() - started


async def test_trickling_headers_are_cut_off(dp: DataPlaneProcess, org: Provisioned) -> None:
    head = [b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"] + [
        f"x-h{i}: v\r\n".encode() for i in range(40)
    ]
    answer, took = await _raw_exchange(dp, head, 0.2)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"x-request-id: " in answer
    assert took < 3.0
    async with httpx.AsyncClient(base_url=dp.url) as client:
        assert (await send(client, chat_call("openai", "gpt-chat", key=org.key))).status_code == 200


async def test_a_client_still_sending_its_head_gets_the_408_not_a_reset(dp: DataPlaneProcess) -> None:
    """Closing at once answers the client's next bytes with a reset: its next send fails (HTTP
    clients then report a broken pipe instead of the answer) and, if the reset lands before it
    reads, the 408 is lost. The gateway half-closes and drops what still arrives instead."""
    host, port = dp.url.removeprefix("http://").rsplit(":", 1)

    def exchange() -> bytes:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n")
            time.sleep(1.5)  # past the 1 s header deadline: the 408 is out
            for _ in range(4):  # still sending its head, as a slow client would
                sock.sendall(b"x-late: v\r\n")
                time.sleep(0.1)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            time.sleep(2.0)  # the linger (2 s from the 408) is over: the gateway has let go
            with pytest.raises(OSError):  # reset, then broken pipe
                for _ in range(3):
                    sock.sendall(b"x-later: v\r\n")
                    time.sleep(0.1)
            return answer

    answer = await asyncio.to_thread(exchange)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert answer.endswith(b"}") and b"request_timeout" in answer


@pytest.mark.parametrize("pace", ["paused", "trickled"])
async def test_slow_request_bodies_are_cut_off(dp: DataPlaneProcess, org: Provisioned, pace: str) -> None:
    head = (
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"x-api-key: {org.key}\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    body = [b"{"] if pace == "paused" else [b" "] * 100  # paused: then nothing; trickled: a byte each 0.3 s
    answer, took = await _raw_exchange(dp, [head, *body], 0.3)
    status_line, _, _rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b'"type":"error"' in answer.replace(b" ", b"") and b"request_timeout" in answer
    assert took < 6.0  # idle/total body timeout, then at most 2 s lingering
    async with httpx.AsyncClient(base_url=dp.url) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await send(client, chat_call("anthropic", "claude", key=org.key))).status_code == 200


async def test_keys_in_unparsable_requests_are_neither_echoed_nor_logged(
    dp: DataPlaneProcess, org: Provisioned
) -> None:
    path = f"/v1beta/models/gemini-flash:generateContent?key={org.key}&pad=" + "p" * 9000
    async with httpx.AsyncClient(base_url=dp.url) as client:
        resp = await client.post(path, json={"contents": []})
        assert resp.status_code == 400 and resp.headers["x-request-id"]
        assert org.key not in resp.text and len(resp.text) < 200
        assert (await client.get("/healthz")).status_code == 200
    assert org.key not in dp.stderr_text()
