"""Asking OpenAI-style streams for their usage chunk when the client did not.

Chat and text completions streams report usage only with
``stream_options.include_usage: true``. Without it a streamed request could
never be metered, so the gateway asks upstream for it and the SSE tap removes
what the option adds (the usage-only chunk and the ``"usage": null`` member
of every other chunk) before the client sees the stream.

The body was already validated strictly (no duplicate keys, valid UTF-8), so
its decoded form is exactly what the provider will read. The common case, no
``stream_options`` at all, inserts the member after the opening brace and
leaves every other byte alone. A client that set ``stream_options`` without
``include_usage: true`` gets the body re-encoded with the option added (same
members, same order). A non-object ``stream_options`` is left for the provider
to refuse.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from data_plane.payload.json_body import ABSENT, JsonFacts

_MEMBER = b'"stream_options":{"include_usage":true}'
_SPACE = re.compile(rb"[ \t\r\n]*")


def ensure_include_usage(body: bytes, facts: JsonFacts | None = None) -> tuple[bytes, bool]:
    """``(body to send, whether the gateway added include_usage)``.

    ``facts`` (the body's inspection) saves decoding the body again in the common cases.
    """
    if facts is not None:
        options: Any = facts.stream_options
        if options is ABSENT:
            return _insert(body), True
        if isinstance(options, dict) and options.get("include_usage") is True:
            return body, False
        if options is not None and not isinstance(options, dict):
            return body, False
    try:
        doc: Any = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body, False
    if not isinstance(doc, dict):
        return body, False
    if "stream_options" not in doc:
        return _insert(body), True
    options = doc["stream_options"]
    if isinstance(options, dict) and options.get("include_usage") is True:
        return body, False
    if options is not None and not isinstance(options, dict):
        return body, False
    doc["stream_options"] = {**(options or {}), "include_usage": True}
    return msgspec.json.encode(doc), True


def _insert(body: bytes) -> bytes:
    """The member inserted right after the opening brace (one copy of the body)."""
    at = _SPACE.match(body).end()  # type: ignore[union-attr]  # matches the empty string at worst
    after = _SPACE.match(body, at + 1).end()  # type: ignore[union-attr]
    sep = b"," if body[after : after + 1] != b"}" else b""
    view = memoryview(body)
    return b"".join((view[: at + 1], _MEMBER, sep, view[at + 1 :]))
