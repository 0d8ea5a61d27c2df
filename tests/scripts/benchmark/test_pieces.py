"""The harness pieces start and answer correctly (no timing assertions: this is not a benchmark)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from scripts.benchmark import profile, report, servercost, streamclient, wrk
from scripts.benchmark.requests import chat_call, messages_call
from scripts.benchmark.stack import Service
from scripts.benchmark.stats import percentile, summary


def _events(raw: bytes) -> list[tuple[str | None, Any]]:
    out: list[tuple[str | None, Any]] = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        event = None
        data = None
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        assert data is not None, block
        out.append((event, data if data == "[DONE]" else json.loads(data)))
    return out


async def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers or {}) as resp,
    ):
        return resp.status, resp.content_type, await resp.read()


@pytest.mark.parametrize("via", ["upstream", "floor"])
async def test_openai_chat_json_and_sse(via: str, request: pytest.FixtureRequest) -> None:
    svc: Service = request.getfixturevalue(via)
    call = chat_call("direct", "")
    status, ctype, body = await _post(svc.url + call.path, call.body, call.headers)
    assert (status, ctype) == (200, "application/json")
    doc = json.loads(body)
    assert doc["object"] == "chat.completion"
    assert doc["usage"]["prompt_tokens"] + doc["usage"]["completion_tokens"] == doc["usage"]["total_tokens"]

    call = chat_call("direct", "", stream=True)
    status, ctype, body = await _post(svc.url + call.path, call.body, call.headers)
    assert (status, ctype) == (200, "text/event-stream")
    events = _events(body)
    assert events[-1] == (None, "[DONE]")
    usage = events[-2][1]["usage"]
    assert usage["completion_tokens"] == len(events) - 4  # role chunk, tokens, finish chunk, usage, [DONE]
    assert all(e[1]["object"] == "chat.completion.chunk" for e in events[:-1])


async def test_anthropic_stream_and_embeddings(upstream: Service) -> None:
    call = messages_call("direct", "")
    status, ctype, body = await _post(upstream.url + call.path, call.body, call.headers)
    assert (status, ctype) == (200, "text/event-stream")
    events = _events(body)
    assert [e for e, _ in events][:2] == ["message_start", "content_block_start"]
    assert events[-1][0] == "message_stop"
    assert events[-2][0] == "message_delta" and events[-2][1]["usage"]["output_tokens"] == 20
    assert all(name == data["type"] for name, data in events)

    status, _, body = await _post(upstream.url + "/v1/embeddings", b'{"model":"e","input":"hi"}')
    doc = json.loads(body)
    assert status == 200 and len(doc["data"][0]["embedding"]) == 256 and doc["usage"]["prompt_tokens"] == 8

    status, _, body = await _post(upstream.url + "/v1/unknown", b"{}")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"


async def test_upstream_knobs_delay_tokens_and_chunked_bodies(upstream: Service) -> None:
    call = chat_call("direct", "", stream=True, extra={"x-fake-tokens": "3", "x-fake-interval-ms": "5"})
    status, _, body = await _post(upstream.url + call.path, call.body, call.headers)
    assert status == 200 and len(_events(body)) == 3 + 4

    call = chat_call("direct", "", extra={"x-fake-delay-ms": "60"})
    started = time.monotonic()
    status, _, _ = await _post(upstream.url + call.path, call.body, call.headers)
    assert status == 200 and time.monotonic() - started >= 0.06  # never answers early

    async def chunked() -> Any:  # a streamed (chunked) upload still gets a streamed answer
        yield b'{"model":"x","messages":[],'
        yield b'"stream":true}'

    async with aiohttp.ClientSession() as session, \
            session.post(upstream.url + "/v1/chat/completions", data=chunked()) as resp:  # fmt: skip
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        assert (await resp.read()).endswith(b"data: [DONE]\n\n")


async def test_big_body_keeps_the_connection_usable(upstream: Service) -> None:
    big = chat_call("direct", "", stream=True, pad_to=1 << 20)
    assert len(big.body) >= 1 << 20 and big.body.endswith(
        b'"stream":true,"stream_options":{"include_usage":true}}'
    )
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for call in (big, chat_call("direct", ""), big):
            async with session.post(upstream.url + call.path, data=call.body, headers=call.headers) as resp:
                assert resp.status == 200
                is_stream = resp.content_type == "text/event-stream"
                assert is_stream == (call is big)
                await resp.read()


async def test_stream_client_times_first_byte_and_event(upstream: Service, floor: Service) -> None:
    for svc in (upstream, floor):
        call = chat_call("direct", "", stream=True)
        wire = streamclient.build_request(svc.host, svc.port, call.path, call.body, call.headers)
        result = await streamclient.measure_ttfb(svc.host, svc.port, wire, count=20, warmup=2)
        assert result.count == 20 and result.errors == 0
        assert 0 < result.first_byte_p50 <= result.first_event_p50 <= result.total_p50


async def test_held_streams_open_and_close(floor: Service) -> None:
    call = chat_call("direct", "", stream=True, extra={"x-fake-interval-ms": "1000", "x-fake-tokens": "60"})
    wire = streamclient.build_request(floor.host, floor.port, call.path, call.body, call.headers)
    held = streamclient.HeldStreams()
    try:
        assert await held.open(floor.host, floor.port, wire, 25, timeout=20) == 25
        assert all(not p.parser.done for p in held.protocols)  # still streaming
    finally:
        await asyncio.wait_for(held.close(), 10)


def test_response_parser_survives_any_split() -> None:
    body = b'data: {"a":1}\n\n'
    wire = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(body), body)
            + b"0\r\n\r\n")  # fmt: skip
    for cut in range(1, len(wire)):
        parser = streamclient.ResponseParser()
        parser.feed(wire[:cut], 1)
        parser.feed(wire[cut:], 2)
        assert parser.done and parser.status == 200 and parser.body_bytes == len(body), cut
        assert parser.first_event_ns == (1 if wire.index(b"data:") + 5 <= cut else 2), cut
    fixed = streamclient.ResponseParser()
    fixed.feed(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nab", 1)
    assert not fixed.done
    fixed.feed(b"c", 2)
    assert fixed.done and fixed.status == 404 and fixed.first_event_ns == 0


def test_wrk_result_line_is_parsed() -> None:
    line = (
        'BENCHJSON {"requests":500,"duration_us":2000000,"bytes":1,"connect":0,"read":1,"write":0,'
        '"status":3,"timeout":0,"p50_us":1500,"p90_us":2500,"p99_us":9000,"max_us":12000,"mean_us":1700.5}'
    )
    result = wrk.parse("Running 2s test\n" + line + "\n")
    assert (result.rps, result.errors, result.non_2xx, result.p50_ms, result.p99_ms) == (
        250.0,
        1,
        3,
        1.5,
        9.0,
    )
    with pytest.raises(RuntimeError):
        wrk.parse("no figures here")


def test_stats_profile_and_report_helpers(tmp_path: Any) -> None:
    assert percentile([5, 1, 4, 2, 3], 50) == 3 and percentile(list(range(1, 101)), 99) == 99
    assert summary([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}

    root = "_run_module_as_main (<frozen runpy>:198);main (a.py:1)"
    collapsed = (
        f"{root};handle (gw.py:10);parse (p.py:3) 30\n{root};handle (gw.py:12) 10\nThread.run (t.py:9) 5\n"
    )
    prof = profile.summarise(collapsed)
    assert (prof.samples, prof.other_threads) == (40, 5)
    assert prof.self_top[0] == ("parse (p.py)", 75.0)
    assert dict(prof.inclusive_top)["handle (gw.py)"] == 100.0

    doc = tmp_path / "bench.md"
    doc.write_text(f"# Benchmarks\n\nintro\n\n{report.BEGIN}\nold\n{report.END}\n\n## Profile\nkept\n")
    report.write_block(doc, f"{report.BEGIN}\nnew\n{report.END}")
    text = doc.read_text()
    assert "new" in text and "old" not in text and text.endswith("## Profile\nkept\n") and "intro" in text


@pytest.mark.parametrize("kind", servercost.KINDS)
async def test_servercost_servers_give_the_same_answer_on_keep_alive(kind: str) -> None:
    service = await asyncio.to_thread(servercost.start, kind, None)
    try:
        body = json.dumps(servercost.REQUEST).encode()
        url = f"{service.url}/v1/chat/completions"
        async with aiohttp.ClientSession() as session:
            for _ in range(3):  # the same connection answers request after request
                async with session.post(url, data=body) as resp:
                    assert resp.status == 200 and await resp.read() == servercost.ANSWER
                    assert resp.headers["Content-Type"].startswith("application/json")
            assert len(session.connector._conns) == 1  # type: ignore[union-attr]
    finally:
        service.stop()
