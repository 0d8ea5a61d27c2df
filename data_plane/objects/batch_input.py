"""A batch input file checked and rewritten line by line before it reaches the provider.

Each line of the JSONL file is one request: a JSON object with a unique ``custom_id``,
``method`` "POST", a ``url`` the Batch API serves and a ``body`` object naming a ``model``.
Every line must name the same model (OpenAI's own rule: one model per batch); the gateway
checks that model against the key like any request and replaces each line's ``body.model``,
the gateway's model name, with the deployment's upstream slug. Everything else in a line is
kept byte for byte (its spacing, key order, numbers, line ending).

Lines are checked with the strict JSON inspection the native endpoints use
(``data_plane.payload.json_body``: duplicate keys, NaN, invalid UTF-8 refused, so the gateway
and the provider read the same request), one at a time, in linear time, each at most
``MAX_LINE_BYTES``. A UTF-8 byte order mark before the first line and blank lines (the usual
empty last line among them) are dropped. A bad line refuses the whole file with its number
("Line 3: ..."). The functions here do blocking file I/O: the handler runs them in a thread.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, BinaryIO

import msgspec

from data_plane.payload import PayloadError, inspect_json
from data_plane.payload.json_body import _KEY_WITH_VALUE, _OPEN_ARRAY, _OPEN_OBJECT, _TOKEN

MAX_LINE_BYTES = 8 * 1024 * 1024  # a chat request with a few inline images fits
MAX_LINES = 50_000  # requests in one batch (OpenAI's limit)
MAX_CUSTOM_ID = 512
BATCH_URLS = (
    "/v1/chat/completions", "/v1/embeddings", "/v1/responses", "/v1/completions", "/v1/moderations",
)  # fmt: skip
_URLS = frozenset(BATCH_URLS)
_BOM = b"\xef\xbb\xbf"
_BLANK = b" \t\r\n"


class BatchLineError(Exception):
    """A line the gateway refuses (``line`` is 1-based; 0: the file as a whole)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = f"Line {line}: {message}" if line else message


class _Line(msgspec.Struct):
    custom_id: Any = None
    method: Any = None
    url: Any = None
    body: msgspec.Raw = msgspec.Raw(b"null")


class _Body(msgspec.Struct):
    model: Any = None


_LINE = msgspec.json.Decoder(_Line)
_BODY = msgspec.json.Decoder(_Body)


def _clip(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:80] + "...")


def check_line(raw: bytes, number: int) -> tuple[str, str, tuple[int, int]]:
    """A line's (custom_id, model, span of the body's model value); BatchLineError if it is not a request."""
    try:
        inspect_json(raw)
    except PayloadError as exc:
        raise BatchLineError(number, f"not a valid JSON request: {exc.message}") from None
    line = _LINE.decode(raw)  # valid JSON object (checked above); the members are checked here
    custom_id = line.custom_id
    if type(custom_id) is not str or not custom_id:
        raise BatchLineError(number, "'custom_id' must be a non-empty string")
    if len(custom_id) > MAX_CUSTOM_ID:
        raise BatchLineError(number, f"'custom_id' is longer than {MAX_CUSTOM_ID} characters")
    if line.method != "POST":
        raise BatchLineError(number, "'method' must be \"POST\"")
    if type(line.url) is not str or line.url not in _URLS:
        raise BatchLineError(number, "'url' must be one of " + ", ".join(BATCH_URLS))
    body = bytes(line.body)
    if not body.startswith(b"{"):
        raise BatchLineError(number, "'body' must be a JSON object (the request)")
    model = _BODY.decode(body).model
    if type(model) is not str or not model:
        raise BatchLineError(number, "'body.model' must name a model")
    span = body_model_span(raw)
    if span is None:  # unreachable for a line that passed the checks above
        raise BatchLineError(number, "could not locate 'body.model'")
    return custom_id, model, span


def body_model_span(raw: bytes) -> tuple[int, int] | None:
    """The byte span of ``body.model``'s string value in a validated line (no duplicate keys)."""
    depth = 0
    pending = False  # the last token was the top-level key "body" (its value opens next)
    inside = False  # within the top-level "body" object
    for m in _TOKEN.finditer(raw):
        kind = m.lastindex
        if kind is None:  # string values in an array
            continue
        if kind <= _KEY_WITH_VALUE:
            key = m.group(1)
            if b"\\" in key:
                key = msgspec.json.decode(b'"' + key + b'"').encode("utf-8", "surrogatepass")
            if depth == 1:
                pending = key == b"body" and kind != _KEY_WITH_VALUE
            elif depth == 2 and inside and key == b"model":
                return m.span(2) if kind == _KEY_WITH_VALUE else None
        elif kind <= _OPEN_ARRAY:
            depth += 1
            inside = inside or (depth == 2 and pending and kind == _OPEN_OBJECT)
            pending = False
        else:
            depth -= 1
            if depth == 1 and inside:
                return None
    return None


def _lines(src: BinaryIO) -> Any:
    """(number, content without its line ending, the ending) of each non-blank line; bounded reads."""
    number = 0
    while True:
        raw = src.readline(MAX_LINE_BYTES + 2)
        if not raw:
            return
        number += 1
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        ending = b"\r\n" if raw.endswith(b"\r\n") else b"\n" if raw.endswith(b"\n") else b""
        content = raw[: len(raw) - len(ending)]
        if len(content) > MAX_LINE_BYTES:
            raise BatchLineError(number, f"longer than the limit of {MAX_LINE_BYTES} bytes")
        if not content.strip(_BLANK):
            continue
        yield number, content, ending


def first_model(src: BinaryIO) -> tuple[int, str]:
    """The first request line's number and model (every line must name that one)."""
    for number, content, _ in _lines(src):
        _, model, _ = check_line(content, number)
        return number, model
    raise BatchLineError(0, "The batch input file holds no requests (one JSON request per line)")


def rewrite(src: BinaryIO, dst: BinaryIO, model: str, slug: str, *, on_line: Callable[[int], None] | None = None) -> int:
    """Check every line of ``src`` and write it to ``dst`` with ``body.model`` = ``slug``; the request count.

    ``model`` is the one every line must name (the first line's). ``on_line`` is called with each
    line's number (tests; a cancellation check).
    """
    encoded = msgspec.json.encode(slug)
    seen: dict[bytes, int] = {}  # digests of custom ids: bounded by MAX_LINES, whatever their length
    requests = 0
    for number, content, ending in _lines(src):
        if on_line is not None:
            on_line(number)
        custom_id, named, (start, end) = check_line(content, number)
        if named != model:
            raise BatchLineError(
                number, f"every line must name the same model (the first names {_clip(model)}, this one {_clip(named)})"
            )
        digest = hashlib.blake2b(custom_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        earlier = seen.get(digest)
        if earlier is not None:
            raise BatchLineError(number, f"'custom_id' {_clip(custom_id)} is already used by line {earlier}")
        requests += 1
        if requests > MAX_LINES:
            raise BatchLineError(number, f"a batch holds at most {MAX_LINES} requests")
        seen[digest] = number
        view = memoryview(content)
        dst.write(b"".join((view[:start], encoded, view[end:], ending)))
    if not requests:
        raise BatchLineError(0, "The batch input file holds no requests (one JSON request per line)")
    return requests
