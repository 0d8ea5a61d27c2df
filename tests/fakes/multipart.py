"""A byte-exact multipart/form-data parser and builder for tests (no normalisation)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_DISPOSITION_PARAM = re.compile(r';\s*([a-zA-Z*]+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Part:
    """One part of a multipart body: its raw headers and exact data bytes."""

    headers: dict[str, str]
    data: bytes

    @property
    def name(self) -> str | None:
        """The form field name from Content-Disposition."""
        return self._param("name")

    @property
    def filename(self) -> str | None:
        """The filename from Content-Disposition, when this part is a file."""
        return self._param("filename")

    @property
    def content_type(self) -> str | None:
        """The part's own Content-Type header."""
        return self.headers.get("content-type")

    def _param(self, key: str) -> str | None:
        disposition = self.headers.get("content-disposition", "")
        for k, v in _DISPOSITION_PARAM.findall(disposition):
            if k.lower() == key:
                return str(v)
        return None


def boundary_of(content_type: str) -> str:
    """The boundary parameter of a multipart Content-Type."""
    m = _BOUNDARY.search(content_type)
    if m is None:
        raise ValueError("multipart content type without boundary")
    return m.group(1) or m.group(2)


def parse(body: bytes, content_type: str) -> list[Part]:
    """Split ``body`` into parts exactly as sent; raises ValueError when malformed."""
    delimiter = b"--" + boundary_of(content_type).encode("latin-1")
    segments = body.split(b"\r\n" + delimiter)
    first = segments[0]
    if not first.startswith(delimiter):
        raise ValueError("multipart body does not start with the boundary")
    segments[0] = first[len(delimiter):]
    parts: list[Part] = []
    for seg in segments:
        if seg.startswith(b"--"):
            return parts
        if not seg.startswith(b"\r\n"):
            raise ValueError("malformed multipart delimiter line")
        head, sep, data = seg[2:].partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("multipart part without header terminator")
        headers: dict[str, str] = {}
        for line in head.split(b"\r\n"):
            k, _, v = line.decode("utf-8", "surrogateescape").partition(":")
            headers[k.strip().lower()] = v.strip()
        parts.append(Part(headers, data))
    raise ValueError("multipart body without closing boundary")


def field(parts: list[Part], name: str) -> Part | None:
    """The first part named ``name``."""
    return next((p for p in parts if p.name == name), None)


def build(
    fields: list[tuple[str, str | tuple[str, bytes, str]]], boundary: str | None = None
) -> tuple[bytes, str]:
    """Encode fields (``value`` or ``(filename, data, content_type)``); returns (body, content type)."""
    b = boundary or "fakeboundary" + secrets.token_hex(8)
    out = bytearray()
    for name, value in fields:
        out += b"--" + b.encode() + b"\r\n"
        if isinstance(value, tuple):
            filename, data, ctype = value
            out += f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'.encode()
            out += f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n"
        else:
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            out += value.encode() + b"\r\n"
    out += b"--" + b.encode() + b"--\r\n"
    return bytes(out), f"multipart/form-data; boundary={b}"
