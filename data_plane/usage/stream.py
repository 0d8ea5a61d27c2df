"""Usage read from streamed answers as they pass through, without holding them back.

SSE: the relay (``relay.py``) already splits the stream into complete events
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

:class:`SseTap` is the generic machinery (finding candidate events in a block, the
include_usage stripping); what an event of a family's stream means is its subclass's
``_read``, in ``data_plane/providers/<family>.py``, and the shape (``Shape.sse_tap``)
names the class. Nothing here imports ``providers``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar, Protocol

import msgspec

from data_plane.sse import EVENT_END
from data_plane.usage.jsonscan import JsonMemberTap
from data_plane.usage.shapes import Shape, value_usage
from data_plane.usage.tokens import MalformedUsage, Usage

if TYPE_CHECKING:
    from data_plane.usage.meter import RequestMeter

_LINE = re.compile(rb"\r\n|\r|\n")
# The null usage member include_usage adds, as the last or the first member of a chunk's
# top-level object (a JSON object on one data line: what providers send). Compact JSON (what
# OpenAI and vLLM write) is cut with bytes.replace; spaced JSON with the regexes.
_COMPACT_LAST = b',"usage":null}\n'
_COMPACT_NULLS = (
    (_COMPACT_LAST, b"}\n"),
    (b',"usage":null}\r', b"}\r"),
    (b'data: {"usage":null,', b"data: {"),
    (b'data:{"usage":null,', b"data:{"),
)
# How many "usage" members from a block's end are tested for the candidate before searching forward.
_BACKWARD_TRIES = 4
_NULL_LAST = re.compile(rb',[ \t]*"usage"[ \t]*:[ \t]*null(?=[ \t]*\}[ \t]*(?:\r\n|\r|\n|$))')
_NULL_FIRST = re.compile(rb'(data:[ ]?\{)[ \t]*"usage"[ \t]*:[ \t]*null[ \t]*,')
_NULL_ANY = re.compile(rb'"usage"[ \t]*:[ \t]*null')
# Anywhere in an event (the generic fallback for unusual layouts).
_USAGE_NULL_AFTER = re.compile(rb',[ \t]*"usage"[ \t]*:[ \t]*null(?=[ \t\r\n]*[,}])')
_USAGE_NULL_FIRST = re.compile(rb'(?<=\{)[ \t]*"usage"[ \t]*:[ \t]*null[ \t]*,')


class StreamTap(Protocol):
    """Looks at a stream's bytes on their way to the client."""

    def relay(self, data: bytes) -> bytes:
        """The bytes to send on (complete SSE events in, possibly fewer out)."""
        ...


def read_apart(counts: object) -> bool:
    """Whether usage counts a writer decoded with orjson must be read by the tap's own decoder instead:
    orjson reads an integer beyond 64 bits as a float (malformed), msgspec keeps it an integer (clamped)."""
    return isinstance(counts, dict) and any(type(value) is float for value in counts.values())


def event_fields(event: bytes) -> tuple[bytes, bytes]:
    """(event name, data) of one SSE event (data lines joined by newlines)."""
    if event.startswith(b"data: ") and b"\n" not in event and b"\r" not in event:
        return b"", event[6:]  # one data line: what providers send
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
    # The CR forms are looked for only after the last "\n\n" (the latest of the three wins):
    # in the usual LF-only stream each search then stops at that blank line, not at ``lo``.
    at = data.rfind(b"\n\n", lo, pos)
    after = max(lo, at)
    at = max(at, data.rfind(b"\r\r", after, pos), data.rfind(b"\n\r", after, pos))
    if at < 0:
        return lo
    at += 2
    while at < pos and data[at] in b"\r\n":
        at += 1
    return at


def blank_line(data: bytes) -> bytes | None:
    """The one form a blank line takes in ``data`` when all its line ends are alike (LF, or CRLF as
    Gemini sends), else None."""
    if b"\r" not in data:
        return b"\n\n"
    crs = data.count(b"\r")
    return b"\r\n\r\n" if crs == data.count(b"\r\n") == data.count(b"\n") else None


def event_bounds(data: bytes, pos: int, after: int, lo: int, blank: bytes | None) -> tuple[int, int, int]:
    """Where the event holding ``data[pos:after]`` starts (not before ``lo``, see :func:`event_start`),
    where its body ends, and where the blank line ending it ends (the block's end if none does).

    ``blank``: :func:`blank_line` of ``data``; when there is one form, two C searches find the same
    bounds as :func:`event_start` and ``EVENT_END`` (1.4 µs less per usage event: issue 16).
    """
    if blank is not None:
        at = data.rfind(blank, lo, pos)
        end = data.find(blank, after)
        size = len(blank)
        return (lo if at < 0 else at + size), *((len(data), len(data)) if end < 0 else (end, end + size))
    end_match = EVENT_END.search(data, after)
    body_end, end = (end_match.start(), end_match.end()) if end_match else (len(data), len(data))
    return event_start(data, pos, lo), body_end, end


class SseTap:
    """Usage from an SSE stream of one shape; strips the gateway's own include_usage additions.

    A block of complete events is searched once for the few bytes that can start a usage
    report (``candidate``); events without them pass untouched (or, when stripping, lose
    their null usage member by one substitution over the block), and only the events
    holding a candidate are given to ``_read``. This base class reads nothing: it is the
    tap of shapes whose streams carry no usage it could find.
    """

    # What can start a usage report in a block, searched at C speed; None: nothing is read.
    candidate: ClassVar[re.Pattern[bytes] | None] = None
    # Whether the stream's include_usage additions can be removed (the shape is injectable).
    strips: ClassVar[bool] = False

    def __init__(self, meter: RequestMeter, *, strip_injected: bool) -> None:
        self._meter = meter
        self._strip = strip_injected and self.strips
        self._candidate = self.candidate

    def relay(self, data: bytes) -> bytes:
        """Read usage from complete events; the bytes to relay."""
        if not data or self._candidate is None:
            return data
        cut, at = b"", -1
        if self._strip:
            # The usual block of an injected stream: compact chunks ending with the null member.
            # When no "usage" is left once those are cut, the block held no candidate and nothing
            # else to strip: the result is the general path's, at a fraction of its cost (issue 16).
            cut = data.replace(_COMPACT_LAST, b"}\n")
            at = cut.find(b'"usage"')
            if at < 0:
                return cut
            found = self._sole_candidate(data, cut, at)
        else:
            found = self._candidate.search(data)
        if found is None:
            return self._strip_nulls(data, cut) if self._strip else data
        out: list[bytes] = []
        changed = False
        done = 0  # data[:done] is handled
        blank = blank_line(data)
        while found is not None:
            start, body_end, end = event_bounds(data, found.start(), found.end(), done, blank)
            if start > done:
                out.append(self._stripped(data, cut, at, done, start) if self._strip else data[done:start])
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

    def _sole_candidate(self, data: bytes, cut: bytes, at: int) -> re.Match[bytes] | None:
        """The first candidate of ``data``, found from its end when ``cut`` (``data`` without its
        compact null members) holds one "usage", at ``at``, and it is a candidate.

        Cutting those members keeps every other "usage" and whether it is a candidate (the cut
        text starts with a comma and ends a line, where a candidate's null test already stops), so
        ``data`` then holds exactly one candidate among its null members; the usage chunk comes
        last, so a backward search meets it first, without the forward scan's test at each of the
        null members before it. Anything else takes the forward search.
        """
        candidate = self._candidate
        assert candidate is not None
        if cut.find(b'"usage"', at + 1) < 0 and candidate.match(cut, at) is not None:
            pos = len(data)
            for _ in range(_BACKWARD_TRIES):
                pos = data.rfind(b'"usage"', 0, pos)
                if pos < 0:
                    break
                found = candidate.match(data, pos)
                if found is not None:
                    return found
        return candidate.search(data)

    def _stripped(self, data: bytes, cut: bytes, at: int, done: int, start: int) -> bytes:
        """``_strip_nulls(data[done:start])``; the block's start up to its first candidate event is
        taken from ``cut`` when no compact null member is cut at or after ``start`` (the part of
        ``cut`` before that event is then exactly the start's cut: that text ends a line, so it
        never spans an event's start). ``at`` is where ``cut``'s first "usage" is: a part ending
        at or before it holds none, so it is what ``_strip_nulls`` would return, without a scan."""
        block = data[done:start]
        if done == 0 and data.find(_COMPACT_LAST, start) < 0:
            head = cut[: start - (len(data) - len(cut))]
            return head if at >= len(head) else self._strip_nulls(block, head)
        return self._strip_nulls(block)

    def _strip_nulls(self, block: bytes, cut: bytes | None = None) -> bytes:
        """The events of ``block`` (none carrying a usage value) without the injected null member.

        ``cut``: what the first compact replacement makes of ``block``, when already known.
        """
        out = block if cut is None else cut
        if b'"usage"' not in out:  # every form below names it
            return out
        for compact, kept in _COMPACT_NULLS if cut is None else _COMPACT_NULLS[1:]:
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

    def unparsed(self, event: bytes) -> None:
        """One complete event (without its terminator) that a translator's writer, which reads the
        stream's usage events for this tap (``ChunkWriter.reads_usage``), could not decode: read as
        :meth:`relay` reads it."""
        candidate = self._candidate
        if candidate is not None and candidate.search(event) is not None:
            self._event(event, event)

    def _event(self, event: bytes, raw: bytes) -> bytes:
        """One event (without / with its terminator): what to relay of it."""
        try:
            return self._read(event, raw)
        except (msgspec.DecodeError, msgspec.ValidationError, MalformedUsage):
            self._meter.malformed()
            return raw

    def _read(self, event: bytes, raw: bytes) -> bytes:
        """One event holding a candidate (``event`` without its terminator, ``raw`` with): report
        its usage to the meter, return what to relay of it. May raise msgspec errors or
        MalformedUsage (the record is flagged, the event relayed)."""
        return raw

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
        self._final = shape.streamed_final
        self._scan = JsonMemberTap(shape.streamed_key, 2 if array else 1, self._value)

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
    factory = shape.sse_tap
    if factory is None:
        return None
    if is_sse:
        return factory(meter, strip_injected=strip_injected)
    if shape.binary_streams:
        return None
    return JsonTap(meter, shape, array=shape.array_when_streamed and meter.streamed)
