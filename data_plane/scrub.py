"""Keeping the provider secret inside the gateway: scrubbing it from everything relayed back.

An upstream may echo the request's credential (``Authorization``, ``x-api-key``,
``x-goog-api-key``) in an error body, a header or a stream. Every relayed byte passes
through a :class:`Secret`'s scrubbers, which replace the secret, and its common encodings
(URL-encoded as in a ``key=`` query, form-encoded, JSON-escaped), by :data:`MARKER`.
A client decodes more than those fixed forms: any of the secret's characters may come as a
JSON ``\\uXXXX`` escape or a ``%XX`` percent-encoding, in either case of hex, mixed with
literal ones. Those are matched by one regular expression (about 6 ns a byte), run only over a
piece that holds an escape of one of the secret's characters: finding one costs C-speed
searches for ``%``, ``\\u00`` and ``\\/`` in the common case and, where one is found, a regular
expression with that literal prefix (linear, under 1 ns a byte).

Cost: the common case (no occurrence) is one C-speed substring search per pattern over
each chunk (a secret made of URL-safe characters, as provider keys are, has one pattern),
and a stream holds nothing back unless a chunk ends with the start of a pattern
(``docs/benchmarks.md`` has the figures).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from urllib.parse import quote, quote_plus

MARKER = b"[redacted]"
MARKER_TEXT = MARKER.decode()
# Held back at the end of a stream: a tail this long that is the start of the secret is
# replaced too (a truncated echo); shorter ones are released as they are.
_MIN_PARTIAL = 8
# Pool tags are keyed per process: they are never shown, and cannot be matched across nodes.
_TAG_KEY = secrets.token_bytes(32)
_CACHE: dict[bytes, Secret] = {}
_CACHE_MAX = 4096
# Bytes that may appear in an escaped form besides the secret's own.
_ESCAPE_BYTES = b"\\u%/+0123456789abcdefABCDEF"


def _hex(code: int, width: int) -> str:
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{code:0{width}x}")


def _escaped(text: str) -> str:
    """A regular expression for ``text`` with any of its characters escaped (JSON or percent, any hex case)."""
    parts = []
    for ch in text:
        code = ord(ch)
        alts = [re.escape(ch)]
        if code < 0x10000:
            alts.append(r"\\u" + _hex(code, 4))
        if code < 0x80:
            alts.append("%" + _hex(code, 2))
        if ch == "/":
            alts.append(r"\\/")
        elif ch == " ":
            alts.append(r"\+")
        parts.append("(?:" + "|".join(alts) + ")")
    return "".join(parts)


class Secret:
    """One provider secret: the byte patterns to scrub and an opaque tag naming it in the pool."""

    __slots__ = (
        "escaped",
        "escaped_text",
        "first",
        "inner",
        "patterns",
        "pool_tag",
        "run",
        "run_bytes",
        "span",
        "texts",
        "triggers",
    )

    def __init__(self, secret: bytes) -> None:
        text = secret.decode("utf-8", "surrogateescape")
        forms = [text, quote(text, safe=""), quote_plus(text, safe=""), json.dumps(text)[1:-1]]
        forms.append(forms[-1].replace("/", "\\/"))  # JSON encoders that escape the solidus
        unique = [f for f in dict.fromkeys(forms) if f]
        self.texts = tuple(unique)
        self.patterns = tuple(f.encode("utf-8", "surrogateescape") for f in unique)
        self.first = tuple(p[:1] for p in self.patterns)
        # The bytes a proper prefix of a pattern can end with: a chunk ending with any other
        # byte (an SSE event's newline, a JSON bracket) holds nothing back, at the cost of one test.
        self.inner = frozenset(b for p in self.patterns for b in p[:-1])
        regex = _escaped(text)
        self.escaped_text = re.compile(regex)
        self.escaped = re.compile(regex.encode("utf-8", "surrogateescape"))
        # A stream's tail made only of bytes an escaped occurrence can hold, read backwards.
        self.span = 6 * len(text)  # the longest escaped occurrence
        allowed = bytes(sorted(set(text.encode("utf-8", "surrogateescape")) | set(_ESCAPE_BYTES)))
        self.run = re.compile(b"[" + b"".join(re.escape(bytes([b])) for b in allowed) + b"]*")
        self.run_bytes = frozenset(allowed)
        # An escape of one of the secret's characters: its literal start, and an expression
        # beginning with it (one each: a literal prefix is what makes the search fast).
        wide = sorted({ord(c) for c in text if ord(c) >= 0x80})
        ascii_codes = "|".join(_hex(c, 2) for c in sorted({ord(c) for c in text if ord(c) < 0x80}))
        triggers = [(b"\\u00", r"\\u00(?:" + ascii_codes + ")"), (b"%", "%(?:" + ascii_codes + ")")]
        if wide:
            triggers.append((b"\\u", r"\\u(?:" + "|".join(_hex(c, 4) for c in wide) + ")"))
        if "/" in text:
            triggers.append((b"\\/", r"\\/"))
        self.triggers = tuple(
            (start, re.compile(rx.encode())) for start, rx in triggers if not rx.endswith("(?:)")
        )
        self.inner |= self.run_bytes
        self.pool_tag = hashlib.blake2b(secret, digest_size=12, key=_TAG_KEY).hexdigest()

    def bytes(self, data: bytes) -> bytes:
        """``data`` with every occurrence replaced (a whole body, or a complete piece)."""
        for pattern in self.patterns:
            if pattern in data:
                data = data.replace(pattern, MARKER)
        if (b"%" in data or b"\\" in data) and _may_escape(self.triggers, data):  # one-byte searches: memchr
            data = self.escaped.sub(MARKER, data)
        return data

    def text(self, value: str) -> str:
        """A header value or reason phrase with every occurrence replaced."""
        for form in self.texts:
            if form in value:
                value = value.replace(form, MARKER_TEXT)
        if ("%" in value or "\\" in value) and _may_escape(
            self.triggers, value.encode("utf-8", "surrogateescape")
        ):
            value = self.escaped_text.sub(MARKER_TEXT, value)
        return value

    def stream(self) -> StreamScrubber:
        """A scrubber for one streamed body."""
        return StreamScrubber(self)


class StreamScrubber:
    """Scrubs a body that arrives in chunks, including an occurrence split across two of them.

    Only a chunk's tail that is the start of a pattern is held back until the next chunk;
    any other byte goes on at once.
    """

    __slots__ = ("_escaped", "_held", "_inner", "_patterns", "_secret")

    def __init__(self, secret: Secret) -> None:
        self._secret = secret
        self._patterns = secret.patterns
        self._inner = secret.inner
        self._escaped = secret.escaped
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        """The bytes of ``chunk`` (after any held ones) that can be relayed now."""
        if self._held:
            chunk = self._held + chunk
            self._held = b""
        for pattern in self._patterns:
            if pattern in chunk:
                chunk = chunk.replace(pattern, MARKER)
        if (b"%" in chunk or b"\\" in chunk) and _may_escape(self._secret.triggers, chunk):
            chunk = self._escaped.sub(MARKER, chunk)
        # Rare: the chunk may end inside an occurrence (an SSE event ends with a newline, which none holds).
        if chunk and chunk[-1] in self._inner:
            keep = self._partial(chunk)
            if keep:
                self._held = chunk[-keep:]
                return chunk[:-keep]
        return chunk

    def flush(self) -> bytes:
        """At the end of the body: what was held back (itself scrubbed if it is a long partial secret)."""
        held, self._held = self._held, b""
        return MARKER if len(held) >= _MIN_PARTIAL else held

    def _partial(self, data: bytes) -> int:
        """The length of the longest tail of ``data`` that may begin an occurrence (0: none).

        A tail that is a proper prefix of a literal pattern; or, when an escape may be under way
        (a ``%`` or ``\\`` in it), the longest tail made only of bytes an escaped occurrence can
        hold, at most one byte shorter than the longest one.
        """
        secret = self._secret
        size = len(data)
        best = 0
        tail = data[-max(1, secret.span - 1) :]
        if b"%" in tail or b"\\" in tail:
            run = secret.run.match(tail[::-1])
            n = run.end() if run is not None else 0
            if n and (b"%" in tail[-n:] or b"\\" in tail[-n:]):
                best = n
        for pattern, first in zip(secret.patterns, secret.first, strict=True):
            pos = data.find(first, max(0, size - len(pattern) + 1))
            while pos != -1:
                if pattern.startswith(data[pos:]):
                    best = max(best, size - pos)
                    break
                pos = data.find(first, pos + 1)
        return best


def _may_escape(triggers: tuple[tuple[bytes, re.Pattern[bytes]], ...], data: bytes) -> bool:
    """Whether ``data`` holds an escape of one of the secret's characters."""
    for start, rx in triggers:
        if start in data and rx.search(data):
            return True
    return False


def secret_for(secret: bytes) -> Secret:
    """The (cached) :class:`Secret` of a provider credential."""
    found = _CACHE.get(secret)
    if found is None:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        found = _CACHE[secret] = Secret(secret)
    return found
