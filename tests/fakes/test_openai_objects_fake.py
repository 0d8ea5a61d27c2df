"""The OpenAI audio, moderations, files and batches fakes speak the real shapes: the openai SDK parses them."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from openai.types import (
    ModerationImageURLInputParam,
    ModerationMultiModalInputParam,
    ModerationTextInputParam,
)

from tests.fakes import multipart
from tests.fakes.openai_audio import audio_seconds, speech_chunks
from tests.fakes.provider import FakeProvider

WAV = b"RIFF" + bytes(range(256)) * 9  # 2308 bytes -> 3 billed seconds


def _client(fake: FakeProvider, key: str = "sk-a") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=fake.base_url("openai"), max_retries=0)


def _jsonl(*models: str, url: str = "/v1/chat/completions") -> bytes:
    return b"".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": url,
                                "body": {"model": m, "messages": [{"role": "user", "content": "hi"}]}}).encode()
                    + b"\n" for i, m in enumerate(models))


async def test_transcriptions_json_text_verbose_and_stream(fake_provider: FakeProvider) -> None:
    async with _client(fake_provider) as client:
        tr = await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", WAV, "audio/wav"))
        assert tr.text.endswith(f"({len(WAV)} bytes)") and tr.usage is not None
        assert tr.usage.type == "duration" and tr.usage.seconds == audio_seconds(WAV) == 3
        part = multipart.field(fake_provider.last().form(), "file")
        assert part is not None and part.data == WAV and part.filename == "a.wav"
        text = await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", WAV),
                                                        response_format="text")
        assert isinstance(text, str) and text.strip().endswith("bytes)")
        verbose = await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", WAV),
                                                           response_format="verbose_json")
        assert verbose.duration == 3.0 and verbose.segments and verbose.language == "english"
        tok = await client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.wav", WAV))
        assert tok.usage is not None and tok.usage.type == "tokens" and tok.usage.output_tokens == 3
        events = [e async for e in await client.audio.transcriptions.create(
            model="gpt-4o-mini-transcribe", file=("a.wav", WAV), stream=True)]
        assert [e.type for e in events] == ["transcript.text.delta"] * 3 + ["transcript.text.done"]
        done = events[-1]
        assert done.type == "transcript.text.done" and done.usage is not None and done.usage.total_tokens > 3
        with pytest.raises(openai.BadRequestError, match="not compatible"):
            await client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.wav", WAV),
                                                     response_format="verbose_json")
        with pytest.warns(DeprecationWarning):  # openai-python marks translations deprecated; the API serves them
            tl = await client.audio.translations.create(model="whisper-1", file=("a.wav", WAV))
        assert tl.text.endswith("bytes)")
    async with httpx.AsyncClient() as http:
        body, ctype = multipart.build([("model", "whisper-1")])
        r = await http.post(fake_provider.base_url("openai") + "/audio/transcriptions", content=body,
                            headers={"Content-Type": ctype})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"


async def test_speech_bytes_chunks_sse_and_validation(fake_provider: FakeProvider) -> None:
    fake_provider.knobs.chunks = 4
    async with _client(fake_provider) as client:
        audio = await client.audio.speech.create(model="tts-1", voice="alloy", input="hello", response_format="wav")
        assert audio.content == b"".join(speech_chunks("hello", "wav", 4))
        assert audio.response.headers["content-type"].startswith("audio/wav")
        with pytest.raises(openai.BadRequestError, match="string too long"):
            await client.audio.speech.create(model="tts-1", voice="alloy", input="x" * 4097)
        with pytest.raises(openai.BadRequestError, match="voice"):
            await client.audio.speech.create(model="tts-1", voice="nobody", input="x")
    async with httpx.AsyncClient(timeout=5) as http:
        url = fake_provider.base_url("openai") + "/audio/speech"
        r = await http.post(url, json={"model": "gpt-4o-mini-tts", "voice": "nova", "input": "hi",
                                       "stream_format": "sse"})
        events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
        assert [e["type"] for e in events] == ["speech.audio.delta"] * 4 + ["speech.audio.done"]
        assert events[-1]["usage"]["output_tokens"] == 4
        # incremental: the first chunk arrives while the last is held back
        fake_provider.knobs.hold_last = hold = asyncio.Event()
        async with http.stream("POST", url, json={"model": "tts-1", "voice": "nova", "input": "hi"}) as resp:
            received = b""
            async for piece in resp.aiter_raw():
                if not received:
                    assert not fake_provider.last().complete  # the last chunk is still held
                    hold.set()
                received += piece
        assert received == b"".join(speech_chunks("hi", "mp3", 4))


async def test_moderations_shapes(fake_provider: FakeProvider) -> None:
    async with _client(fake_provider) as client:
        one = await client.moderations.create(input="I will kill the process")
        assert one.results[0].flagged and one.results[0].categories.violence
        assert one.model.startswith("omni-moderation")
        many = await client.moderations.create(model="omni-moderation-latest", input=["fine", "also fine"])
        assert [r.flagged for r in many.results] == [False, False]
        text: ModerationTextInputParam = {"type": "text", "text": "ok"}
        image: ModerationImageURLInputParam = {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
        both: list[ModerationMultiModalInputParam] = [text, image]
        mm = await client.moderations.create(input=both)
        assert len(mm.results) == 1 and mm.results[0].category_applied_input_types.violence == ["image", "text"]
        with pytest.raises(openai.BadRequestError, match="image"):
            await client.moderations.create(model="text-moderation-latest", input=[image])


async def test_files_per_account_paging_and_content(fake_provider: FakeProvider) -> None:
    async with _client(fake_provider, "sk-a") as a, _client(fake_provider, "sk-b") as b:
        ids = [(await a.files.create(file=(f"f{i}.txt", b"x" * (i + 1)), purpose="user_data")).id for i in range(5)]
        listed = await a.files.list(limit=2)
        assert [f.id for f in listed.data] == ids[::-1][:2] and listed.has_more
        everything = [f.id async for f in a.files.list(limit=2)]  # the SDK follows `after`
        assert everything == ids[::-1]
        assert [f.id for f in (await a.files.list(order="asc", limit=10)).data] == ids
        assert (await b.files.list()).data == []
        with pytest.raises(openai.NotFoundError, match=f"No such File object: {ids[0]}"):
            await b.files.retrieve(ids[0])
        with pytest.raises(openai.NotFoundError):
            await b.files.content(ids[0])
        assert (await a.files.content(ids[4])).content == b"xxxxx"
        assert (await a.files.retrieve(ids[1])).bytes == 2
        assert (await a.files.delete(ids[1])).deleted
        with pytest.raises(openai.NotFoundError):
            await a.files.retrieve(ids[1])


async def test_batch_input_validation(fake_provider: FakeProvider) -> None:
    async with _client(fake_provider) as client:
        with pytest.raises(openai.BadRequestError, match="Line 2: all requests .* same model"):
            await client.files.create(file=("in.jsonl", _jsonl("m1", "m2")), purpose="batch")
        with pytest.raises(openai.BadRequestError, match="Must be .jsonl"):
            await client.files.create(file=("in.txt", _jsonl("m1")), purpose="batch")
        with pytest.raises(openai.BadRequestError, match="Line 1: invalid JSON"):
            await client.files.create(file=("in.jsonl", b"{nope\n"), purpose="batch")
        ok = await client.files.create(file=("in.jsonl", _jsonl("up-slug", "up-slug")), purpose="batch")
        assert [line["body"]["model"] for line in fake_provider.objects.file(ok.id).lines] == ["up-slug"] * 2
        other = await client.files.create(file=("x.txt", b"x"), purpose="user_data")
        with pytest.raises(openai.BadRequestError, match="purpose 'batch'"):
            await client.batches.create(input_file_id=other.id, endpoint="/v1/chat/completions",
                                        completion_window="24h")
        with pytest.raises(openai.NotFoundError, match="No such File object"):
            await client.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions",
                                        completion_window="24h")
        mismatched = await client.batches.create(input_file_id=ok.id, endpoint="/v1/embeddings",
                                                 completion_window="24h")
        assert mismatched.status == "failed" and mismatched.errors and mismatched.errors.data
        assert mismatched.errors.data[0].line == 1


async def test_batch_lifecycle_output_and_isolation(fake_provider: FakeProvider) -> None:
    async with _client(fake_provider, "sk-a") as a, _client(fake_provider, "sk-b") as b:
        f = await a.files.create(file=("in.jsonl", _jsonl("m", "m", "m")), purpose="batch")
        batch = await a.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                                       metadata={"job": "nightly"})
        assert batch.status == "validating" and batch.model == "m" and batch.metadata == {"job": "nightly"}
        with pytest.raises(openai.NotFoundError, match="No batch found"):
            await b.batches.retrieve(batch.id)
        assert (await b.batches.list()).data == []
        fake_provider.objects.start(batch.id)
        assert (await a.batches.retrieve(batch.id)).status == "in_progress"
        usage = {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120,
                 "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
        fake_provider.objects.complete(batch.id, usage=usage, failed=1)
        done = await a.batches.retrieve(batch.id)
        assert done.status == "completed" and done.usage is not None and done.usage.total_tokens == 120
        assert done.request_counts is not None and (done.request_counts.completed, done.request_counts.failed) == (2, 1)
        assert done.output_file_id and done.error_file_id
        lines = (await a.files.content(done.output_file_id)).text.splitlines()
        outs = [json.loads(line) for line in lines]
        assert [o["custom_id"] for o in outs] == ["r0", "r1"] and outs[0]["response"]["status_code"] == 200
        assert outs[0]["response"]["body"]["object"] == "chat.completion"
        with pytest.raises(openai.ConflictError, match="Cannot cancel"):
            await a.batches.cancel(batch.id)
        second = await a.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert (await a.batches.cancel(second.id)).status == "cancelling"
        fake_provider.objects.finish_cancel(second.id)
        page = await a.batches.list(limit=1)
        assert [x.id for x in page.data] == [second.id] and page.has_more
        assert [x.id async for x in a.batches.list(limit=1)] == [second.id, batch.id]
