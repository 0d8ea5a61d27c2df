"""Server-sent-event framing for relayed streams.

Complete events are relayed the moment their terminating blank line arrives;
only a trailing partial event is held back. If the upstream then stalls or
breaks, the partial event is dropped and the stream ends with a well-formed
error event instead of a half-written line the client would choke on.

The held-back event is bounded (``max_event`` bytes before its blank line, ``ODOCK_MAX_SSE_EVENT_BYTES``):
an upstream that never ends an event makes :meth:`EventSplitter.feed` raise
:class:`EventTooLarge` instead of growing without bound. Splitting is linear in the
bytes fed: each chunk is scanned once (plus the three bytes before it, where a
boundary may start) and each byte is copied once, when its event is released.
"""

from __future__ import annotations

import re

# A line terminator immediately followed by another: an empty line, the end of an event.
# ("\r\n" is one terminator, so a first "\r" must not be followed by "\n".)
EVENT_END = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")
# The longest terminator pair is 4 bytes: at most 3 of them can precede a chunk.
_CARRY = 3
DEFAULT_MAX_EVENT = 1024 * 1024


class EventTooLarge(ValueError):
    """The upstream sent more than the bound without ending an event."""


class EventSplitter:
    """Splits a byte stream into (complete events so far, held-back partial event)."""

    __slots__ = ("_held", "_size", "_tail", "max_event")

    def __init__(self, max_event: int = DEFAULT_MAX_EVENT) -> None:
        self.max_event = max_event
        self._held: list[bytes] = []  # the partial event, as the chunks it arrived in
        self._size = 0
        self._tail = b""  # its last (up to) 3 bytes, where a boundary may begin

    def feed(self, chunk: bytes) -> bytes:
        """Bytes ready to relay: everything up to the last event boundary seen so far.

        Raises :class:`EventTooLarge` when the partial event would exceed ``max_event``.
        """
        if not chunk:
            return b""
        if chunk.endswith((b"\n\n", b"\n\r\n")):
            # The usual case, a read that ends with an event: all of it goes, nothing is scanned.
            return self._release(chunk) if self._held else chunk
        tail = self._tail
        window = tail + chunk if tail else chunk
        last_end = -1
        for match in EVENT_END.finditer(window):
            last_end = match.end()
        cut = last_end - len(tail)
        if cut <= 0:  # no boundary ends in this chunk: hold it
            self._hold(chunk)
            return b""
        out = self._release(chunk[:cut])
        if cut < len(chunk):
            self._hold(chunk[cut:])
        return out

    @property
    def pending(self) -> bytes:
        """The partial event held back."""
        return b"".join(self._held)

    def flush(self) -> bytes:
        """At a clean end of stream, whatever is left (a final event without a blank line)."""
        return self._release(b"")

    def _hold(self, data: bytes) -> None:
        self._size += len(data)
        # Up to _CARRY more: the start of the blank line that ends an event of exactly the bound.
        if self._size > self.max_event + _CARRY:
            self._held.clear()
            self._size = 0
            self._tail = b""
            raise EventTooLarge(f"server-sent event over {self.max_event} bytes")
        self._held.append(data)
        self._tail = data[-_CARRY:] if len(data) >= _CARRY else (self._tail + data)[-_CARRY:]

    def _release(self, last: bytes) -> bytes:
        held = self._held
        if not held:
            return last
        if last:
            held.append(last)
        out = held[0] if len(held) == 1 else b"".join(held)
        held.clear()
        self._size = 0
        self._tail = b""
        return out
