"""How an endpoint's answers carry usage: the :class:`Shape` object and whole-body extraction.

A shape is one usage dialect: how a whole JSON answer holds its usage, how a usage
value found in a streamed JSON body reads, which SSE tap reads a stream of it
(``stream.py``), and whether the gateway may ask for usage it would otherwise not get
(``include_usage``, ``inject.py``). Each family builds its shapes once, in
``data_plane/providers/<family>.py``, and each ``Endpoint`` holds its own
(``Endpoint.usage``): the relay and the taps call through the object, so nothing is
looked up by name per request. Whole bodies are decoded into tiny msgspec structs that
keep only the usage member: every other member is skipped at C speed, never built as
objects.

Import direction: ``data_plane.providers`` imports this package; nothing here imports
``providers``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from data_plane.usage.tokens import MalformedUsage, Usage

if TYPE_CHECKING:
    from data_plane.usage.meter import RequestMeter
    from data_plane.usage.stream import StreamTap


class TapFactory(Protocol):
    """Builds the SSE tap of one streamed answer (``stream.SseTap`` and its subclasses are)."""

    def __call__(self, meter: RequestMeter, *, strip_injected: bool) -> StreamTap: ...


@dataclass(frozen=True, slots=True, eq=False)
class Shape:
    """Where and how one kind of answer reports usage (built once per family; compared by identity)."""

    name: str  # for reprs and logs only: never looked up
    # A whole JSON answer -> its usage (None: it carries none); msgspec decode errors allowed.
    body: Callable[[bytes], Usage | None] | None = None
    # A usage value (decoded JSON) found in a streamed JSON body -> usage.
    value: Callable[[Any], Usage | None] | None = None
    # The tap of an SSE answer; None: streams of this shape are not read at all.
    sse_tap: TapFactory | None = None
    # The member holding usage in a (non-SSE) streamed JSON body, and whether a value
    # found there is a final report (else a running total).
    streamed_key: bytes = b"usage"
    streamed_final: bool = True
    # A streamed answer is a JSON array of such objects (Gemini without alt=sse).
    array_when_streamed: bool = False
    # The stream reports usage only when asked (stream_options.include_usage), and the
    # shape's SSE tap removes what asking adds.
    injectable: bool = False
    # A streamed answer that is not SSE is binary (speech audio): relayed, never scanned.
    binary_streams: bool = False
    # Usage the request body itself implies (speech: its input's characters), read only for the
    # endpoints that have it; counted once a 2xx answer is relayed, unless the answer reports its own.
    request_units: Callable[[bytes], Usage | None] | None = None
    # Audio billed by the second whose answer may not say how long it was (whisper's translations,
    # text transcripts): the gateway measures the uploaded file when the model has a per-second price.
    measures_audio: bool = False

    def __repr__(self) -> str:
        return f"Shape({self.name})"


NO_USAGE = Shape("none")


class _Usage(msgspec.Struct):
    usage: Any = None


_USAGE = msgspec.json.Decoder(_Usage)


def usage_member(read: Callable[[Any], Usage | None]) -> Callable[[bytes], Usage | None]:
    """A body reader for answers with a top-level ``usage`` member, normalised by ``read``."""

    def body(data: bytes) -> Usage | None:
        raw = _USAGE.decode(data).usage
        return None if raw is None else read(raw)

    return body


def body_usage(shape: Shape, body: bytes) -> Usage | None:
    """The usage in a complete JSON answer; None when it carries none. Raises MalformedUsage."""
    read = shape.body
    if read is None:
        return None
    try:
        return read(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise MalformedUsage("answer is not a JSON object") from None


def value_usage(shape: Shape, raw: bytes) -> Usage | None:
    """Usage from the raw JSON of a usage value found inside a streamed body (``jsonscan``)."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise MalformedUsage("usage is not valid JSON") from None
    read = shape.value
    return None if read is None else read(value)
