"""Client request headers -> the headers sent upstream, with the provider's own key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:  # dialect.py imports this module (DROPPED_HEADERS)
    from data_plane.providers.dialect import Dialect

# Hop-by-hop (RFC 9110 7.6.1), framing the proxy recomputes, every client credential
# style, and client-address headers the gateway neither trusts nor leaks.
DROPPED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
        # aiohttp has already decoded a compressed request body: the bytes sent on are identity.
        "content-encoding",
        # Replaced by "identity" below.
        "accept-encoding",
        "authorization",
        "x-api-key",
        "x-goog-api-key",
        "api-key",
        "cookie",
        "forwarded",
        "x-real-ip",
        "x-odock-hop",
    }
)
DROPPED_PREFIXES = ("proxy-", "x-forwarded-")
# Set on every request the gateway forwards; a gateway refuses a request carrying it (508), so a
# model whose base URL points at a gateway costs one nested request, not a loop.
HOP_HEADER = "x-odock-hop"


def build_headers(
    dialect: Dialect, client_headers: Mapping[str, str] | Iterable[tuple[str, str]], secret: str | bytes
) -> dict[str, str]:
    """Forward the client's end-to-end headers, minus credentials, plus the provider key."""
    if isinstance(secret, bytes):
        secret = secret.decode("utf-8")
    if not secret or "\r" in secret or "\n" in secret or "\0" in secret:
        raise ValueError("provider secret is not a valid header value")  # never echo the secret
    drop = dialect.dropped_headers
    named: list[str] = []  # what a Connection header names is hop-by-hop too
    merged: dict[str, tuple[str, list[str]]] = {}
    # The request path passes the client's ``headers.items()``: an ABC check of that view against
    # Mapping is a slow miss, so a mapping is told by its ``items`` method.
    items = getattr(client_headers, "items", None)
    pairs = cast("Iterable[tuple[str, str]]", items() if items is not None else client_headers)
    for name, value in pairs:
        lower = name.lower()
        if lower in drop or lower.startswith(DROPPED_PREFIXES):
            if lower == "connection":
                named += (t.strip().lower() for t in value.split(","))
            continue
        entry = merged.get(lower)
        if entry is None:
            merged[lower] = (name, [value])
        else:
            entry[1].append(value)
    for token in named:
        merged.pop(token, None)
    out = {name: values[0] if len(values) == 1 else ", ".join(values) for name, values in merged.values()}
    for lower, value in dialect.default_headers.items():
        if lower not in merged:
            out[lower] = value
    # Uncompressed answers: usage is read from response bodies as they pass, and an
    # absent Accept-Encoding would, by RFC 9110, allow any coding.
    out["Accept-Encoding"] = "identity"
    out[HOP_HEADER] = "1"
    out[dialect.auth_header] = dialect.auth_prefix + secret
    return out
