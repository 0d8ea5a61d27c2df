"""Hostile request bodies against a real data plane: a quadratic-bait multipart header, trickled bodies.

Each hostile request must be answered (or cut) quickly while ``/healthz`` keeps answering,
and honest large uploads must not be caught by the same guards.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from data_plane.server import LINGER_SECONDS
from tests.data_plane.helpers import assert_error
from tests.data_plane.nodes import connected_data_plane
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned, Provisioner

# Short pacing window so the trickle test takes seconds; the default-window bound is unit-tested.
WINDOW = 1.0
MIN_RATE = 1024


def hostile_multipart(spaces: int) -> bytes:
    """A form whose first part has a header line ``X-Pad: a<spaces>b`` (quadratic for a backtracking regex)."""
    return (
        b'--b\r\nContent-Disposition: form-data; name="prompt"\r\nX-Pad: a' + b" " * spaces + b"b\r\n\r\n"
        b"a cat\r\n"
        b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nimage-gen\r\n--b--\r\n'
    )


async def _probe_health(url: str, stop: asyncio.Event, latencies: list[float]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                ok = (await client.get("/healthz")).status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.monotonic() - started if ok else float("inf"))
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("spaces", [64_000, 1_000_000], ids=["64KB", "1MB"])
async def test_hostile_part_header_is_a_quick_400_and_health_keeps_answering(
    dp: DataPlaneProcess, cp: ControlPlaneProcess, org: Provisioned, fake_provider: FakeProvider, spaces: int
) -> None:
    # A key scoped to another model: the body is still parsed (the model is inside it).
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        _, key = await admin.create_key(org.org.id, models=["gpt-chat"])
    stop, latencies = asyncio.Event(), list[float]()
    probe = asyncio.create_task(_probe_health(dp.url, stop, latencies))
    await asyncio.sleep(0.1)  # probes running before the hostile request lands
    try:
        async with httpx.AsyncClient(base_url=dp.url, timeout=30) as client:
            started = time.monotonic()
            resp = await client.post(
                "/v1/images/edits",
                content=hostile_multipart(spaces),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "multipart/form-data; boundary=b"},
            )
            took = time.monotonic() - started
        await asyncio.sleep(0.1)
    finally:
        stop.set()
        await probe
    stall = max(latencies)
    assert took < 3.0 and stall < 1.5, (
        f"answered {resp.status_code} in {took:.2f} s, /healthz stalled {stall:.2f} s"
    )
    assert len(latencies) >= 5
    body = assert_error("openai", resp, 400, "invalid_multipart")
    assert "header" in body["error"]["message"] and "8192" in body["error"]["message"]
    assert fake_provider.requests == []


@pytest.fixture(scope="module")
def paced_dp(cp: ControlPlaneProcess) -> Iterator[DataPlaneProcess]:
    """A data plane with the default body timeouts but a 1 s pacing window (1 KiB/s minimum)."""
    env = {
        "ODOCK_CLIENT_BODY_WINDOW_SECONDS": str(WINDOW),
        "ODOCK_CLIENT_BODY_MIN_BYTES_PER_SECOND": str(MIN_RATE),
    }
    with connected_data_plane(cp, env) as proc:
        yield proc


async def test_a_body_trickled_at_one_byte_per_second_is_cut_and_the_connection_freed(
    paced_dp: DataPlaneProcess, org: Provisioned
) -> None:
    host, port = paced_dp.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"x-api-key: {org.key}\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    writer.write(head)
    started = time.monotonic()

    async def trickle() -> None:
        for _ in range(1000):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(1.0)

    sender = asyncio.create_task(trickle())
    try:
        answer = await asyncio.wait_for(reader.read(), 15)  # returns once the server closed
    finally:
        sender.cancel()
        writer.close()
    took = time.monotonic() - started
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408"), answer[:300]
    error = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert error["type"] == "error" and error["error"]["code"] == "request_timeout"
    assert "bytes per second" in error["error"]["message"]
    # Cut at the end of the first window without enough progress (1 s here), then at most
    # LINGER_SECONDS (2) of lingering so the client reads the 408; other body timeouts are >= 30 s.
    assert took < WINDOW + LINGER_SECONDS + 4.0, f"trickled body held the connection {took:.1f} s"
    async with httpx.AsyncClient(base_url=paced_dp.url) as client:
        assert (await client.get("/healthz")).status_code == 200


def _chat_body(size: int, model: str = "gpt-chat") -> bytes:
    head = b'{"model":"' + model.encode() + b'","messages":[{"role":"user","content":"'
    tail = b'"}]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def _upstream(body: bytes, org: Provisioned) -> bytes:
    """``body`` as the provider must receive it: only the model value rewritten."""
    return body.replace(b'"model":"gpt-chat"', b'"model":"' + org.slug("gpt-chat").encode() + b'"', 1)


async def test_a_20_mb_upload_at_full_speed_is_not_cut(
    paced_dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider
) -> None:
    # The fake provider takes at most 1 MiB, so the body names a model the org lacks: the
    # 404 comes only after the whole body was read and inspected (a cut body is a 408).
    body = _chat_body(20 * 1024 * 1024, model="no-such-model")
    async with httpx.AsyncClient(base_url=paced_dp.url, timeout=60) as client:
        resp = await client.post(
            "/v1/chat/completions",
            content=body,
            headers={"Authorization": f"Bearer {org.key}", "Content-Type": "application/json"},
        )
    assert_error("openai", resp, 404, "model_not_found")
    assert fake_provider.requests == []


async def test_an_upload_paced_above_the_minimum_rate_spans_many_windows(
    paced_dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider
) -> None:
    # 4 s of uploading at 40 KiB/s (40x the minimum: a stalled test loop cannot fail it), sent
    # as a chunked body in 4 KiB pieces.
    body = _chat_body(160 * 1024)

    async def paced() -> AsyncIterator[bytes]:
        for at in range(0, len(body), 4096):
            yield body[at : at + 4096]
            await asyncio.sleep(0.1)

    started = time.monotonic()
    async with httpx.AsyncClient(base_url=paced_dp.url, timeout=30) as client:
        resp = await client.post(
            "/v1/chat/completions",
            content=paced(),
            headers={"Authorization": f"Bearer {org.key}", "Content-Type": "application/json"},
        )
    assert resp.status_code == 200, resp.text[:300]
    assert time.monotonic() - started > 3 * WINDOW
    assert fake_provider.last().body == _upstream(body, org)
