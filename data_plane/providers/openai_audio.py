"""OpenAI's audio APIs: how transcriptions, translations and speech report what they bill.

- Transcriptions and translations answer ``usage: {"type": "duration", "seconds": S}``
  (whisper: billed by input audio) or ``{"type": "tokens", "input_tokens", ...}`` (the
  gpt-4o transcribe models); a streamed transcription puts it in its
  ``transcript.text.done`` event. Plain-text answers (``response_format`` text, srt, vtt)
  and whisper's translations carry no usage at all: for a model priced per second the gateway
  measures the uploaded file instead (``audio_duration.py``), replaced by any reported usage.
- Speech answers audio bytes (any ``response_format``), relayed as they come and never
  scanned: it is billed by the characters of the request's ``input``, unless the answer
  reports tokens (``stream_format: "sse"``: usage in the ``speech.audio.done`` event).

``openai.py`` builds the endpoints with these shapes; nothing here imports it.
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec

from data_plane.usage.shapes import Shape, usage_member
from data_plane.usage.stream import SseTap, event_fields
from data_plane.usage.tokens import MalformedUsage, Usage, as_object, count, details, make_usage

# Far beyond any file OpenAI accepts (25 MB is hours at most): a larger duration is not a real report.
MAX_AUDIO_SECONDS = 10_000_000


def duration_usage(raw: object) -> Usage:
    """``{"type": "duration", "seconds": S}`` -> milliseconds of input audio (S a JSON number, rounded half up)."""
    seconds = as_object(raw).get("seconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        raise MalformedUsage("seconds: not a duration")
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_AUDIO_SECONDS):
        raise MalformedUsage("seconds: not a duration")
    return Usage(audio_ms=math.floor(seconds * 1000 + 0.5))


def audio_usage(raw: object) -> Usage | None:
    """An audio answer's usage: a duration, or tokens (``input_token_details`` is how audio spells them)."""
    u = as_object(raw)
    if u.get("type") == "duration":
        return duration_usage(u)
    if "input_tokens" in u or "output_tokens" in u:
        # Audio's details hold audio/text splits (no cached part); a Responses-style
        # input_tokens_details would carry cached_tokens, read like everywhere else.
        return make_usage(
            input=count(u, "input_tokens"),
            output=count(u, "output_tokens"),
            cached=details(u, "input_tokens_details", "cached_tokens"),
        )
    if "total_tokens" in u:
        return make_usage(input=count(u, "total_tokens"))
    raise MalformedUsage("no token counts or duration in usage")


def _body(read: Any) -> Any:
    member = usage_member(read)

    def body(data: bytes) -> Usage | None:
        # text, srt and vtt transcripts are not JSON and carry no usage: nothing to read.
        if not data.lstrip(b" \t\r\n").startswith(b"{"):
            return None
        return member(data)

    return body


class _Done(msgspec.Struct):
    type: Any = None
    usage: Any = None


_DONE = msgspec.json.Decoder(_Done)


class _DoneTap(SseTap):
    """A stream whose one ``done`` event (``done_type``) carries the usage."""

    done_type: str = ""

    def _read(self, event: bytes, raw: bytes) -> bytes:
        _, data = event_fields(event)
        done = _DONE.decode(data)
        if done.type == self.done_type:
            self._meter.report(None if done.usage is None else audio_usage(done.usage), final=True)
        return raw


class TranscriptTap(_DoneTap):
    """``stream=true`` transcriptions: usage in ``transcript.text.done``."""

    candidate = re.compile(rb"transcript\.text\.done")
    done_type = "transcript.text.done"


class SpeechTap(_DoneTap):
    """``stream_format: "sse"`` speech: usage in ``speech.audio.done`` (the deltas are never decoded)."""

    candidate = re.compile(rb"speech\.audio\.done")
    done_type = "speech.audio.done"


class _SpeechInput(msgspec.Struct):
    input: Any = None


_SPEECH_INPUT = msgspec.json.Decoder(_SpeechInput)


def speech_characters(body: bytes) -> Usage | None:
    """A speech request's billed characters (code points of its string ``input``), else None.

    A second decode of a body already validated, for speech only (every other member skipped at
    C speed), so the chat path's inspection carries nothing for it.
    """
    try:
        text = _SPEECH_INPUT.decode(body).input
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return Usage(characters=len(text)) if type(text) is str else None


TRANSCRIPTION_USAGE = Shape(
    "openai_transcription", body=_body(audio_usage), value=audio_usage, sse_tap=TranscriptTap, measures_audio=True
)
SPEECH_USAGE = Shape("openai_speech", sse_tap=SpeechTap, binary_streams=True, request_units=speech_characters)
