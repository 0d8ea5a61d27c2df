"""``x-odock-overhead-ms``: on every answer of a native endpoint (errors too), never counting
the time upstream took, and never on anything else."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from odock import keyformat
from tests.data_plane.helpers import chat_call
from tests.fakes.provider import FakeProvider
from tests.support.provision import Provisioned
from tests.system.operations.data_plane.stack import OpsControlPlane, OpsDataPlane, start_ops_dp

pytestmark = pytest.mark.asyncio(loop_scope="module")

HEADER = "x-odock-overhead-ms"
UPSTREAM_DELAY = 1.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def dp(
    ops_cp: OpsControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[OpsDataPlane]:
    proc = await asyncio.to_thread(start_ops_dp, ops_cp.process, tmp_path_factory.mktemp("spool"))
    yield proc
    assert await asyncio.to_thread(proc.process.stop) == 0


def overhead(resp: httpx.Response, elapsed: float) -> float:
    """The header's value, checked to be a well-formed, non-negative number no larger than the call."""
    raw = resp.headers.get(HEADER)
    assert raw is not None, (resp.status_code, dict(resp.headers))
    value = float(raw)
    assert raw == f"{value:.3f}" and 0 <= value <= elapsed * 1000, (raw, elapsed)
    return value


async def timed(
    client: httpx.AsyncClient, path: str, body: bytes, headers: dict[str, str]
) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    resp = await client.post(path, content=body, headers=headers)
    return resp, time.perf_counter() - start


async def test_upstream_wait_is_not_overhead(dp: OpsDataPlane, org: Provisioned, fake: FakeProvider) -> None:
    fake.knobs.delay_before_headers = UPSTREAM_DELAY
    async with httpx.AsyncClient(base_url=dp.url, timeout=20) as client:
        for family, model in (("openai", "gpt-chat"), ("anthropic", "claude"), ("gemini", "gemini-flash")):
            for stream in (False, True):
                req = chat_call(family, model, stream=stream, key=org.key)
                resp, elapsed = await timed(client, req.path, req.body, req.headers)
                assert resp.status_code == 200, resp.text[:300]
                assert elapsed >= UPSTREAM_DELAY
                # The gateway's own work is milliseconds; a second of upstream wait must not show.
                assert overhead(resp, elapsed) < UPSTREAM_DELAY * 1000 / 2, (family, stream)


async def test_streams_carry_what_the_gateway_added_before_the_first_byte(
    dp: OpsDataPlane, org: Provisioned, fake: FakeProvider
) -> None:
    fake.knobs.chunk_delay = 0.3  # a long stream after the headers: not part of the header's value
    req = chat_call("vllm", "llama", stream=True, key=org.key)
    async with httpx.AsyncClient(base_url=dp.url, timeout=20) as client:
        start = time.perf_counter()
        async with client.stream("POST", req.path, content=req.body, headers=req.headers) as resp:
            at_headers = time.perf_counter() - start
            value = overhead(resp, at_headers)
            await resp.aread()
        assert time.perf_counter() - start >= 0.6
    assert value < 300


async def test_errors_carry_it_too(dp: OpsDataPlane, org: Provisioned, fake: FakeProvider) -> None:
    async with httpx.AsyncClient(base_url=dp.url, timeout=20) as client:
        cases: list[tuple[str, httpx.Response, float]] = []
        for what, key, model in (("unknown key", keyformat.generate(), "gpt-chat"), ("malformed key", "nope", "gpt-chat"),
                                 ("unknown model", org.key, "nope"), ("wrong family", org.key, "claude")):  # fmt: skip
            req = chat_call("openai", model, key=key)
            cases.append((what, *await timed(client, req.path, req.body, req.headers)))
        req = chat_call("openai", "gpt-chat", key=org.key)
        cases.append(("invalid json", *await timed(client, req.path, b"{nope", req.headers)))
        fake.knobs.status = 503
        cases.append(("upstream error", *await timed(client, req.path, req.body, req.headers)))
        fake.knobs.status = None
        fake.knobs.reset_after = 0
        cases.append(("upstream reset", *await timed(client, req.path, req.body, req.headers)))
        fake.knobs.reset_after = None
        statuses = {what: resp.status_code for what, resp, _ in cases}
        assert statuses == {"unknown key": 401, "malformed key": 401, "unknown model": 404, "wrong family": 400,
                            "invalid json": 400, "upstream error": 503, "upstream reset": 502}  # fmt: skip
        for _what, resp, elapsed in cases:
            overhead(resp, elapsed)
        for path in ("/healthz", "/readyz", "/v1/models", "/v1/nothing-here"):
            resp = await client.get(path, headers={"Authorization": f"Bearer {org.key}"})
            assert HEADER not in resp.headers, path
