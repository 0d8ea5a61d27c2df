"""Client request headers -> the headers sent upstream, with the provider's own key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from data_plane.providers.endpoint import Dialect

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
        # Replaced by "identity" below.
        "accept-encoding",
        "authorization",
        "x-api-key",
        "x-goog-api-key",
        "api-key",
        "cookie",
        "forwarded",
        "x-real-ip",
    }
)
DROPPED_PREFIXES = ("proxy-", "x-forwarded-")


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named.update(t.strip().lower() for t in value.split(",") if t.strip())
    return named


def build_headers(
    dialect: Dialect, client_headers: Mapping[str, str] | Iterable[tuple[str, str]], secret: str | bytes
) -> dict[str, str]:
    """Forward the client's end-to-end headers, minus credentials, plus the provider key."""
    if isinstance(secret, bytes):
        secret = secret.decode("utf-8")
    if not secret or any(c in secret for c in "\r\n\0"):
        raise ValueError("provider secret is not a valid header value")  # never echo the secret
    items = list(client_headers.items() if isinstance(client_headers, Mapping) else client_headers)
    drop = DROPPED_HEADERS | dialect.drop_headers | _connection_tokens(items)
    merged: dict[str, tuple[str, list[str]]] = {}
    for name, value in items:
        lower = name.lower()
        if lower in drop or lower.startswith(DROPPED_PREFIXES):
            continue
        if lower in merged:
            merged[lower][1].append(value)
        else:
            merged[lower] = (name, [value])
    out = {name: ", ".join(values) for name, values in merged.values()}
    for lower, value in dialect.default_headers.items():
        if lower not in merged:
            out[lower] = value
    # Uncompressed answers: usage is read from response bodies as they pass, and an
    # absent Accept-Encoding would, by RFC 9110, allow any coding.
    out["Accept-Encoding"] = "identity"
    out[dialect.auth_header] = dialect.auth_prefix + secret
    return out
