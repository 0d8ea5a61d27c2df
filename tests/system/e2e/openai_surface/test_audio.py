"""Audio through the gateway: transcriptions (json, text, stream), translations, speech (bytes streamed
as they arrive, identical; SSE), metered in the units the provider bills."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from tests.fakes import multipart
from tests.fakes.openai_audio import audio_seconds, speech_chunks
from tests.fakes.provider import FakeProvider, prompt_tokens_for
from tests.system.e2e.openai_surface.stack import (
    AUDIO_SECOND_PICOS,
    BODY_LIMIT,
    CHARACTER_PICOS,
    TOKEN_PRICES,
    Surface,
    UsageReader,
    auth,
    openai_error,
    raw,
    sdk,
)

WAV = b"RIFF" + bytes(range(256)) * 9  # 2308 bytes: the fake bills 3 seconds


def _only(fake: FakeProvider, path: str) -> multipart.Part:
    assert [r.native_path for r in fake.requests] == [path], [r.raw_path for r in fake.requests]
    rec = fake.requests[0]
    assert rec.headers["Authorization"] == f"Bearer {fake.secret('openai')}"
    part = multipart.field(rec.form(), "file")
    assert part is not None
    return part


async def test_transcription_json_rewrites_model_keeps_bytes_and_meters_seconds(
        gateway: str, fake: FakeProvider, org_a: Surface, usage: UsageReader) -> None:
    async with sdk(gateway, org_a.key) as client:
        resp = await client.audio.transcriptions.with_raw_response.create(
            model="whisper-gw", file=("talk.wav", WAV, "audio/wav"), language="en")
        tr = resp.parse()
    assert tr.text.endswith(f"({len(WAV)} bytes)")
    assert tr.usage is not None and tr.usage.type == "duration" and tr.usage.seconds == audio_seconds(WAV) == 3
    part = _only(fake, "/v1/audio/transcriptions")
    assert part.data == WAV and part.filename == "talk.wav" and part.content_type == "audio/wav"
    form = fake.requests[0].form()
    assert [(p.name, p.data) for p in form if p.name in ("model", "language")] == [("model", b"whisper-1"),
                                                                                  ("language", b"en")]
    assert org_a.key.encode() not in fake.requests[0].body
    request_id = resp.headers["x-odock-request-id"]
    rec = await usage.by_request_id(org_a.org_id, request_id)
    assert (rec.endpoint, rec.model_name, rec.upstream_slug) == ("/v1/audio/transcriptions", "whisper-gw", "whisper-1")
    assert rec.audio_milliseconds == 3000 and rec.input_tokens == 0 and rec.output_tokens == 0
    assert rec.cost_picos == 3 * AUDIO_SECOND_PICOS


async def test_transcription_text_format_is_relayed_as_text(gateway: str, fake: FakeProvider, org_a: Surface) -> None:
    async with sdk(gateway, org_a.key) as client:
        text = await client.audio.transcriptions.create(model="whisper-gw", file=("a.wav", WAV),
                                                        response_format="text")
        srt = await client.audio.transcriptions.create(model="whisper-gw", file=("a.wav", WAV),
                                                       response_format="srt")
    assert isinstance(text, str) and text.strip().endswith(f"({len(WAV)} bytes)")
    assert isinstance(srt, str) and srt.startswith("1\n00:00:00,000 --> ")


async def test_transcription_stream_relayed_as_sse_and_metered_in_tokens(
        gateway: str, fake: FakeProvider, org_a: Surface, usage: UsageReader) -> None:
    fake.knobs.chunks = 4
    async with sdk(gateway, org_a.key) as client:
        stream = await client.audio.transcriptions.create(model="transcribe-gw", file=("a.wav", WAV), stream=True)
        events = [e async for e in stream]
    assert [e.type for e in events] == ["transcript.text.delta"] * 4 + ["transcript.text.done"]
    done = events[-1]
    assert done.type == "transcript.text.done" and done.usage is not None
    model_part = multipart.field(fake.requests[0].form(), "model")
    assert model_part is not None and model_part.data == b"gpt-4o-transcribe"
    (rec,) = await usage.wait(org_a.org_id, 1, lambda r: r.model_name == "transcribe-gw")
    assert rec.streamed and (rec.input_tokens, rec.output_tokens) == (done.usage.input_tokens, 4)
    assert rec.cost_picos == (rec.input_tokens * TOKEN_PRICES.input_per_mtok_micros
                              + 4 * TOKEN_PRICES.output_per_mtok_micros)
    assert rec.audio_milliseconds == 0


async def test_translation(gateway: str, fake: FakeProvider, org_a: Surface, usage: UsageReader) -> None:
    async with sdk(gateway, org_a.key) as client:
        with pytest.warns(DeprecationWarning):  # openai-python marks translations deprecated
            tl = await client.audio.translations.create(model="whisper-gw", file=("de.wav", WAV))
    assert tl.text.endswith(f"({len(WAV)} bytes)")
    assert _only(fake, "/v1/audio/translations").data == WAV
    (rec,) = await usage.wait(org_a.org_id, 1, lambda r: r.endpoint == "/v1/audio/translations")
    assert rec.model_name == "whisper-gw" and rec.upstream_slug == "whisper-1"


async def test_large_audio_keeps_every_byte(gateway: str, fake: FakeProvider, org_a: Surface) -> None:
    audio = os.urandom(BODY_LIMIT - 64 * 1024)
    async with sdk(gateway, org_a.key) as client:
        tr = await client.audio.transcriptions.create(model="whisper-gw", file=("big.mp3", audio, "audio/mpeg"))
    assert tr.text.endswith(f"({len(audio)} bytes)")
    assert _only(fake, "/v1/audio/transcriptions").data == audio


async def test_audio_over_the_body_limit_is_413_in_openai_shape(gateway: str, fake: FakeProvider,
                                                                org_a: Surface) -> None:
    body, ctype = multipart.build([("model", "whisper-gw"), ("file", ("big.wav", b"\0" * (BODY_LIMIT + 1),
                                                                      "audio/wav"))])
    async with raw(gateway) as http:
        resp = await http.post("/v1/audio/transcriptions", content=body,
                               headers={**auth(org_a.key), "Content-Type": ctype})
    assert resp.status_code == 413
    assert openai_error(resp)["code"] == "request_too_large"
    assert fake.requests == []


async def test_speech_bytes_identical_and_metered_in_characters(
        gateway: str, fake: FakeProvider, org_a: Surface, usage: UsageReader) -> None:
    fake.knobs.chunks = 5
    text = "Hello from the gateway, ünïcode counted in characters."
    async with sdk(gateway, org_a.key) as client:
        resp = await client.audio.speech.with_raw_response.create(model="tts-gw", voice="alloy", input=text,
                                                                  response_format="wav")
        audio = resp.content
    assert audio == b"".join(speech_chunks(text, "wav", 5))
    assert resp.headers["content-type"].startswith("audio/wav")
    upstream = fake.requests[0].json()
    assert upstream["model"] == "tts-1" and upstream["input"] == text
    rec = await usage.by_request_id(org_a.org_id, resp.headers["x-odock-request-id"])
    assert rec.endpoint == "/v1/audio/speech" and rec.input_characters == len(text) != len(text.encode())
    assert rec.cost_picos == len(text) * CHARACTER_PICOS and rec.input_tokens == 0


@pytest.mark.parametrize("fmt", ["mp3", "opus", "flac", "pcm"])
async def test_speech_any_format_streamed_incrementally(gateway: str, fake: FakeProvider, org_a: Surface,
                                                        fmt: str) -> None:
    fake.knobs.chunks = 4
    fake.knobs.hold_last = hold = asyncio.Event()
    received = b""
    async with raw(gateway) as http, http.stream(
            "POST", "/v1/audio/speech", headers=auth(org_a.key),
            json={"model": "tts-gw", "voice": "nova", "input": "stream me", "response_format": fmt}) as resp:
        assert resp.status_code == 200
        async for piece in resp.aiter_raw():
            if not received:
                # the client holds audio while the upstream still withholds its last chunk
                assert not fake.requests[0].complete
                hold.set()
            received += piece
    assert hold.is_set()
    assert received == b"".join(speech_chunks("stream me", fmt, 4))


async def test_speech_sse_metered_in_reported_tokens(gateway: str, fake: FakeProvider, org_a: Surface,
                                                     usage: UsageReader) -> None:
    fake.knobs.chunks = 3
    async with raw(gateway) as http:
        resp = await http.post("/v1/audio/speech", headers=auth(org_a.key), json={
            "model": "tts-sse-gw", "voice": "coral", "input": "hi", "stream_format": "sse"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["speech.audio.delta"] * 3 + ["speech.audio.done"]
    rec = await usage.by_request_id(org_a.org_id, resp.headers["x-odock-request-id"])
    assert (rec.input_tokens, rec.output_tokens) == (prompt_tokens_for(fake.requests[0].body), 3)
    assert rec.input_characters == 0 and rec.cost_picos == (rec.input_tokens * TOKEN_PRICES.input_per_mtok_micros
                                                            + 3 * TOKEN_PRICES.output_per_mtok_micros)


async def test_speech_client_gone_mid_stream_releases_the_upstream(gateway: str, fake: FakeProvider,
                                                                   org_a: Surface) -> None:
    fake.knobs.chunks = 4
    fake.knobs.hold_last = asyncio.Event()  # never set: the provider keeps the answer open
    async with raw(gateway) as http, http.stream(
            "POST", "/v1/audio/speech", headers=auth(org_a.key),
            json={"model": "tts-gw", "voice": "nova", "input": "long answer"}) as resp:
        assert resp.status_code == 200
        async for piece in resp.aiter_raw():
            assert piece
            break  # the client goes away after the first audio
    rec = fake.requests[0]
    await asyncio.wait_for(rec.finished.wait(), 10)
    assert rec.disconnected and not rec.complete
