"""Keeping the provider secret inside the gateway: scrubbing it from everything relayed back.

An upstream may echo the request's credential (``Authorization``, ``x-api-key``,
``x-goog-api-key``) in an error body, a header or a stream. Every relayed byte passes
through a :class:`Secret`'s scrubbers, which replace the secret, and its common encodings
(URL-encoded as in a ``key=`` query, form-encoded, JSON-escaped), by :data:`MARKER`.

Cost: the common case (no occurrence) is one C-speed substring search per pattern over
each chunk (a secret made of URL-safe characters, as provider keys are, has one pattern),
and a stream holds nothing back unless a chunk ends with the start of a pattern
(``docs/benchmarks.md`` has the figures).
"""

from __future__ import annotations

import hashlib
import json
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


class Secret:
    """One provider secret: the byte patterns to scrub and an opaque tag naming it in the pool."""

    __slots__ = ("first", "inner", "patterns", "pool_tag", "texts")

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
        self.pool_tag = hashlib.blake2b(secret, digest_size=12, key=_TAG_KEY).hexdigest()

    def bytes(self, data: bytes) -> bytes:
        """``data`` with every occurrence replaced (a whole body, or a complete piece)."""
        for pattern in self.patterns:
            if pattern in data:
                data = data.replace(pattern, MARKER)
        return data

    def text(self, value: str) -> str:
        """A header value or reason phrase with every occurrence replaced."""
        for form in self.texts:
            if form in value:
                value = value.replace(form, MARKER_TEXT)
        return value

    def stream(self) -> StreamScrubber:
        """A scrubber for one streamed body."""
        return StreamScrubber(self)


class StreamScrubber:
    """Scrubs a body that arrives in chunks, including an occurrence split across two of them.

    Only a chunk's tail that is the start of a pattern is held back until the next chunk;
    any other byte goes on at once.
    """

    __slots__ = ("_held", "_inner", "_patterns", "_secret")

    def __init__(self, secret: Secret) -> None:
        self._secret = secret
        self._patterns = secret.patterns
        self._inner = secret.inner
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        """The bytes of ``chunk`` (after any held ones) that can be relayed now."""
        if self._held:
            chunk = self._held + chunk
            self._held = b""
        for pattern in self._patterns:
            if pattern in chunk:
                chunk = chunk.replace(pattern, MARKER)
        if chunk and chunk[-1] in self._inner:  # rare: the chunk may end inside an occurrence
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
        """The length of the longest tail of ``data`` that is a proper prefix of a pattern (0: none)."""
        best = 0
        size = len(data)
        for pattern, first in zip(self._secret.patterns, self._secret.first, strict=True):
            pos = data.find(first, max(0, size - len(pattern) + 1))
            while pos != -1:
                if pattern.startswith(data[pos:]):
                    best = max(best, size - pos)
                    break
                pos = data.find(first, pos + 1)
        return best


def secret_for(secret: bytes) -> Secret:
    """The (cached) :class:`Secret` of a provider credential."""
    found = _CACHE.get(secret)
    if found is None:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        found = _CACHE[secret] = Secret(secret)
    return found
