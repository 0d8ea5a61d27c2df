"""multipart/form-data bodies: find and rewrite the ``model`` form field, every other byte as sent.

Parsing is strict (RFC 2046 / 7578, CRLF line ends) because the model the gateway
authorises must be the model the provider reads: anything a lenient parser could
split differently (bare-LF delimiters, folded headers, a second ``model`` field,
an encoded model value) is refused rather than guessed at.

Parsing is linear in the body and runs once per request: every scan is a ``bytes.find``
or ``partition`` that starts where the previous one stopped (the header-block search is
capped at ``MAX_HEADER_BYTES``), and no regular expression is ever applied to a part's
header lines (a backtracking pattern over ``name: a<spaces>b`` was quadratic). The
:class:`MultipartFacts` it returns carry the spans :func:`multipart_with_model` splices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from data_plane.payload.errors import PayloadError

MAX_PARTS = 1000
# A part's header block (its header lines and their CRLFs, without the blank line). Real
# clients send one or two short lines; 8 KiB matches the HTTP layer's own line limit.
MAX_HEADER_BYTES = 8192
_FIELD = "model"
_CRLF = b"\r\n"
_BLANK_LINE = b"\r\n\r\n"
_SPACE_TAB = b" \t"
# RFC 2046 bchars: 1..70 of these, not ending in a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_HEADER_NAME = re.compile(_TOKEN.encode())
_PARAM = re.compile(rf'[ \t]*;[ \t]*({_TOKEN})[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"|([^;\s"]+))[ \t]*')
_QUOTED_PAIR = re.compile(r"\\(.)")
_PADDING = re.compile(rb"[ \t]*")
_IDENTITY_ENCODINGS = frozenset({"7bit", "8bit", "binary"})


def _malformed(why: str) -> PayloadError:
    return PayloadError(f"malformed multipart body: {why}", code="invalid_multipart")


@dataclass(frozen=True, slots=True)
class Part:
    """One part: its form-field name and where its header block and content lie in the body."""

    name: str
    headers_start: int
    content_start: int
    content_end: int


@dataclass(frozen=True, slots=True)
class MultipartFacts:
    """What one parse of a multipart body found (all a model rewrite needs)."""

    boundary: bytes
    first_delimiter: int  # offset of the first "--boundary"
    parts: tuple[Part, ...]
    model_part: Part | None
    model: str | None  # the model field's value (None: no model field)


def parse_header_value(value: str) -> tuple[str, dict[str, str]]:
    """Split ``type; a=b; c="d"`` into a lower-cased value and lower-cased params; PayloadError if odd."""
    main, sep, rest = value.partition(";")
    params: dict[str, str] = {}
    pos = 0
    rest = (sep + rest).rstrip(" \t;")
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None:
            raise _malformed("unparseable header parameters")
        key = m.group(1).lower()
        if key in params:
            raise _malformed(f"repeated header parameter {key[:20]!r}")
        quoted = m.group(2)
        params[key] = _QUOTED_PAIR.sub(r"\1", quoted) if quoted is not None else m.group(3)
        pos = m.end()
    return main.strip().lower(), params


def boundary_of(content_type: str) -> bytes:
    """The multipart boundary of a ``multipart/form-data`` Content-Type; PayloadError if absent or invalid."""
    mime, params = parse_header_value(content_type)
    if mime != "multipart/form-data":
        raise PayloadError("Content-Type must be multipart/form-data", code="invalid_multipart")
    boundary = params.get("boundary")
    if boundary is None or not _BOUNDARY.fullmatch(boundary):
        raise _malformed("missing or invalid boundary")
    return boundary.encode("ascii")


def inspect_multipart(body: bytes, content_type: str) -> MultipartFacts:
    """Parse and validate a multipart body once; PayloadError (a 400) if it is malformed or too large."""
    boundary = boundary_of(content_type)
    dash = b"--" + boundary
    delimiter = _CRLF + dash
    _refuse_bare_lf_delimiters(body, dash)
    if body.startswith(dash):
        pos = 0
    else:
        found = body.find(delimiter)
        if found < 0:
            raise _malformed("no boundary found")
        pos = found + 2
        if body.find(dash, 0, pos) >= 0:
            # A lenient parser might start its first part here; we would not.
            raise _malformed("boundary text in the preamble")
    first = pos
    parts: list[Part] = []
    model: Part | None = None
    while True:
        after = pos + len(dash)
        if body.startswith(b"--", after):
            # Close delimiter. RFC 2046 ignores the epilogue; refuse one a lenient parser
            # could read more parts from.
            if body.find(dash, after + 2) >= 0:
                raise _malformed("boundary text after the closing boundary")
            break
        padding = _PADDING.match(body, after)
        line_end = padding.end() if padding else after
        if not body.startswith(_CRLF, line_end):
            raise _malformed("boundary line not followed by CRLF")
        if len(parts) == MAX_PARTS:
            raise PayloadError(f"multipart body has more than {MAX_PARTS} parts", code="invalid_multipart")
        part = _next_part(body, line_end + 2, delimiter)
        if part.name == _FIELD:
            if model is not None:
                raise PayloadError(
                    "duplicate 'model' field in multipart body", code="duplicate_key", param="model"
                )
            model = part
        parts.append(part)
        pos = part.content_end + 2
    value = None if model is None else _utf8(body[model.content_start : model.content_end])
    return MultipartFacts(boundary, first, tuple(parts), model, value)


def multipart_with_model(body: bytes, facts: MultipartFacts, slug: str) -> bytes:
    """``body`` (parsed into ``facts``) with the ``model`` field set to slug (added first when absent).

    Every other byte is as sent; the Content-Type (and its boundary) stays the same.
    """
    value = slug.encode("utf-8")
    if b"\r" in value or b"\n" in value or b"--" + facts.boundary in value:
        raise ValueError("slug cannot be placed in a multipart body")
    view = memoryview(body)  # slices without copies: the join makes the one copy
    if facts.model_part is not None:
        part = facts.model_part
        return b"".join((view[: part.content_start], value, view[part.content_end :]))
    at = facts.first_delimiter
    added = b"".join(
        (b"--", facts.boundary, b'\r\nContent-Disposition: form-data; name="model"\r\n\r\n', value, _CRLF)
    )
    return b"".join((view[:at], added, view[at:]))


def form_flag(body: bytes, facts: MultipartFacts, name: str = "stream") -> bool:
    """Whether the form field ``name`` is ``true`` (how SDKs send a boolean form field, e.g. stream)."""
    for part in facts.parts:
        if part.name == name:
            value = body[part.content_start : part.content_end]
            return len(value) <= 8 and value.strip(b" \t").lower() == b"true"
    return False


def _next_part(body: bytes, start: int, delimiter: bytes) -> Part:
    """The part whose header block starts at ``start`` (just after its boundary line's CRLF)."""
    # The search starts at the boundary line's CRLF so an empty header block is found too, and
    # never looks further than the header bound: the block's length is checked, not scanned.
    limit = start + MAX_HEADER_BYTES + len(_BLANK_LINE)
    headers_end = body.find(_BLANK_LINE, start - 2, limit)
    if headers_end < 0:
        if body.find(delimiter, start, limit) >= 0:
            raise _malformed("part headers not terminated before the next boundary")
        if len(body) >= limit:
            raise _malformed(f"a part's header block exceeds {MAX_HEADER_BYTES} bytes")
        raise _malformed("unterminated part (no closing boundary)")
    content_start = headers_end + 4
    next_delimiter = body.find(delimiter, start)
    if next_delimiter < 0:
        raise _malformed("unterminated part (no closing boundary)")
    if next_delimiter < content_start:
        raise _malformed("part headers not terminated before the next boundary")
    name = _part_name(body[start:headers_end] if headers_end >= start else b"")
    return Part(name, start, content_start, next_delimiter)


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("'model' is not valid UTF-8", code="invalid_model", param="model") from None


def _refuse_bare_lf_delimiters(body: bytes, dash: bytes) -> None:
    # A lenient parser would split on "\n--boundary" too; refuse what two parsers read differently.
    # Neither needle can overlap itself (a boundary has no CR or LF), so the counts are equal
    # exactly when every LF before a boundary follows a CR: two passes at C speed, whatever
    # the number of delimiters.
    if body.count(b"\n" + dash) != body.count(b"\r\n" + dash):
        raise _malformed("boundary preceded by a bare LF")


def _header(line: bytes) -> tuple[bytes, str]:
    """A header line split into its lower-cased name and its value without surrounding blanks."""
    name, colon, value = line.partition(b":")
    if not colon or _HEADER_NAME.fullmatch(name) is None or b"\r" in value or b"\n" in value:
        raise _malformed("invalid part header line")
    return name.lower(), value.strip(_SPACE_TAB).decode("latin-1")


def _part_name(block: bytes) -> str:
    """The form-field name from a part's header block; validates the model part strictly."""
    disposition: str | None = None
    encoding: str | None = None
    for line in block.split(_CRLF) if block else ():
        header, value = _header(line)
        if header == b"content-disposition":
            if disposition is not None:
                raise _malformed("repeated Content-Disposition")
            disposition = value
        elif header == b"content-transfer-encoding":
            encoding = value.strip().lower()
    if disposition is None:
        raise _malformed("part without Content-Disposition")
    kind, params = parse_header_value(disposition)
    if kind != "form-data" or "name" not in params:
        raise _malformed("part is not form-data with a name")
    if "name*" in params:
        raise _malformed("extended name* parameters are not supported")
    name = params["name"]
    if name == _FIELD:
        if "filename" in params or "filename*" in params:
            raise PayloadError(
                "'model' must be a plain form field, not a file", code="invalid_model", param="model"
            )
        if encoding is not None and encoding not in _IDENTITY_ENCODINGS:
            raise PayloadError(
                "'model' must not use a Content-Transfer-Encoding", code="invalid_model", param="model"
            )
    return name
