"""The attempt loop (``data_plane/attempts.py``) against a scripted fake transport: what is retried,
what is not, the bounds, the answer when everything failed, and what the client and the record see."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import httpx

from data_plane import deployment_metrics
from data_plane.usage.meter import COMPLETE, ERROR, PARTIAL
from tests.data_plane.routed.harness import Harness, Step, dep, route

Serve = Callable[..., Awaitable[Harness]]
BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
ERR_500 = Step(500, chunks=(b'{"error": {"message": "boom"}}',))


async def post(h: Harness, body: bytes = BODY) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(h.served.url, content=body)


async def test_a_500_is_retried_on_the_next_deployment_with_its_own_slug_secret_and_url(serve: Serve) -> None:
    h = await serve({"a": [ERR_500], "b": [Step()]}, route("m", dep("a"), dep("b", priority=1)))
    resp = await post(h)
    assert resp.status_code == 200 and resp.content == b'{"id": "x", "choices": []}'
    assert h.transport.hosts() == ["a", "b"]
    second = h.transport.calls[1]
    assert second.url == "http://b.invalid/chat/completions"  # its base URL
    assert second.body is not None and b'"model": "slug-b"' in second.body
    assert second.headers["Authorization"] == "Bearer sk-b-0123456789abcdef"
    assert second.tenant != h.transport.calls[0].tenant
    assert resp.headers["x-odock-attempts"] == "2" and resp.headers["x-odock-deployment"] == "b"
    assert "x-odock-model" not in resp.headers
    [meter] = h.served.meters
    assert (meter.status, meter.outcome, meter.deployment, meter.upstream_attempts) == (200, COMPLETE, "b", 2)
    assert meter.upstream_slug == "slug-b" and meter.requested_model == ""
    record = meter.record()
    assert (record.deployment, record.upstream_attempts, record.http_status) == ("b", 2, 200)


async def test_a_429_with_retry_after_keeps_that_deployment_out_of_choice(serve: Serve) -> None:
    limited = Step(429, headers=(("Content-Type", "application/json"), ("Retry-After", "30")), chunks=(b"{}",))
    h = await serve({"a": [limited, Step()], "b": [Step()]}, route("m", dep("a"), dep("b", priority=1)))
    assert (await post(h)).status_code == 200
    assert (await post(h)).status_code == 200
    assert h.transport.hosts() == ["a", "b", "b"]  # a is cooling for 30 s: not asked again


async def test_refused_and_first_byte_timeout_are_retried(serve: Serve) -> None:
    h = await serve(
        {"a": [Step(refuse=True)], "b": [Step(hang=True)], "c": [Step()], "d": [Step(429, chunks=(b"{}",))]},
        route("attempts-metric", dep("d"), dep("a", priority=1), dep("b", priority=2, timeout=0.3),
              dep("c", priority=3)),
    )  # fmt: skip
    before = dict(deployment_metrics._counts)
    resp = await post(h)
    counted = {k: v - before.get(k, 0) for k, v in deployment_metrics._counts.items() if v != before.get(k, 0)}
    assert counted == {("attempts-metric", "d", "rate_limited"): 1, ("attempts-metric", "a", "unreachable"): 1,
                       ("attempts-metric", "b", "timeout"): 1, ("attempts-metric", "c", "ok"): 1}  # fmt: skip
    h.transport.calls = h.transport.calls[1:]  # d's 429 aside
    assert resp.status_code == 200 and h.transport.hosts() == ["a", "b", "c"]
    assert resp.headers["x-odock-attempts"] == "4" and resp.headers["x-odock-deployment"] == "c"


async def test_a_400_is_not_retried(serve: Serve) -> None:
    bad = Step(400, chunks=(b'{"error": {"message": "bad request"}}',))
    h = await serve({"a": [bad], "b": [Step()]}, route("m", dep("a"), dep("b", priority=1)))
    resp = await post(h)
    assert resp.status_code == 400 and resp.json() == {"error": {"message": "bad request"}}
    assert h.transport.hosts() == ["a"] and resp.headers["x-odock-attempts"] == "1"


async def test_no_retry_once_a_2xx_head_was_taken(serve: Serve) -> None:
    broken = Step(200, headers=(("Content-Type", "text/event-stream"),), chunks=(b'data: {"n": 1}\n\n',), cut=True)
    h = await serve({"a": [broken], "b": [Step()]}, route("m", dep("a"), dep("b", priority=1)))
    resp = await post(h, b'{"model": "m", "stream": true, "messages": []}')
    assert resp.status_code == 200 and resp.content.startswith(b'data: {"n": 1}\n\n')
    assert b"upstream_reset" in resp.content  # the stream ends with the gateway's error event
    assert h.transport.hosts() == ["a"]
    assert h.served.meters[0].outcome == PARTIAL


async def test_attempts_are_bounded_and_the_last_answer_is_relayed(serve: Serve) -> None:
    deps = [dep(n, priority=i) for i, n in enumerate("abcde")]
    statuses = (500, 529, 502, 503, 504)
    scripts = {n: [Step(statuses[i], chunks=(f'{{"from": "{n}"}}'.encode(),))] for i, n in enumerate("abcde")}
    h = await serve(scripts, route("m", *deps), max_attempts=3)
    resp = await post(h)
    assert h.transport.hosts() == ["a", "b", "c"]
    assert resp.status_code == 502 and resp.json() == {"from": "c"}  # c's own answer, as it came
    assert resp.headers["x-odock-attempts"] == "3" and resp.headers["x-odock-deployment"] == "c"
    meter = h.served.meters[0]
    assert (meter.status, meter.outcome, meter.upstream_attempts) == (502, ERROR, 3)


async def test_no_answer_anywhere_names_the_attempts(serve: Serve) -> None:
    h = await serve({"a": [Step(refuse=True)], "b": [Step(refuse=True)]}, route("m", dep("a"), dep("b", priority=1)))
    resp = await post(h)
    assert resp.status_code == 502
    assert resp.json()["error"]["message"] == "Upstream provider is unreachable (2 attempts)"
    assert resp.json()["error"]["code"] == "upstream_unreachable"
    assert resp.headers["x-odock-attempts"] == "2" and resp.headers["x-odock-deployment"] == "b"  # the last tried
    meter = h.served.meters[0]
    assert (meter.status, meter.error_code, meter.deployment, meter.upstream_attempts) == (
        502, "upstream_unreachable", "b", 2,
    )  # fmt: skip


async def test_an_answer_beats_a_later_failure_without_one(serve: Serve) -> None:
    h = await serve({"a": [Step(503, chunks=(b'{"from": "a"}',))], "b": [Step(refuse=True)]},
                    route("m", dep("a"), dep("b", priority=1)))  # fmt: skip
    resp = await post(h)
    assert resp.status_code == 503 and resp.json() == {"from": "a"}
    assert resp.headers["x-odock-deployment"] == "a"  # whose answer the client got


async def test_the_deadline_stops_the_attempts(serve: Serve) -> None:
    h = await serve({"a": [Step(hang=True)], "b": [Step()]},
                    route("m", dep("a", timeout=30.0), dep("b", priority=1)), total=0.5)  # fmt: skip
    started = time.monotonic()
    resp = await post(h)
    assert resp.status_code == 504 and resp.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 5.0
    assert h.transport.hosts() == ["a"]  # nothing left of the deadline for b


async def test_every_deployment_cooling_is_503_no_deployment_available(serve: Serve) -> None:
    limited = Step(429, headers=(("Content-Type", "application/json"), ("Retry-After", "60")), chunks=(b"{}",))
    h = await serve({"a": [limited], "b": [limited]}, route("m", dep("a"), dep("b", priority=1)))
    first = await post(h)
    assert first.status_code == 429 and h.transport.hosts() == ["a", "b"]
    second = await post(h)
    assert h.transport.hosts() == ["a", "b"]  # nothing tried
    assert second.status_code == 503 and second.json()["error"]["code"] == "no_deployment_available"
    assert 55 <= int(second.headers["Retry-After"]) <= 60
    assert h.served.meters[1].upstream_attempts == 0


async def test_a_stream_is_retried_before_it_started(serve: Serve) -> None:
    events = (b'data: {"n": 1}\n\n', b"data: [DONE]\n\n")
    h = await serve({"a": [Step(503, chunks=(b"{}",))],
                     "b": [Step(200, headers=(("Content-Type", "text/event-stream"),), chunks=events)]},
                    route("m", dep("a"), dep("b", priority=1)))  # fmt: skip
    resp = await post(h, b'{"model": "m", "stream": true, "messages": []}')
    assert resp.status_code == 200 and resp.content == b"".join(events)
    assert h.transport.hosts() == ["a", "b"] and resp.headers["x-odock-attempts"] == "2"
    assert h.served.meters[0].outcome == COMPLETE


async def test_a_retryable_answer_cut_mid_body_is_retried(serve: Serve) -> None:
    h = await serve({"a": [Step(500, chunks=(b'{"err',), cut=True)], "b": [Step()]},
                    route("m", dep("a"), dep("b", priority=1)))  # fmt: skip
    resp = await post(h)
    assert resp.status_code == 200 and h.transport.hosts() == ["a", "b"]


async def test_an_error_answer_too_big_to_hold_is_passed_on_without_retry(serve: Serve) -> None:
    big = b'{"error": "' + b"x" * 70_000 + b'"}'  # over the harness's 64 KiB max_buffered
    h = await serve({"a": [Step(500, chunks=(big,))], "b": [Step()]}, route("m", dep("a"), dep("b", priority=1)))
    resp = await post(h)
    assert resp.status_code == 500 and resp.content == big
    assert h.transport.hosts() == ["a"]
