"""The length of an uploaded audio file, for audio billed by the second when the answer does not say.

Whisper reports ``usage: {"type": "duration"}`` only in JSON transcripts: translations and
text, srt or vtt transcripts carry no usage, so a model priced per second of audio would be
used for free. For those the gateway measures the uploaded file itself, from its container's
headers (mutagen: mp3/mpga/mpeg, mp4/m4a, ogg/opus, flac, wav; not webm), off the event
loop and within a time bound; a report from the provider, when one comes, replaces it
(``RequestMeter.report``). A file that cannot be measured bills no seconds (as before) and
is logged once per request at debug level only: its bytes are the client's, not ours to echo.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math

import mutagen

from data_plane.payload.multipart import MultipartFacts
from data_plane.usage.tokens import Usage

log = logging.getLogger("odock.data_plane.audio")

FILE_FIELD = "file"
# Reading headers takes milliseconds; an MP3 without a Xing/VBRI header is scanned frame by
# frame, still linear in its (bounded) size. A pathological file costs at most this much wall time.
MEASURE_SECONDS = 2.0
# Far beyond any file a provider accepts (25 MB): a longer "duration" is a lying header.
MAX_SECONDS = 10_000_000


def duration_seconds(data: bytes | memoryview) -> float | None:
    """The audio's duration in seconds according to its container, else None (blocking: call in a thread)."""
    try:
        found = mutagen.File(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - any parse failure of a hostile file means "unknown"
        return None
    length = getattr(getattr(found, "info", None), "length", None)
    if not isinstance(length, int | float) or isinstance(length, bool):
        return None
    if not (math.isfinite(length) and 0 < length <= MAX_SECONDS):
        return None
    return float(length)


async def measured_upload(body: bytes, form: MultipartFacts) -> Usage | None:
    """The milliseconds of the form's ``file`` part (None when there is none or it cannot be measured)."""
    part = next((p for p in form.parts if p.name == FILE_FIELD), None)
    if part is None or part.content_end <= part.content_start:
        return None
    data = memoryview(body)[part.content_start : part.content_end]
    try:
        seconds = await asyncio.wait_for(asyncio.to_thread(duration_seconds, data), MEASURE_SECONDS)
    except TimeoutError:
        log.debug("audio file not measured within %.1f s", MEASURE_SECONDS)
        return None
    if seconds is None:
        log.debug("audio file of %d bytes could not be measured", len(data))
        return None
    return Usage(audio_ms=math.floor(seconds * 1000 + 0.5))
