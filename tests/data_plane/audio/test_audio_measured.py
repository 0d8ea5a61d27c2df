"""Audio billed by the second whose answer does not say how long it was: the gateway measures the file.

Whisper's translations and its text / srt / vtt transcripts carry no usage; without a measure a
model priced per second of audio would be used for free. The provider's own report, when one
comes (JSON transcripts), replaces the gateway's measure.
"""

from __future__ import annotations

import io
import math
import wave

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.providers.audio_duration import duration_seconds
from tests.data_plane.audio.conftest import AUDIO_MODELS, AudioOrg
from tests.data_plane.usage.stack import UsageQueries
from tests.fakes.openai_audio import audio_seconds
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess

REQUEST_ID = "x-odock-request-id"


def _wav(seconds: float, rate: int = 16_000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x01\x00" * round(seconds * rate))
    return buf.getvalue()


# MPEG-1 Layer III, 128 kb/s, 44.1 kHz, no padding: 417-byte frames of 1152 samples, no Xing header,
# so the duration comes from scanning the frames.
_MP3_FRAME = b"\xff\xfb\x90\x00" + bytes(413)
MP3 = _MP3_FRAME * 383
MP3_MS = math.floor(383 * 1152 / 44_100 * 1000 + 0.5)  # 10005 ms by frames; mutagen's estimate below
WAV = _wav(2.5)


def _cost(ms: int) -> int:
    per_second = AUDIO_MODELS["whisper"][2].per_million_audio_seconds_micros
    return (ms * per_second * 2 + 1000) // 2000  # ms * price / 1000, half up


def _client(dp: DataPlaneProcess, org: AudioOrg) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=org.key, base_url=dp.url + "/v1", max_retries=0, timeout=60)


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_a_translation_is_billed_by_the_measured_length_of_its_file(
    dp: DataPlaneProcess, org: AudioOrg, fresh: FakeProvider, queries: UsageQueries
) -> None:
    async with _client(dp, org) as client:
        with pytest.warns(DeprecationWarning):
            raw = await client.audio.translations.with_raw_response.create(
                model="whisper", file=("a.wav", WAV, "audio/wav")
            )
    record = await queries.record(raw.headers[REQUEST_ID])
    assert (record.audio_milliseconds, record.flags, record.http_status) == (2500, 0, 200)
    assert record.cost_picos == _cost(2500) > 0


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_a_text_transcript_is_billed_by_the_measured_length_and_a_json_one_by_the_report(
    dp: DataPlaneProcess, org: AudioOrg, fresh: FakeProvider, queries: UsageQueries
) -> None:
    async with _client(dp, org) as client:
        text = await client.audio.transcriptions.with_raw_response.create(
            model="whisper", file=("a.mp3", MP3, "audio/mpeg"), response_format="srt"
        )
        reported = await client.audio.transcriptions.with_raw_response.create(
            model="whisper", file=("a.wav", WAV, "audio/wav")
        )
    measured = duration_seconds(MP3)
    assert measured is not None and abs(measured * 1000 - MP3_MS) < 50
    plain = await queries.record(text.headers[REQUEST_ID])
    assert plain.audio_milliseconds == math.floor(measured * 1000 + 0.5)
    assert plain.cost_picos == _cost(plain.audio_milliseconds)
    # The fake reports its own duration (one second per started 1000 bytes), not the file's 2.5 s.
    json_record = await queries.record(reported.headers[REQUEST_ID])
    assert json_record.audio_milliseconds == audio_seconds(WAV) * 1000 != 2500


def test_files_that_cannot_be_measured_bill_nothing() -> None:
    assert duration_seconds(b"") is None
    assert duration_seconds(b"RIFF\x24\x10\x00\x00WAVEfmt " + bytes(range(256)) * 10) is None

    def slow_wav(frames: int) -> bytes:  # one byte per second of "audio"
        buf = io.BytesIO()
        with wave.open(buf, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(1)
            out.setframerate(1)
            out.writeframes(b"\x80" * frames)
        return buf.getvalue()

    assert duration_seconds(slow_wav(1000)) == 1000.0
    assert duration_seconds(slow_wav(10_000_001)) is None  # longer than any real upload: a lying header


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096), st.sampled_from([b"", b"RIFF", b"ID3", b"fLaC", b"OggS", b"\xff\xfb\x90\x00"]))
def test_hostile_bytes_never_raise(data: bytes, magic: bytes) -> None:
    seconds = duration_seconds(magic + data)
    assert seconds is None or 0 < seconds <= 10_000_000
