"""How audio answers' usage reads (duration, tokens), the audio stream taps, speech's characters,
and that a binary (speech) stream is never scanned."""

from __future__ import annotations

import math

import pytest

from data_plane.payload import inspect_multipart
from data_plane.payload.multipart import form_flag
from data_plane.providers import endpoint_named
from data_plane.providers.openai import openai_usage
from data_plane.providers.openai_audio import (
    MAX_AUDIO_SECONDS,
    SPEECH_USAGE,
    TRANSCRIPTION_USAGE,
    audio_usage,
    duration_usage,
    speech_characters,
)
from data_plane.usage.meter import FLAG_MALFORMED, RequestMeter
from data_plane.usage.shapes import body_usage
from data_plane.usage.stream import make_tap
from data_plane.usage.tokens import MalformedUsage, Usage
from tests.fakes import multipart
from tests.fakes.reply import sse


def _meter(shape: object) -> RequestMeter:
    return RequestMeter(None, request_id="r", node_id="n", org_id="o", key_id="k", family=1,
                        endpoint="/v1/audio/speech", shape=shape)  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize(
    ("seconds", "ms"),
    [(0, 0), (3, 3000), (2.5, 2500), (0.0004, 0), (0.0005, 1), (1.2345, 1235), (61.9996, 62000),
     (MAX_AUDIO_SECONDS, MAX_AUDIO_SECONDS * 1000)],
)  # fmt: skip
def test_a_duration_is_milliseconds_of_audio_rounded_half_up(seconds: float, ms: int) -> None:
    assert duration_usage({"type": "duration", "seconds": seconds}) == Usage(audio_ms=ms)
    assert openai_usage({"type": "duration", "seconds": seconds}) == Usage(audio_ms=ms)


@pytest.mark.parametrize(
    "seconds", [-1, -0.001, math.nan, math.inf, MAX_AUDIO_SECONDS + 1, 10**30, True, "3", None, [3]]
)
def test_a_hostile_duration_is_malformed(seconds: object) -> None:
    with pytest.raises(MalformedUsage):
        duration_usage({"type": "duration", "seconds": seconds})


def test_audio_token_usage() -> None:
    raw = {"type": "tokens", "input_tokens": 14, "output_tokens": 45, "total_tokens": 59,
           "input_token_details": {"text_tokens": 0, "audio_tokens": 14}}  # fmt: skip
    assert audio_usage(raw) == Usage(input=14, output=45)
    assert audio_usage({"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}) == Usage(input=5, output=2)
    bad: object
    for bad in ({"type": "tokens"}, {"input_tokens": -1}, {"output_tokens": 1.5}, [], "x"):
        with pytest.raises(MalformedUsage):
            audio_usage(bad)


def test_transcription_bodies_json_and_plain_text() -> None:
    body = b'{"text":"hi","usage":{"type":"duration","seconds":7}}'
    assert body_usage(TRANSCRIPTION_USAGE, body) == Usage(audio_ms=7000)
    assert body_usage(TRANSCRIPTION_USAGE, b'{"text":"no usage (translations)"}') is None
    for text in (b"hello\n", b"1\n00:00:00,000 --> 00:00:01,000\nhi\n", b"WEBVTT\n\n", b""):
        assert body_usage(TRANSCRIPTION_USAGE, text) is None  # plain transcripts: nothing to read
    with pytest.raises(MalformedUsage):
        body_usage(TRANSCRIPTION_USAGE, b'{"text": "cut')


def test_the_transcript_tap_reads_the_done_event_only() -> None:
    meter = _meter(TRANSCRIPTION_USAGE)
    tap = make_tap(meter, is_sse=True, strip_injected=False)
    assert tap is not None
    delta = sse({"type": "transcript.text.delta", "delta": "says transcript.text.done out loud"})
    done = sse({"type": "transcript.text.done", "text": "x",
                "usage": {"type": "tokens", "input_tokens": 9, "output_tokens": 4, "total_tokens": 13}})  # fmt: skip
    assert tap.relay(delta) == delta and meter.usage is None
    assert tap.relay(done) == done
    assert meter.usage == Usage(input=9, output=4) and meter.flags == 0


def test_speech_sse_tokens_replace_the_characters_reported_first() -> None:
    meter = _meter(SPEECH_USAGE)
    units = speech_characters('{"model":"m","input":"héllo ✓","voice":"alloy"}'.encode())
    assert units == Usage(characters=7)
    meter.report(units, final=False)  # what NativeLeg.pass_on does with a 2xx
    tap = make_tap(meter, is_sse=True, strip_injected=False)
    assert tap is not None
    tap.relay(sse({"type": "speech.audio.delta", "audio": "AAAA"}))
    assert meter.usage == Usage(characters=7)
    tap.relay(
        sse(
            {
                "type": "speech.audio.done",
                "usage": {"input_tokens": 3, "output_tokens": 8, "total_tokens": 11},
            }
        )
    )
    assert meter.usage == Usage(input=3, output=8)
    tap.relay(sse({"type": "speech.audio.done", "usage": {"input_tokens": 1, "output_tokens": 1}}))
    assert meter.usage == Usage(input=3, output=8)  # a second final report is ignored (and flagged)
    bad = _meter(SPEECH_USAGE)
    bad_tap = make_tap(bad, is_sse=True, strip_injected=False)
    assert bad_tap is not None
    bad_tap.relay(sse({"type": "speech.audio.done", "usage": {"input_tokens": "many"}}))
    assert bad.flags & FLAG_MALFORMED


def test_binary_speech_streams_are_never_scanned() -> None:
    # An audio answer that happens to hold usage-looking bytes is relayed, never read.
    assert make_tap(_meter(SPEECH_USAGE), is_sse=False, strip_injected=False) is None
    assert endpoint_named("/v1/audio/speech").usage is SPEECH_USAGE
    assert endpoint_named("/v1/audio/speech").streams == "always"


def test_speech_characters_need_a_string_input() -> None:
    assert speech_characters(b'{"model":"m","input":["a"]}') is None
    assert speech_characters(b'{"model":"m"}') is None
    assert speech_characters(b"not json") is None
    assert speech_characters(b'{"model":"m","input":""}') == Usage(characters=0)
    assert speech_characters(b'{"model":"m","input":"\\ud83d\\ude00x"}') == Usage(characters=2)  # code points


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("True", True), ("false", False), ("1", False), ("truest", False)]
)
def test_a_form_stream_flag(value: str, expected: bool) -> None:
    body, ctype = multipart.build(
        [("model", "m"), ("stream", value), ("file", ("a.wav", b"RIFF", "audio/wav"))]
    )
    assert form_flag(body, inspect_multipart(body, ctype)) is expected
    plain, ctype = multipart.build([("model", "m")])
    assert form_flag(plain, inspect_multipart(plain, ctype)) is False
