"""OpenAI's audio and moderation endpoints through the gateway with the official openai SDK: the
model form field / JSON member rewritten to the upstream slug, the file bytes exact, speech bytes
streamed through as they come, and each record carrying the unit the provider bills
(audio milliseconds, characters or tokens) at the model's price."""

from __future__ import annotations

import asyncio
import base64
import json
import os

import httpx
import openai
import pytest

from odock.v1 import keys_pb2
from tests.data_plane.audio.conftest import AUDIO_MODELS, MAX_BODY, MAX_BUFFERED, AudioOrg
from tests.data_plane.usage.stack import UsageQueries
from tests.fakes import multipart
from tests.fakes.openai_audio import SPEECH_CHUNK_BYTES, SPEECH_FORMATS, audio_seconds, speech_chunks
from tests.fakes.provider import FakeProvider, prompt_tokens_for
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioner

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

WAV = b"RIFF\x24\x10\x00\x00WAVEfmt " + bytes(range(256)) * 10 + b"\r\n--not-a-boundary\r\n"
REQUEST_ID = "x-odock-request-id"


def _client(dp: DataPlaneProcess, org: AudioOrg) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=org.key, base_url=dp.url + "/v1", max_retries=0, timeout=60)


def _pricing(name: str) -> tuple[int, int, int, int]:
    p = AUDIO_MODELS[name][2]
    return (p.per_million_audio_seconds_micros, p.per_million_characters_micros, p.input_per_mtok_micros,
            p.output_per_mtok_micros)  # fmt: skip


def _sent_file(fake: FakeProvider, name: str = "file") -> bytes:
    part = multipart.field(fake.last().form(), name)
    assert part is not None
    return part.data


async def test_transcription_json_rewrites_the_model_keeps_the_file_and_meters_seconds(
    dp: DataPlaneProcess, org: AudioOrg, fresh: FakeProvider, queries: UsageQueries
) -> None:
    async with _client(dp, org) as client:
        raw = await client.audio.transcriptions.with_raw_response.create(
            model="whisper", file=("a.wav", WAV, "audio/wav"), language="en"
        )
    result = raw.parse()
    assert result.text.endswith(f"({len(WAV)} bytes)")
    rec = fresh.last()
    assert rec.native_path == "/v1/audio/transcriptions"
    assert multipart.field(rec.form(), "model").data == b"whisper-1-upstream"  # type: ignore[union-attr]
    assert multipart.field(rec.form(), "language").data == b"en"  # type: ignore[union-attr]
    assert _sent_file(fresh) == WAV  # byte for byte, CRLF and boundary-like text included
    record = await queries.record(raw.headers[REQUEST_ID])
    seconds = audio_seconds(WAV)
    per_second = _pricing("whisper")[0]
    assert (record.model_name, record.endpoint, record.http_status) == (
        "whisper",
        "/v1/audio/transcriptions",
        200,
    )
    assert record.audio_milliseconds == seconds * 1000 and record.input_tokens == 0 and record.flags == 0
    assert record.cost_picos == seconds * 1000 * per_second // 1000 and record.cost_picos > 0


async def test_transcription_formats_verbose_json_and_text(
    dp: DataPlaneProcess, org: AudioOrg, fresh: FakeProvider, queries: UsageQueries
) -> None:
    async with _client(dp, org) as client:
        verbose = await client.audio.transcriptions.with_raw_response.create(
            model="whisper", file=("a.wav", WAV, "audio/wav"), response_format="verbose_json",
            timestamp_granularities=["segment"],
        )  # fmt: skip
        text = await client.audio.transcriptions.with_raw_response.create(
            model="whisper", file=("a.wav", WAV, "audio/wav"), response_format="text"
        )
    parsed = verbose.parse()
    assert parsed.duration == float(audio_seconds(WAV)) and parsed.segments
    assert text.parse().endswith(f"({len(WAV)} bytes)\n") and text.headers["content-type"].startswith(
        "text/plain"
    )
    with_usage = await queries.record(verbose.headers[REQUEST_ID])
    plain = await queries.record(text.headers[REQUEST_ID])
    assert with_usage.audio_milliseconds == audio_seconds(WAV) * 1000
    # A plain-text transcript carries no usage: no units, and not a malformed report either.
    assert (plain.audio_milliseconds, plain.input_tokens, plain.flags, plain.http_status) == (0, 0, 0, 200)


async def test_transcription_stream_is_relayed_as_sse_and_meters_its_tokens(
    dp: DataPlaneProcess, org: AudioOrg, fresh: FakeProvider, queries: UsageQueries
) -> None:
    async with _client(dp, org) as client:
        raw = await client.audio.transcriptions.with_raw_response.create(
            model="transcribe", file=("a.wav", WAV, "audio/wav"), stream=True
        )
        events = [event async for event in raw.parse()]
    assert [e.type for e in events] == ["transcript.text.delta"] * 3 + ["transcript.text.done"]
    assert "".join(e.delta for e in events[:-1]) == "piece0 piece1 piece2 "  # type: ignore[union-attr]
    sent = fresh.last()
    assert multipart.field(sent.form(), "model").data == b"gpt-4o-transcribe-upstream"  # type: ignore[union-attr]
    record = await queries.record(raw.headers[REQUEST_ID])
    _, _, per_in, per_out = _pricing("transcribe")
    prompt = prompt_tokens_for(sent.body)
    assert (record.input_tokens, record.output_tokens, record.audio_milliseconds) == (prompt, 3, 0)
    assert record.streamed and record.flags == 0
    assert record.cost_picos == prompt * per_in + 3 * per_out


async def test_translation(
    dp: DataPlaneProcess, org: AudioOrg, fresh: FakeProvider, queries: UsageQueries
) -> None:
    # The SDK marks translations deprecated (OpenAI shuts them down in 2027); they are served until then.
    async with _client(dp, org) as client:
        with pytest.warns(DeprecationWarning):
            raw = await client.audio.translations.with_raw_response.create(
                model="whisper", file=("a.wav", WAV, "audio/wav"), prompt="Translate, please."
            )
    assert raw.parse().text.endswith(f"({len(WAV)} bytes)")
    assert fresh.last().native_path == "/v1/audio/translations" and _sent_file(fresh) == WAV
    record = await queries.record(raw.headers[REQUEST_ID])
    # Translations report no usage (OpenAI's shape): a record without units.
    assert (record.endpoint, record.model_name, record.audio_milliseconds, record.flags) == (
        "/v1/audio/translations", "whisper", 0, 0)  # fmt: skip


@pytest.mark.parametrize("fmt", sorted(SPEECH_FORMATS))
async def test_speech_bytes_are_identical_in_every_format_and_billed_by_characters(
    dp: DataPlaneProcess, org: AudioOrg, fresh: FakeProvider, queries: UsageQueries, fmt: str
) -> None:
    text = "Héllo wörld — ünïcode ✓"  # characters, not bytes, are billed
    async with _client(dp, org) as client:
        raw = await client.audio.speech.with_raw_response.create(
            model="tts",
            input=text,
            voice="alloy",
            response_format=fmt,  # type: ignore[arg-type]
        )
    assert raw.content == b"".join(speech_chunks(text, fmt, 3))
    assert raw.headers["content-type"] == SPEECH_FORMATS[fmt]
    assert json.loads(fresh.last().body)["model"] == "tts-1"
    record = await queries.record(raw.headers[REQUEST_ID])
    per_char = _pricing("tts")[1]
    assert len(text) != len(text.encode())
    assert (record.input_characters, record.input_tokens, record.flags) == (len(text), 0, 0)
    assert record.streamed and record.cost_picos == len(text) * per_char


async def test_speech_is_streamed_to_the_client_as_it_arrives(
    dp: DataPlaneProcess, org: AudioOrg, fresh: FakeProvider, queries: UsageQueries
) -> None:
    text = "Stream me"
    fresh.knobs.chunks = 4
    fresh.knobs.hold_last = hold = asyncio.Event()
    expected = b"".join(speech_chunks(text, "mp3", 4))
    got = bytearray()
    async with (
        _client(dp, org) as client,
        client.audio.speech.with_streaming_response.create(model="tts", input=text, voice="nova") as response,
    ):
        stream = response.iter_bytes()
        async with asyncio.timeout(10):
            # Three of four chunks were sent; the last is held upstream until the client has them.
            while len(got) < 3 * SPEECH_CHUNK_BYTES - 64:
                got += await anext(stream)
        assert not fresh.last().complete
        hold.set()
        async for chunk in stream:
            got += chunk
        request_id = response.headers[REQUEST_ID]
    assert bytes(got) == expected
    record = await queries.record(request_id)
    assert record.input_characters == len(text) and record.http_status == 200


async def test_a_long_speech_answer_is_never_held_whole(
    dp: DataPlaneProcess, org: AudioOrg, fresh: FakeProvider, queries: UsageQueries
) -> None:
    text = "A long story. " * 200
    fresh.knobs.chunks = 200  # 200 KiB of audio; the node would hold at most MAX_BUFFERED bytes of an answer
    async with _client(dp, org) as client:
        raw = await client.audio.speech.with_raw_response.create(model="tts", input=text, voice="echo",
                                                                 response_format="wav")  # fmt: skip
    assert len(raw.content) == 200 * SPEECH_CHUNK_BYTES > 10 * MAX_BUFFERED
    assert raw.content == b"".join(speech_chunks(text, "wav", 200))
    record = await queries.record(raw.headers[REQUEST_ID])
    assert (record.http_status, record.input_characters, record.flags) == (200, len(text), 0)


async def test_speech_sse_reports_tokens_which_replace_characters(
    dp: DataPlaneProcess, org: AudioOrg, fresh: FakeProvider, queries: UsageQueries
) -> None:
    text = "Say it in events"
    async with _client(dp, org) as client:
        raw = await client.audio.speech.with_raw_response.create(
            model="tts-tokens", input=text, voice="coral", stream_format="sse"
        )
    lines = [json.loads(line[6:]) for line in raw.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in lines] == ["speech.audio.delta"] * 3 + ["speech.audio.done"]
    assert b"".join(base64.b64decode(e["audio"]) for e in lines[:-1]) == b"".join(
        speech_chunks(text, "mp3", 3)
    )
    sent = fresh.last()
    record = await queries.record(raw.headers[REQUEST_ID])
    _, _, per_in, per_out = _pricing("tts-tokens")
    prompt = prompt_tokens_for(sent.body)
    assert lines[-1]["usage"]["input_tokens"] == prompt
    assert (record.input_tokens, record.output_tokens, record.input_characters) == (prompt, 3, 0)
    assert record.cost_picos == prompt * per_in + 3 * per_out and record.flags == 0


async def test_speech_refused_upstream_bills_nothing(
    dp: DataPlaneProcess, org: AudioOrg, fresh: FakeProvider, queries: UsageQueries
) -> None:
    async with _client(dp, org) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.audio.speech.create(model="tts", input="x" * 4097, voice="alloy")
    assert "maximum length 4096" in caught.value.message
    record = await queries.record(caught.value.response.headers[REQUEST_ID])
    assert (record.http_status, record.input_characters, record.cost_picos) == (400, 0, 0)


async def test_moderations_is_metered_as_a_request(
    dp: DataPlaneProcess, org: AudioOrg, fresh: FakeProvider, queries: UsageQueries
) -> None:
    async with _client(dp, org) as client:
        named = await client.moderations.with_raw_response.create(
            model="moderation", input=["hello", "kill it"]
        )
        default = await client.moderations.with_raw_response.create(input="hello")  # the org's default model
    result = named.parse()
    assert [r.flagged for r in result.results] == [False, True]
    assert default.parse().results[0].flagged is False
    assert json.loads(fresh.last().body)["model"] == "omni-moderation-latest-upstream"
    for raw in (named, default):
        record = await queries.record(raw.headers[REQUEST_ID])
        assert (record.endpoint, record.model_name, record.http_status, record.flags) == (
            "/v1/moderations", "moderation", 200, 0)  # fmt: skip


async def test_a_25_mb_audio_file_goes_through_intact_and_a_body_over_the_limit_is_a_413(
    dp: DataPlaneProcess, org: AudioOrg, fresh: FakeProvider
) -> None:
    big = os.urandom(25 * 1000 * 1000)
    async with _client(dp, org) as client:
        result = await client.audio.transcriptions.create(
            model="whisper", file=("big.mp3", big, "audio/mpeg")
        )
        assert result.text.endswith(f"({len(big)} bytes)")
        assert _sent_file(fresh) == big
        fresh.reset()
        too_big = os.urandom(MAX_BODY + 1)
        with pytest.raises(openai.APIStatusError) as caught:
            await client.audio.transcriptions.create(
                model="whisper", file=("huge.mp3", too_big, "audio/mpeg")
            )
    assert caught.value.status_code == 413
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "request_too_large"
    assert error["type"] == "invalid_request_error"
    assert fresh.requests == []


async def test_audio_errors_keep_openai_shape_and_governance(
    dp: DataPlaneProcess, org: AudioOrg, fresh: FakeProvider
) -> None:
    async with _client(dp, org) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            await client.audio.speech.create(model="no-such-tts", input="x", voice="alloy")
        with pytest.raises(openai.BadRequestError) as family:
            await client.audio.transcriptions.create(model="llama", file=("a.wav", WAV, "audio/wav"))
    assert missing.value.code == "model_not_found"
    assert family.value.code == "provider_not_allowed"
    assert fresh.requests == []
    form, ctype = multipart.build([("file", ("a.wav", WAV, "audio/wav"))])
    async with httpx.AsyncClient(base_url=dp.url, timeout=10) as http:
        bad = await http.post("/v1/audio/speech", headers={"Authorization": "Bearer sk-wrong"}, json={})
        # No model field and no default model for the endpoint: OpenAI's shape, saying what to do.
        no_model = await http.post(
            "/v1/audio/transcriptions",
            content=form,
            headers={"Authorization": f"Bearer {org.key}", "Content-Type": ctype},
        )
    assert bad.status_code == 401 and bad.json()["error"]["type"] == "authentication_error"
    assert no_model.status_code == 400 and no_model.json()["error"]["code"] == "missing_model"
    assert no_model.json()["error"]["param"] == "model"


async def test_an_audio_upload_reserves_no_tokens_for_its_bytes(
    dp: DataPlaneProcess, org: AudioOrg, fresh: FakeProvider, cp: ControlPlaneProcess
) -> None:
    # 300 KB of audio would be an estimate of 100,000 input tokens if its bytes counted as text:
    # over this key's 50,000 tokens a minute, so every transcription would be refused.
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        row = keys_pb2.VirtualKey(org_id=org.org_id, name="tpm-key", all_models=True)
        row.limits.tokens_per_minute = 50_000
        created = await admin.keys.CreateVirtualKey(
            keys_pb2.CreateVirtualKeyRequest(key=row), metadata=admin.metadata
        )
    audio = os.urandom(300_000)
    async with openai.AsyncOpenAI(api_key=created.secret, base_url=dp.url + "/v1", max_retries=0) as client:
        for _ in range(2):
            result = await client.audio.transcriptions.create(
                model="whisper", file=("a.mp3", audio, "audio/mpeg")
            )
            assert result.text.endswith("(300000 bytes)")
        # Text still counts: a speech input far over the minute's tokens is refused before the upstream.
        fresh.reset()
        with pytest.raises(openai.RateLimitError):
            await client.audio.speech.create(model="tts", input="x" * 200_000, voice="alloy")
    assert fresh.requests == []


async def test_a_stream_request_answered_with_json_is_still_metered(
    dp: DataPlaneProcess, org: AudioOrg, fresh: FakeProvider, queries: UsageQueries
) -> None:
    # whisper ignores stream=true (OpenAI's documented behaviour) and answers JSON: relayed as it
    # comes, its usage read from the streamed body.
    form, ctype = multipart.build(
        [("model", "whisper"), ("stream", "true"), ("file", ("a.wav", WAV, "audio/wav"))]
    )
    async with httpx.AsyncClient(base_url=dp.url, timeout=30) as http:
        resp = await http.post(
            "/v1/audio/transcriptions",
            content=form,
            headers={"Authorization": f"Bearer {org.key}", "Content-Type": ctype},
        )
    assert resp.status_code == 200 and resp.json()["usage"] == {
        "type": "duration",
        "seconds": audio_seconds(WAV),
    }
    record = await queries.record(resp.headers[REQUEST_ID])
    assert record.streamed and record.audio_milliseconds == audio_seconds(WAV) * 1000 and record.flags == 0
