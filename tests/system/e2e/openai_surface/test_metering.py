"""Metering details: verbose transcripts bill seconds; a batch's cached/reasoning tokens and the model's
own batch price percent; a batch cancelled after some work still records what was done, once."""

from __future__ import annotations

from typing import Any

from odock.v1 import common_pb2
from tests.fakes.provider import FakeProvider
from tests.system.e2e.openai_surface.stack import AUDIO_SECOND_PICOS, Surface, UsageReader, jsonl, sdk

WAV = b"RIFF" + b"\1" * 4996  # 5000 bytes: the fake bills 5 seconds


def _usage(ins: int, outs: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {"input_tokens": ins, "output_tokens": outs, "total_tokens": ins + outs,
            "input_tokens_details": {"cached_tokens": cached}, "output_tokens_details": {"reasoning_tokens": reasoning}}


async def test_verbose_json_transcript_bills_seconds(gateway: str, fake: FakeProvider, org_a: Surface,
                                                     usage: UsageReader) -> None:
    async with sdk(gateway, org_a.key) as client:
        resp = await client.audio.transcriptions.with_raw_response.create(
            model="whisper-gw", file=("a.wav", WAV), response_format="verbose_json")
    assert resp.parse().duration == 5.0
    rec = await usage.by_request_id(org_a.org_id, resp.headers["x-odock-request-id"])
    assert rec.audio_milliseconds == 5000 and rec.cost_picos == 5 * AUDIO_SECOND_PICOS


async def test_batch_price_percent_and_token_details(gateway: str, fake: FakeProvider, org_a: Surface,
                                                     usage: UsageReader) -> None:
    pricing = common_pb2.Pricing(input_per_mtok_micros=3_000_000, output_per_mtok_micros=5_000_000,
                                 cached_input_per_mtok_micros=1_000_000, batch_price_percent=25)
    await org_a.admin.create_model(org_a.org_id, "quarter-gw", "openai", "gpt-quarter-upstream",
                                   fake.base_url("openai"), "openai-cred", pricing=pricing)
    async with sdk(gateway, org_a.key) as client:
        source = await client.files.create(file=("in.jsonl", jsonl("quarter-gw")), purpose="batch")
        assert fake.objects.file(source.id).lines[0]["body"]["model"] == "gpt-quarter-upstream"
        batch = await client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                            completion_window="24h")
        fake.objects.complete(batch.id, usage=_usage(4000, 800, cached=1000, reasoning=200))
        await client.batches.retrieve(batch.id)
    (rec,) = await usage.wait(org_a.org_id, 1, lambda r: r.batch_id == batch.id)
    assert (rec.input_tokens, rec.output_tokens, rec.cached_input_tokens, rec.reasoning_tokens) == (4000, 800, 1000, 200)
    full = 3000 * 3_000_000 + 1000 * 1_000_000 + 800 * 5_000_000  # uncached, cached, output
    assert rec.cost_picos == full * 25 // 100, (rec.cost_picos, full)


async def test_cancelled_batch_with_work_done_records_it_once(gateway: str, fake: FakeProvider, org_a: Surface,
                                                              usage: UsageReader) -> None:
    async with sdk(gateway, org_a.key) as client:
        source = await client.files.create(file=("in.jsonl", jsonl("gpt-chat", "gpt-chat")), purpose="batch")
        batch = await client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                            completion_window="24h")
        fake.objects.start(batch.id)
        assert (await client.batches.cancel(batch.id)).status == "cancelling"
        meta = fake.objects.finish_cancel(batch.id)
        meta.update(usage=_usage(120, 30), request_counts={"total": 2, "completed": 1, "failed": 0})
        for _ in range(3):
            assert (await client.batches.retrieve(batch.id)).status == "cancelled"
    (rec,) = await usage.wait(org_a.org_id, 1, lambda r: r.batch_id == batch.id)
    assert (rec.input_tokens, rec.output_tokens) == (120, 30)
