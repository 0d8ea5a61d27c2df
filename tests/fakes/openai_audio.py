"""OpenAI audio (transcriptions, translations, speech) and moderations, validated like the real API.

Shapes follow OpenAI's API reference and openai-python's types (``Transcription``,
``TranscriptionVerbose``, ``TranscriptionTextDeltaEvent``/``DoneEvent``, ``ModerationCreateResponse``).
Deterministic so tests can compute what must arrive: :func:`audio_seconds` (billed duration of an
uploaded file), :func:`speech_chunks` (the audio bytes speech answers, one element per streamed chunk;
``Knobs.chunks`` sets their number, ``Knobs.chunk_delay`` the pause between them and ``Knobs.hold_last``
holds the last one, so a test can prove the gateway relays them as they come).
"""

from __future__ import annotations

import base64
import hashlib
import math
from typing import Any

from tests.fakes.errors import native_error
from tests.fakes.multipart import field
from tests.fakes.reply import Ask, JsonReply, StreamReply, sse

TOKEN_TRANSCRIBE = ("gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-transcribe-diarize")
TEXT_FORMATS = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}
SPEECH_FORMATS = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac", "flac": "audio/flac",
                  "wav": "audio/wav", "pcm": "audio/pcm"}
VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
                    "verse", "marin", "cedar"})
MAX_SPEECH_INPUT = 4096
SPEECH_CHUNK_BYTES = 1024
MODERATION_MODEL = "omni-moderation-2024-09-26"
CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
              "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
              "violence/graphic")
_IMAGE_CATEGORIES = frozenset({"self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "violence",
                               "violence/graphic"})
FLAG_WORD = "kill"  # text containing it is flagged for violence


class RawReply(JsonReply):
    """A non-JSON body (plain-text transcripts)."""

    def encode(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else str(self.body).encode("utf-8")


def invalid(message: str, param: str | None = None, status: int = 400) -> JsonReply:
    """OpenAI's invalid_request_error."""
    body = native_error("openai", status, message)
    body["error"]["param"] = param
    body["error"]["code"] = None
    return JsonReply(body, status=status)


def audio_seconds(data: bytes) -> int:
    """The fake's billed duration of an uploaded audio file: one second per started 1000 bytes."""
    return max(1, math.ceil(len(data) / 1000))


def _form_text(ask: Ask, name: str) -> str | None:
    part = field(ask.form, name)
    return part.data.decode("utf-8", "replace") if part is not None else None


def transcriptions(ask: Ask) -> JsonReply | StreamReply:
    """POST /v1/audio/transcriptions."""
    return _audio(ask, translate=False)


def translations(ask: Ask) -> JsonReply | StreamReply:
    """POST /v1/audio/translations (whisper-1 only, into English, never streamed)."""
    return _audio(ask, translate=True)


def _audio(ask: Ask, *, translate: bool) -> JsonReply | StreamReply:
    if not ask.form:
        return invalid("Invalid Content-Type header (expected multipart/form-data).")
    file_part = field(ask.form, "file")
    if file_part is None or file_part.filename is None:
        return invalid("Missing required parameter: 'file'.", "file")
    if not ask.model:
        return invalid("Missing required parameter: 'model'.", "model")
    if not file_part.data:
        return invalid("Audio file is empty.", "file")
    fmt = _form_text(ask, "response_format") or "json"
    tokens = ask.model.startswith(TOKEN_TRANSCRIBE)
    if translate and tokens:
        return invalid(f"Model '{ask.model}' is not supported for translations.", "model")
    allowed = ("json", "text") if tokens else ("json", "text", "srt", "verbose_json", "vtt")
    if fmt not in allowed:
        return invalid(f"response_format '{fmt}' is not compatible with model '{ask.model}'.", "response_format")
    size = len(file_part.data)
    text = f"{ask.text}({size} bytes)"
    seconds = audio_seconds(file_part.data)
    # whisper-1 ignores stream=true (OpenAI: "streaming is not supported for whisper-1 and will be ignored")
    if _form_text(ask, "stream") == "true" and tokens and not translate:
        return _transcript_stream(ask, text)
    usage: dict[str, Any] = _token_usage(ask) if tokens else {"type": "duration", "seconds": seconds}
    if fmt == "json":
        return JsonReply({"text": text, "usage": usage} if not translate else {"text": text})
    if fmt == "verbose_json":
        segment = {"id": 0, "seek": 0, "start": 0.0, "end": float(seconds), "text": text,
                   "tokens": [50364, 1000, 50414], "temperature": 0.0, "avg_logprob": -0.25,
                   "compression_ratio": 1.0, "no_speech_prob": 0.01}
        verbose: dict[str, Any] = {"task": "translate" if translate else "transcribe",
                                   "language": "english", "duration": float(seconds), "text": text,
                                   "segments": [segment]}
        if not translate:
            verbose["usage"] = usage
        return JsonReply(verbose)
    if fmt == "text":
        return RawReply(text + "\n", content_type="text/plain")
    stamp = "00:00:00,000 --> 00:00:0" if fmt == "srt" else "00:00:00.000 --> 00:00:0"
    end = f"{min(seconds, 9)},000" if fmt == "srt" else f"{min(seconds, 9)}.000"
    head = "1\n" if fmt == "srt" else "WEBVTT\n\n"
    return RawReply(f"{head}{stamp}{end}\n{text}\n\n", content_type=TEXT_FORMATS[fmt])


def _token_usage(ask: Ask) -> dict[str, Any]:
    return {"type": "tokens", "input_tokens": ask.prompt_tokens, "output_tokens": ask.completion_tokens,
            "total_tokens": ask.total_tokens,
            "input_token_details": {"audio_tokens": ask.prompt_tokens, "text_tokens": 0}}


def _transcript_stream(ask: Ask, text: str) -> StreamReply:
    frames = [sse({"type": "transcript.text.delta", "delta": piece}) for piece in ask.pieces]
    last = len(frames) - 1
    frames.append(sse({"type": "transcript.text.done", "text": text, "usage": _token_usage(ask)}))
    return StreamReply(frames, last)


def speech_chunks(text: str, response_format: str = "mp3", chunks: int = 3) -> list[bytes]:
    """The audio speech answers for ``text``: ``chunks`` pieces of SPEECH_CHUNK_BYTES each."""
    out: list[bytes] = []
    for i in range(max(1, chunks)):
        seed = hashlib.sha256(f"{response_format}:{i}:{text}".encode()).digest()
        piece = (seed * (SPEECH_CHUNK_BYTES // len(seed) + 1))[:SPEECH_CHUNK_BYTES]
        out.append((response_format.upper().encode() + b"\x00" + piece)[:SPEECH_CHUNK_BYTES] if i == 0 else piece)
    return out


def speech(ask: Ask) -> JsonReply | StreamReply:
    """POST /v1/audio/speech: audio bytes in chunks, or SSE ``speech.audio.delta``/``done`` events."""
    p = ask.payload
    if not ask.model:
        return invalid("Missing required parameter: 'model'.", "model")
    text = p.get("input")
    if not isinstance(text, str):
        return invalid("Missing required parameter: 'input'.", "input")
    if len(text) > MAX_SPEECH_INPUT:
        return invalid(f"Invalid 'input': string too long. Expected a string with maximum length "
                       f"{MAX_SPEECH_INPUT}, but got a string with length {len(text)} instead.", "input")
    voice = p.get("voice")
    if voice is None:
        return invalid("Missing required parameter: 'voice'.", "voice")
    if not (voice in VOICES if isinstance(voice, str) else isinstance(voice, dict) and isinstance(voice.get("id"), str)):
        return invalid(f"Invalid 'voice': '{str(voice)[:64]}'. Supported values are: {', '.join(sorted(VOICES))}.",
                       "voice")
    fmt = p.get("response_format", "mp3")
    if fmt not in SPEECH_FORMATS:
        return invalid(f"Invalid value: '{str(fmt)[:64]}'. Supported values are: "
                       f"{', '.join(SPEECH_FORMATS)}.", "response_format")
    speed = p.get("speed", 1.0)
    if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
        return invalid("Invalid 'speed': expected a number between 0.25 and 4.0.", "speed")
    stream_format = p.get("stream_format", "audio")
    if stream_format not in ("audio", "sse"):
        return invalid(f"Invalid value: '{str(stream_format)[:64]}'. Supported values are: 'sse' and 'audio'.",
                       "stream_format")
    chunks = speech_chunks(text, fmt, len(ask.pieces))
    if stream_format == "audio":
        return StreamReply(chunks, len(chunks) - 1, content_type=SPEECH_FORMATS[fmt])
    if ask.model in ("tts-1", "tts-1-hd"):
        return invalid(f"stream_format 'sse' is not supported for model '{ask.model}'.", "stream_format")
    frames = [sse({"type": "speech.audio.delta", "audio": base64.b64encode(c).decode("ascii")}) for c in chunks]
    usage = {"input_tokens": ask.prompt_tokens, "output_tokens": len(chunks),
             "total_tokens": ask.prompt_tokens + len(chunks)}
    frames.append(sse({"type": "speech.audio.done", "usage": usage}))
    return StreamReply(frames, len(frames) - 2)


def moderations(ask: Ask) -> JsonReply:
    """POST /v1/moderations: one result per string (a multimodal array is one result)."""
    p = ask.payload
    model = p.get("model", "omni-moderation-latest")
    if not isinstance(model, str):
        return invalid("Invalid type for 'model': expected a string.", "model")
    raw = p.get("input")
    if raw is None:
        return invalid("Missing required parameter: 'input'.", "input")
    items: list[list[tuple[str, str]]]  # per result: (kind, text) pieces
    if isinstance(raw, str):
        items = [[("text", raw)]]
    elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        items = [[("text", x)] for x in raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, dict) for x in raw):
        pieces = [_multimodal(x) for x in raw]
        if any(kind is None for kind, _ in pieces):
            return invalid("Invalid 'input': each item must be {type: 'text', text} or "
                           "{type: 'image_url', image_url: {url}}.", "input")
        if not model.startswith("omni-") and any(kind == "image" for kind, _ in pieces):
            return invalid(f"Model '{model}' does not support image inputs.", "input")
        items = [[(str(kind), text) for kind, text in pieces]]
    else:
        return invalid("Invalid 'input': expected a string, an array of strings or an array of "
                       "multi-modal inputs.", "input")
    resolved = MODERATION_MODEL if model.startswith("omni-") else "text-moderation-007"
    digest = hashlib.sha256(ask.body).hexdigest()[:24]
    return JsonReply({"id": f"modr-{digest}", "model": resolved, "results": [_result(i) for i in items]})


def _multimodal(item: dict[str, Any]) -> tuple[str | None, str]:
    if item.get("type") == "text" and isinstance(item.get("text"), str):
        return "text", item["text"]
    image = item.get("image_url")
    if item.get("type") == "image_url" and isinstance(image, dict) and isinstance(image.get("url"), str):
        return "image", ""
    return None, ""


def _result(pieces: list[tuple[str, str]]) -> dict[str, Any]:
    flagged = any(FLAG_WORD in text.lower() for _, text in pieces)
    kinds = {kind for kind, _ in pieces}
    categories = {c: flagged and c == "violence" for c in CATEGORIES}
    scores = {c: (0.91 if categories[c] else 0.0001) for c in CATEGORIES}
    applied = {c: sorted(k for k in kinds if k == "text" or c in _IMAGE_CATEGORIES) for c in CATEGORIES}
    return {"flagged": flagged, "categories": categories, "category_scores": scores,
            "category_applied_input_types": applied}

