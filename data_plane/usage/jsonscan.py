"""Finding one member's object value in a JSON document that streams past, in bounded memory.

Gemini's ``streamGenerateContent`` without ``alt=sse`` is one JSON array
whose elements arrive over time, each with a ``usageMetadata`` member; an
oversized plain answer is relayed as a stream too. :class:`JsonMemberTap`
tracks only nesting depth and string state (the regex engine skips
everything else), remembers strings at the target depth only while they can
still equal the member name, and copies out the member's object value,
capped at ``max_value`` bytes. Nothing else is kept between chunks.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_STRUCTURE = re.compile(rb'["{}\[\]]')
_STRING_END = re.compile(rb'["\\]')
_WHITESPACE = b" \t\r\n"
_BACKSLASH = 0x5C
_QUOTE = 0x22
_COLON = 0x3A
_OPEN_BRACE = 0x7B
DEFAULT_MAX_VALUE = 64 * 1024


class JsonMemberTap:
    """Calls ``on_value(raw)`` for each object value of member ``key`` at nesting ``depth``.

    ``on_value(None)`` reports a value that exceeded ``max_value`` bytes.
    Depth counts open brackets: a top-level object's members are at depth 1,
    members of objects inside a top-level array at depth 2.
    """

    def __init__(
        self,
        key: bytes,
        depth: int,
        on_value: Callable[[bytes | None], None],
        max_value: int = DEFAULT_MAX_VALUE,
    ) -> None:
        self._key = key
        self._target = depth
        self._on_value = on_value
        self._max = max_value
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._name: bytearray | None = None  # a string at the target depth that may be the key
        self._await_colon = False
        self._await_value = False
        self._value: bytearray | None = None
        self._value_depth = 0
        self._value_overflow = False

    def feed(self, data: bytes) -> None:
        """Scan the next bytes of the document."""
        i, n = 0, len(data)
        value_from = 0
        while i < n:
            if self._in_string:
                i = self._string(data, i, n)
                continue
            if self._await_colon or self._await_value:
                while i < n and data[i] in _WHITESPACE:
                    i += 1
                if i >= n:
                    break
                if self._await_colon:
                    self._await_colon = False
                    if data[i] == _COLON:
                        self._await_value = True
                        i += 1
                        continue
                else:
                    self._await_value = False
                    if data[i] == _OPEN_BRACE:
                        self._value = bytearray()
                        self._value_overflow = False
                        self._value_depth = self._depth
                        value_from = i
            m = _STRUCTURE.search(data, i)
            if m is None:
                break
            j = m.start()
            c = data[j]
            i = j + 1
            if c == _QUOTE:
                self._in_string = True
                if self._depth == self._target and self._value is None:
                    self._name = bytearray()
                continue
            self._depth += 1 if c in b"{[" else -1
            if self._value is not None and self._depth == self._value_depth:
                self._append(data[value_from:i])
                raw = None if self._value_overflow else bytes(self._value)
                self._value = None
                self._on_value(raw)
        if self._value is not None:
            self._append(data[value_from:])

    def _string(self, data: bytes, i: int, n: int) -> int:
        """Advance inside a string; the next index."""
        if self._escape:
            self._escape = False
            self._name_add(data[i : i + 1])
            return i + 1
        m = _STRING_END.search(data, i)
        if m is None:
            self._name_add(data[i:])
            return n
        j = m.start()
        self._name_add(data[i:j])
        if data[j] == _BACKSLASH:
            self._name_add(data[j : j + 2])
            if j + 1 >= n:
                self._escape = True
            return j + 2
        self._in_string = False
        if self._name is not None:
            self._await_colon = self._name == self._key
            self._name = None
        return j + 1

    def _name_add(self, part: bytes) -> None:
        if self._name is not None:
            self._name += part
            if len(self._name) > len(self._key):
                self._name = None  # longer than the key: cannot be it

    def _append(self, part: bytes) -> None:
        assert self._value is not None
        if self._value_overflow:
            return
        if len(self._value) + len(part) > self._max:
            self._value_overflow = True
            self._value.clear()
            return
        self._value += part
