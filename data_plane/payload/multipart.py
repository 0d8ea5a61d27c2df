"""multipart/form-data bodies: find and rewrite the ``model`` form field, every other byte as sent.

Parsing is strict (RFC 2046 / 7578, CRLF line ends) because the model the gateway
authorises must be the model the provider reads: anything a lenient parser could
split differently (bare-LF delimiters, folded headers, a second ``model`` field,
an encoded model value) is refused rather than guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from data_plane.payload.errors import PayloadError

MAX_PARTS = 1000
_FIELD = "model"
_CRLF = b"\r\n"
# RFC 2046 bchars: 1..70 of these, not ending in a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM = re.compile(rf'[ \t]*;[ \t]*({_TOKEN})[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"|([^;\s"]+))[ \t]*')
_QUOTED_PAIR = re.compile(r"\\(.)")
_HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*")
_PADDING = re.compile(rb"[ \t]*")
_IDENTITY_ENCODINGS = frozenset({"7bit", "8bit", "binary"})


def _malformed(why: str) -> PayloadError:
    return PayloadError(f"malformed multipart body: {why}", code="invalid_multipart")


@dataclass(frozen=True, slots=True)
class _Field:
    content_start: int
    content_end: int
    value: str


@dataclass(frozen=True, slots=True)
class _Parsed:
    boundary: bytes
    first_delimiter: int  # offset of the first "--boundary"
    model: _Field | None


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


def inspect_multipart(body: bytes, content_type: str) -> str | None:
    """The value of the ``model`` form field, or None when the body has none; PayloadError if malformed."""
    model = _parse(body, content_type).model
    return None if model is None else model.value


def multipart_with_model(body: bytes, content_type: str, slug: str) -> tuple[bytes, str]:
    """Set the ``model`` field to slug (added as the first part when absent); other parts byte-identical."""
    parsed = _parse(body, content_type)
    value = slug.encode("utf-8")
    if b"\r" in value or b"\n" in value or b"--" + parsed.boundary in value:
        raise ValueError("slug cannot be placed in a multipart body")
    if parsed.model is not None:
        field = parsed.model
        return b"".join((body[: field.content_start], value, body[field.content_end :])), content_type
    at = parsed.first_delimiter
    part = b"".join(
        (b"--", parsed.boundary, b'\r\nContent-Disposition: form-data; name="model"\r\n\r\n', value, _CRLF)
    )
    return b"".join((body[:at], part, body[at:])), content_type


def _parse(body: bytes, content_type: str) -> _Parsed:
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
        if body.find(dash) < pos:
            # A lenient parser might start its first part here; we would not.
            raise _malformed("boundary text in the preamble")
    first = pos
    model: _Field | None = None
    parts = 0
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
        parts += 1
        if parts > MAX_PARTS:
            raise PayloadError(f"multipart body has more than {MAX_PARTS} parts", code="invalid_multipart")
        start = line_end + 2
        headers_end = body.find(b"\r\n\r\n", start - 2)
        next_delimiter = body.find(delimiter, start)
        if headers_end < 0 or next_delimiter < 0:
            raise _malformed("unterminated part (no closing boundary)")
        if next_delimiter < headers_end + 4:
            raise _malformed("part headers not terminated before the next boundary")
        name = _part_name(body[start:headers_end] if headers_end >= start else b"")
        if name == _FIELD:
            if model is not None:
                raise PayloadError(
                    "duplicate 'model' field in multipart body", code="duplicate_key", param="model"
                )
            model = _Field(headers_end + 4, next_delimiter, _utf8(body[headers_end + 4 : next_delimiter]))
        pos = next_delimiter + 2
    return _Parsed(boundary, first, model)


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("'model' is not valid UTF-8", code="invalid_model", param="model") from None


def _refuse_bare_lf_delimiters(body: bytes, dash: bytes) -> None:
    # A lenient parser would split on "\n--boundary" too; refuse what two parsers read differently.
    needle = b"\n" + dash
    at = body.find(needle)
    while at >= 0:
        if at == 0 or body[at - 1] != 0x0D:
            raise _malformed("boundary preceded by a bare LF")
        at = body.find(needle, at + 1)


def _part_name(block: bytes) -> str:
    """The form-field name from a part's header block; validates the model part strictly."""
    disposition: str | None = None
    encoding: str | None = None
    for line in block.split(_CRLF) if block else ():
        m = _HEADER.fullmatch(line)
        if m is None or b"\r" in line or b"\n" in line:
            raise _malformed("invalid part header line")
        header = m.group(1).lower()
        value = m.group(2).decode("latin-1")
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
