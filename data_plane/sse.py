"""Server-sent-event framing for relayed streams.

Complete events are relayed the moment their terminating blank line arrives;
only a trailing partial event is held back. If the upstream then stalls or
breaks, the partial event is dropped and the stream ends with a well-formed
error event instead of a half-written line the client would choke on.
"""

from __future__ import annotations

import re

# A line terminator immediately followed by another: an empty line, the end of an event.
# ("\r\n" is one terminator, so a first "\r" must not be followed by "\n".)
EVENT_END = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")


class EventSplitter:
    """Splits a byte stream into (complete events so far, held-back partial event)."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """Bytes ready to relay: everything up to the last event boundary seen so far."""
        data = self._pending + chunk if self._pending else chunk
        if data.endswith((b"\n\n", b"\n\r\n")):
            # The usual case, a read that ends with an event: all of it goes, nothing is scanned.
            self._pending = b""
            return data
        # Only the pending tail plus the new chunk can contain a new boundary.
        last_end = -1
        for match in EVENT_END.finditer(data, max(0, len(self._pending) - 3)):
            last_end = match.end()
        if last_end < 0:
            self._pending = data
            return b""
        self._pending = data[last_end:]
        return data[:last_end]

    @property
    def pending(self) -> bytes:
        """The partial event held back."""
        return self._pending

    def flush(self) -> bytes:
        """At a clean end of stream, whatever is left (a final event without a blank line)."""
        rest, self._pending = self._pending, b""
        return rest
