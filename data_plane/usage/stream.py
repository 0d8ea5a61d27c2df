"""Usage read from streamed answers as they pass through, without holding them back.

SSE: the relay (``proxy.py``) already splits the stream into complete events
and holds back only a trailing partial one; :class:`SseTap` looks at those
complete events, searches each block once (a regex, at C speed) for what can
start a usage report, and decodes only the events holding such a candidate,
into msgspec structs that keep just the usage members (OpenAI's
``"usage":null`` on every chunk is not a candidate). When the gateway itself asked for
``stream_options.include_usage``, the usage-only chunk is removed and the
``"usage":null`` member the option adds to every other chunk is cut out, so
the client receives exactly the stream it asked for.

Other streams (Gemini's JSON array, an oversized plain answer): :class:`JsonTap`
runs :class:`~data_plane.usage.jsonscan.JsonMemberTap` over the bytes.

A tap never raises: unreadable usage flags the record as malformed.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import msgspec

from data_plane.sse import EVENT_END
from data_plane.usage.jsonscan import JsonMemberTap
from data_plane.usage.meter import RequestMeter
from data_plane.usage.shapes import Shape, streamed_key, value_usage
from data_plane.usage.tokens import MalformedUsage, Usage, anthropic_usage, gemini_usage, openai_usage

_LINE = re.compile(rb"\r\n|\r|\n")
# Blocks are searched for these at C speed; only the events they fall in are ever decoded.
# OpenAI chat: any "usage" member except a plain null one (with include_usage every chunk
# carries "usage":null, and those must cost no decoding at all).
_OPENAI_CANDIDATE = re.compile(rb'"usage"(?![ \t]*:[ \t]*null[ \t]*[,}])')
_RESPONSE_DONE = re.compile(rb"response\.(?:completed|incomplete|failed)")
_CANDIDATES: dict[str, re.Pattern[bytes]] = {
    "openai_chat": _OPENAI_CANDIDATE,
    "openai_responses": _RESPONSE_DONE,
    "anthropic": re.compile(rb"message_(?:start|delta)"),
    "gemini": re.compile(rb"usageMetadata"),
}
_RESPONSE_DONE_TYPES = frozenset({"response.completed", "response.incomplete", "response.failed"})
# The null usage member include_usage adds, as the last or the first member of a chunk's
# top-level object (a JSON object on one data line: what providers send). Compact JSON (what
# OpenAI and vLLM write) is cut with bytes.replace; spaced JSON with the regexes.
_COMPACT_NULLS = (
    (b',"usage":null}\n', b"}\n"),
    (b',"usage":null}\r', b"}\r"),
    (b'data: {"usage":null,', b"data: {"),
    (b'data:{"usage":null,', b"data:{"),
)
_NULL_LAST = re.compile(rb',[ \t]*"usage"[ \t]*:[ \t]*null(?=[ \t]*\}[ \t]*(?:\r\n|\r|\n|$))')
_NULL_FIRST = re.compile(rb'(data:[ ]?\{)[ \t]*"usage"[ \t]*:[ \t]*null[ \t]*,')
_NULL_ANY = re.compile(rb'"usage"[ \t]*:[ \t]*null')
# Anywhere in an event (the generic fallback for unusual layouts).
_USAGE_NULL_AFTER = re.compile(rb',[ \t]*"usage"[ \t]*:[ \t]*null(?=[ \t\r\n]*[,}])')
_USAGE_NULL_FIRST = re.compile(rb'(?<=\{)[ \t]*"usage"[ \t]*:[ \t]*null[ \t]*,')
_EMPTY_CHOICES = re.compile(rb"[ \t\r\n]*(?:\[[ \t\r\n]*\]|null)[ \t\r\n]*")


class StreamTap(Protocol):
    """Looks at a stream's bytes on their way to the client."""

    def relay(self, data: bytes) -> bytes:
        """The bytes to send on (complete SSE events in, possibly fewer out)."""
        ...


class _Chunk(msgspec.Struct):
    usage: Any = None
    choices: msgspec.Raw = msgspec.Raw(b"null")  # only "is it empty?" matters: never built as objects


class _Typed(msgspec.Struct):
    type: Any = None
    response: Any = None
    message: Any = None
    usage: Any = None


class _Gemini(msgspec.Struct):
    usageMetadata: Any = None  # the provider's member name


_CHUNK = msgspec.json.Decoder(_Chunk)
_TYPED = msgspec.json.Decoder(_Typed)
_GEMINI = msgspec.json.Decoder(_Gemini)


def _fields(event: bytes) -> tuple[bytes, bytes]:
    """(event name, data) of one SSE event (data lines joined by newlines)."""
    name = b""
    data: list[bytes] = []
    for line in _LINE.split(event):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    return name, b"\n".join(data)


def event_start(data: bytes, pos: int, lo: int = 0) -> int:
    """Where the event holding ``data[pos]`` starts (just after the blank line before it, or ``lo``).

    ``lo`` is where an event is known to start (the end of the previous one): the search
    never looks before it, so finding every event of a block stays linear in its size.
    """
    # Events hold no CR/LF but their line ends, so a blank line is the only place where
    # "\n\n", "\r\r" or "\n\r" occur ("\r\n" alone is one line end).
    at = max(data.rfind(b"\n\n", lo, pos), data.rfind(b"\r\r", lo, pos), data.rfind(b"\n\r", lo, pos))
    if at < 0:
        return lo
    at += 2
    while at < pos and data[at] in b"\r\n":
        at += 1
    return at


class SseTap:
    """Usage from an SSE stream of one shape; strips the gateway's own include_usage additions.

    A block of complete events is searched once for the few bytes that can start a usage
    report; events without them pass untouched (or, when stripping, lose their null usage
    member by one substitution over the block), and only the events holding a candidate
    are parsed.
    """

    def __init__(self, meter: RequestMeter, shape: Shape, *, strip_injected: bool) -> None:
        self._meter = meter
        self._shape = shape
        self._strip = strip_injected and shape == "openai_chat"
        self._candidate = _CANDIDATES.get(shape)
        self._anthropic: dict[str, Any] = {}
        self._anthropic_started = False

    def relay(self, data: bytes) -> bytes:
        """Read usage from complete events; the bytes to relay."""
        if not data or self._candidate is None:
            return data
        found = self._candidate.search(data)
        if found is None:
            return self._strip_nulls(data) if self._strip else data
        out: list[bytes] = []
        changed = False
        done = 0  # data[:done] is handled
        while found is not None:
            start = event_start(data, found.start(), done)
            end_match = EVENT_END.search(data, found.end())
            body_end, end = (end_match.start(), end_match.end()) if end_match else (len(data), len(data))
            if start > done:
                out.append(self._strip_nulls(data[done:start]) if self._strip else data[done:start])
            raw = data[start:end]
            kept = self._event(data[start:body_end], raw)
            changed = changed or len(kept) != len(raw)
            out.append(kept)
            done = end
            found = self._candidate.search(data, end)
        if done < len(data):
            out.append(self._strip_nulls(data[done:]) if self._strip else data[done:])
        if not changed and not self._strip:
            return data
        return b"".join(out)

    def _strip_nulls(self, block: bytes) -> bytes:
        """The events of ``block`` (none carrying a usage value) without the injected null member."""
        out = block
        for compact, kept in _COMPACT_NULLS:
            if compact in out:
                out = out.replace(compact, kept)
        if _NULL_ANY.search(out) is None:
            return out
        out = _NULL_FIRST.sub(rb"\1", _NULL_LAST.sub(b"", out))
        if _NULL_ANY.search(out) is None:
            return out
        # An unusual layout (usage in the middle, multi-line JSON): event by event, as before.
        parts: list[bytes] = []
        start = 0
        for match in EVENT_END.finditer(block):
            parts.append(self._without_null_usage(block[start : match.end()]))
            start = match.end()
        if start < len(block):
            parts.append(self._without_null_usage(block[start:]))
        return b"".join(parts)

    def _event(self, event: bytes, raw: bytes) -> bytes:
        """One event (without / with its terminator): what to relay of it."""
        try:
            return self._read(event, raw)
        except (msgspec.DecodeError, msgspec.ValidationError, MalformedUsage):
            self._meter.malformed()
            return raw

    def _read(self, event: bytes, raw: bytes) -> bytes:
        name, data = _fields(event)
        shape = self._shape
        if shape == "openai_chat":
            if b'"usage"' not in data:
                return self._without_null_usage(raw)
            chunk = _CHUNK.decode(data)
            if chunk.usage is None:
                return self._without_null_usage(raw)
            usage_only = _EMPTY_CHOICES.fullmatch(bytes(chunk.choices)) is not None
            self._meter.report(openai_usage(chunk.usage), final=usage_only)
            return b"" if (self._strip and usage_only) else raw
        if shape == "openai_responses":
            if not _RESPONSE_DONE.search(data):
                return raw
            typed = _TYPED.decode(data)
            if typed.type in _RESPONSE_DONE_TYPES and isinstance(typed.response, dict):
                usage = typed.response.get("usage")
                self._meter.report(None if usage is None else openai_usage(usage), final=True)
            return raw
        if shape == "anthropic":
            if b"message_start" in name + data or b"message_delta" in name + data:
                self._anthropic_event(_TYPED.decode(data))
            return raw
        if shape == "gemini" and b"usageMetadata" in data:
            meta = _GEMINI.decode(data).usageMetadata
            if meta is not None:
                self._meter.report(gemini_usage(meta), final=False)
        return raw

    def _anthropic_event(self, typed: _Typed) -> None:
        if typed.type == "message_start":
            if self._anthropic_started:
                self._meter.report(None, final=True)  # a second start: flagged, ignored
                return
            self._anthropic_started = True
            self._meter.report(None, final=True)
            usage = typed.message.get("usage") if isinstance(typed.message, dict) else None
        elif typed.type == "message_delta":
            usage = typed.usage
        else:
            return
        if usage is None:
            return
        if not isinstance(usage, dict):
            raise MalformedUsage("usage is not an object")
        merged = {**self._anthropic, **{k: v for k, v in usage.items() if v is not None}}
        reading = anthropic_usage(merged)  # raises before anything is kept
        self._anthropic = merged
        self._meter.report(reading, final=False)

    def _without_null_usage(self, raw: bytes) -> bytes:
        if not self._strip:
            return raw
        out, cut = _USAGE_NULL_AFTER.subn(b"", raw, count=1)
        if cut:
            return out
        return _USAGE_NULL_FIRST.sub(b"", raw, count=1)


class JsonTap:
    """Usage from a streamed JSON document (Gemini's array, or one large object)."""

    def __init__(self, meter: RequestMeter, shape: Shape, *, array: bool) -> None:
        self._meter = meter
        self._shape = shape
        self._final = shape != "gemini"
        self._scan = JsonMemberTap(streamed_key(shape), 2 if array else 1, self._value)

    def relay(self, data: bytes) -> bytes:
        """Scan and pass through unchanged."""
        try:
            self._scan.feed(data)
        except Exception:  # noqa: BLE001 - metering must never break a relay
            self._meter.malformed()
        return data

    def _value(self, raw: bytes | None) -> None:
        if raw is None:
            self._meter.malformed()
            return
        try:
            usage: Usage | None = value_usage(self._shape, raw)
        except MalformedUsage:
            self._meter.malformed()
            return
        self._meter.report(usage, final=self._final)


def make_tap(meter: RequestMeter, *, is_sse: bool, strip_injected: bool) -> StreamTap | None:
    """The tap for a streamed answer to ``meter``'s request, None when its shape carries no usage."""
    shape = meter.shape
    if shape in ("none", "tokenize"):
        return None
    if is_sse:
        return SseTap(meter, shape, strip_injected=strip_injected)
    return JsonTap(meter, shape, array=shape == "gemini" and meter.streamed)
