"""Hostile or broken upstreams: stalls bounded by the model's timeout, the provider key never relayed,
an event that never ends. A data plane with the default upstream idle timeout (60 s)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from data_plane.scrub import MARKER
from tests.data_plane.helpers import CHAT_MODEL, FAMILIES, assert_error, chat_call, send
from tests.data_plane.nodes import connected_data_plane
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned, Provisioner, provision_org

MODEL_TIMEOUT_S = 1.0
# The model's timeout (1 s) plus room for a busy 2-core machine; the node's own idle bound is 60 s.
STALL_BOUND_S = 4.0


@pytest.fixture(scope="module")
def dp(cp: ControlPlaneProcess) -> Iterator[DataPlaneProcess]:
    """A data plane with the default upstream idle timeout: only the model's timeout can end a stall early."""
    with connected_data_plane(cp) as proc:
        yield proc


@pytest_asyncio.fixture
async def slow_org(cp: ControlPlaneProcess, fake_provider: FakeProvider) -> AsyncIterator[Provisioned]:
    """An org whose models have a 1 s timeout."""
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        yield await provision_org(admin, fake_provider, timeout_s=MODEL_TIMEOUT_S)


def _events(raw: bytes) -> list[str]:
    return [e for e in raw.decode().replace("\r\n", "\n").split("\n\n") if e.strip()]


def _error_event(family: str, event: str) -> tuple[int, str]:
    """(status, code) of a gateway error event in ``family``'s shape."""
    if family == "anthropic":
        assert event.startswith("event: error\ndata: "), event[:200]
    payload = json.loads(event.split("data: ", 1)[1])
    if family == "anthropic":
        assert payload["type"] == "error"
        return 0, str(payload["error"]["code"])
    if family == "gemini":
        return int(payload["error"]["code"]), str(payload["error"]["details"][0]["reason"])
    assert payload["error"]["type"] == "api_error"
    return 0, str(payload["error"]["code"])


# Item: a model's timeout bounds silence too.


@pytest.mark.parametrize("family", FAMILIES)
async def test_a_stream_that_goes_silent_ends_within_the_model_timeout(
    dp: DataPlaneProcess, slow_org: Provisioned, fake_provider: FakeProvider, family: str
) -> None:
    fake_provider.knobs.chunks = 6
    fake_provider.knobs.stall_after = 3  # three events, then silence
    call = chat_call(family, CHAT_MODEL[family], stream=True, key=slow_org.key)
    async with httpx.AsyncClient(base_url=dp.url, timeout=10) as client:
        start = time.monotonic()
        resp = await send(client, call)
        elapsed = time.monotonic() - start
    assert resp.status_code == 200
    events = _events(resp.content)
    assert len(events) == 4, events
    status, code = _error_event(family, events[-1])
    assert code == "upstream_timeout" and status in (0, 504)
    assert MODEL_TIMEOUT_S * 0.9 <= elapsed < STALL_BOUND_S, elapsed


@pytest.mark.parametrize("family", FAMILIES)
async def test_a_plain_answer_whose_body_stalls_is_a_504_within_the_model_timeout(
    dp: DataPlaneProcess, slow_org: Provisioned, fake_provider: FakeProvider, family: str
) -> None:
    fake_provider.knobs.stall_after = 20  # headers and 20 body bytes, then silence
    async with httpx.AsyncClient(base_url=dp.url, timeout=10) as client:
        start = time.monotonic()
        resp = await send(client, chat_call(family, CHAT_MODEL[family], key=slow_org.key))
        elapsed = time.monotonic() - start
        assert_error(family, resp, 504, "upstream_timeout")
        assert elapsed < STALL_BOUND_S, elapsed
        fake_provider.reset()
        assert (
            await send(client, chat_call(family, CHAT_MODEL[family], key=slow_org.key))
        ).status_code == 200


# Item: the provider key never leaves the gateway.


def _relayed(resp: httpx.Response) -> bytes:
    """Everything the client received: status line, headers and body."""
    head = f"{resp.status_code} {resp.reason_phrase}\r\n".encode()
    head += b"".join(k + b": " + v + b"\r\n" for k, v in resp.headers.raw)
    return head + resp.content


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("where", ["body", "header"])
async def test_a_key_echoed_in_an_upstream_error_is_scrubbed(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider, family: str, where: str
) -> None:
    fake_provider.knobs.echo_key = where
    secret = fake_provider.secret(family).encode()
    async with httpx.AsyncClient(base_url=dp.url, timeout=10) as client:
        resp = await send(client, chat_call(family, CHAT_MODEL[family], key=org.key))
    assert resp.status_code == 401  # the provider's own error, relayed
    relayed = _relayed(resp)
    assert secret not in relayed
    if where == "body":
        message = json.dumps(resp.json())
        assert message.count(MARKER.decode()) == 2, message  # raw and in the key= query
    else:
        assert resp.headers["x-echo-key"] == MARKER.decode()


def _stream_path(family: str, call_path: str, json_array: bool) -> str:
    return (
        call_path.replace(":streamGenerateContent?alt=sse", ":streamGenerateContent")
        if json_array
        else call_path
    )


@pytest.mark.parametrize(("family", "json_array"), [*((f, False) for f in FAMILIES), ("gemini", True)])
async def test_a_key_echoed_in_a_stream_split_across_writes_is_scrubbed(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider, family: str, json_array: bool
) -> None:
    fake_provider.knobs.echo_key = "stream"
    secret = fake_provider.secret(family).encode()
    call = chat_call(family, CHAT_MODEL[family], stream=True, key=org.key)
    async with httpx.AsyncClient(base_url=dp.url, timeout=10) as client:
        resp = await client.post(
            _stream_path(family, call.path, json_array), content=call.body, headers=call.headers
        )
    assert resp.status_code == 200
    relayed = _relayed(resp)
    assert secret not in relayed
    assert resp.headers["x-echo-key"] == MARKER.decode()
    assert resp.content.count(MARKER) == 1 and b"piece1" in resp.content  # the rest is intact
    if json_array:
        assert len(resp.json()) == 3  # still a complete JSON document


# Item: an event that never ends is bounded.


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("family", FAMILIES)
async def test_an_event_that_never_ends_ends_the_stream_with_an_error_event(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider, family: str
) -> None:
    fake_provider.knobs.unterminated_event = 16 * 1024 * 1024
    call = chat_call(family, CHAT_MODEL[family], stream=True, key=org.key)
    baseline = peak = _rss_bytes(dp.pid)
    health: list[float] = []
    done = asyncio.Event()

    async def watch(client: httpx.AsyncClient) -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes(dp.pid))
            start = time.monotonic()
            assert (await client.get("/healthz")).status_code == 200
            health.append(time.monotonic() - start)
            await asyncio.sleep(0.02)

    async with (
        httpx.AsyncClient(base_url=dp.url, timeout=30) as client,
        httpx.AsyncClient(base_url=dp.url, timeout=30) as prober,
    ):
        watcher = asyncio.create_task(watch(prober))
        try:
            resp = await send(client, call)
        finally:
            done.set()
            await watcher
    assert resp.status_code == 200
    events = _events(resp.content)
    status, code = _error_event(family, events[-1])
    assert code == "upstream_event_too_large" and status in (0, 502)
    assert len(resp.content) < 64 * 1024, "the partial event was dropped, never relayed"
    assert peak - baseline < 12 * 1024 * 1024, (baseline, peak)
    assert health and max(health) < 1.0, max(health, default=None)
