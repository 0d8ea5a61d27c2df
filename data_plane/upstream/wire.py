"""Serialising a request head: one bytes object, checked for header injection in one pass."""

from __future__ import annotations

from collections.abc import Mapping

from data_plane.upstream.body import BodySource

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def encode_head(
    method: str, target: str, host_header: str, headers: Mapping[str, str], body: bytes | BodySource | None
) -> bytes:
    """The request line and headers (Host and Content-Length added); ValueError if a name or value holds CR/LF."""
    lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    if isinstance(body, bytes):
        length = f"Content-Length: {len(body)}\r\n"
    elif body is not None:
        length = f"Content-Length: {body.length}\r\n"
    elif method in _BODY_METHODS:
        length = "Content-Length: 0\r\n"
    else:
        length = ""
    head = f"{method} {target} HTTP/1.1\r\nHost: {host_header}\r\n{lines}{length}\r\n"
    # Every line ends with exactly one CRLF: any other CR or LF came from a name or value.
    expected = len(headers) + (4 if length else 3)
    if head.count("\n") != expected or head.count("\r") != expected:
        raise ValueError("CR or LF in an upstream request header")
    return head.encode("utf-8", "surrogateescape")
