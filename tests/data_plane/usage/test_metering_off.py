"""``ODOCK_USAGE_METERING=off``: streams and answers still relay untouched, no usage record is built,
and nothing is asked of the provider on the client's behalf (no injected ``include_usage``)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from data_plane.settings import Settings, SettingsError
from tests.data_plane.usage.stack import UsageQueries, start_dp, usage_status, wait_usage
from tests.data_plane.usage.test_settings import BASE
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned

MSGS = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def dp_off(cp: ControlPlaneProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlaneProcess]:
    proc = start_dp(cp, tmp_path_factory.mktemp("spool-off"), ODOCK_USAGE_METERING="off", ODOCK_LIMITS="off")
    try:
        yield proc
    finally:
        assert proc.stop() == 0
    assert "Traceback" not in proc.stderr_text(), proc.stderr_text()[-4000:]


def test_metering_setting_defaults_on_and_off_needs_limits_off() -> None:
    assert Settings.from_env(BASE).usage.metering is True
    off = Settings.from_env({**BASE, "ODOCK_USAGE_METERING": "off", "ODOCK_LIMITS": "off"})
    assert off.usage.metering is False and off.limits.enabled is False
    with pytest.raises(SettingsError, match="^ODOCK_USAGE_METERING: 'off' needs ODOCK_LIMITS=off$"):
        Settings.from_env({**BASE, "ODOCK_USAGE_METERING": "off"})
    with pytest.raises(SettingsError, match="^ODOCK_USAGE_METERING: must be 'on' or 'off'$"):
        Settings.from_env({**BASE, "ODOCK_USAGE_METERING": "maybe", "ODOCK_LIMITS": "off"})


async def _chat(node: DataPlaneProcess, org: Provisioned, *, stream: bool) -> httpx.Response:
    body = {"model": "gpt-chat", "messages": MSGS, "stream": stream}
    headers = {"Authorization": f"Bearer {org.key}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=node.url, timeout=15) as client:
        return await client.post("/v1/chat/completions", content=json.dumps(body), headers=headers)


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_metering_off_relays_streams_and_records_nothing(
    dp: DataPlaneProcess,
    dp_off: DataPlaneProcess,
    org: Provisioned,
    fake: FakeProvider,
    queries: UsageQueries,
) -> None:
    fake.reset()
    fake.knobs.chunks = 4
    streamed = await _chat(dp_off, org, stream=True)
    assert streamed.status_code == 200
    sent = fake.last()
    # No include_usage asked for the client, and the client gets exactly what the provider sent.
    assert "stream_options" not in sent.json()
    assert streamed.text.count("piece") == 4 and streamed.text.rstrip().endswith("data: [DONE]")
    plain = await _chat(dp_off, org, stream=False)
    assert plain.status_code == 200 and plain.json()["usage"]["completion_tokens"] == 4
    # The record would be submitted in the handler's finally, before /readyz can be served.
    status = usage_status(dp_off)
    assert (status["records"], status["queued_records"], status["sent_batches"]) == (0, 0, 0)
    for resp in (streamed, plain):
        assert await queries.find(resp.headers["x-odock-request-id"]) is None
    # Control: the same stream through a metered node is injected with include_usage and recorded.
    before = usage_status(dp)["records"]
    metered = await _chat(dp, org, stream=True)
    assert metered.status_code == 200 and fake.last().json()["stream_options"] == {"include_usage": True}
    await wait_usage(dp, lambda s: s["records"] == before + 1)
    rec = await queries.record(metered.headers["x-odock-request-id"])
    assert rec.output_tokens == 4
