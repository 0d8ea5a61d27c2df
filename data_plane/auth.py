"""Virtual-key extraction: every auth style the provider SDKs use, checked offline first.

The plaintext key is only ever turned into its keyed digest here; it is never
forwarded upstream (``providers.headers.build_headers`` strips every client auth header),
logged, or echoed in an error message.
"""

from __future__ import annotations

from aiohttp import web

from data_plane.errors import GatewayError
from odock import keyformat

MISSING_KEY = (
    "Missing API key: send it as 'Authorization: Bearer <key>', 'x-api-key', 'x-goog-api-key' or '?key='"
)
MALFORMED_KEY = "Invalid API key: not a well-formed Odock virtual key"


def presented_key(request: web.BaseRequest) -> str | None:
    """The key in the first auth style present (Bearer, x-api-key, x-goog-api-key, ?key=)."""
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    for header in ("x-api-key", "x-goog-api-key"):
        value = request.headers.get(header)
        if value is not None and value.strip():
            return value.strip()
    value = request.query.get("key")
    if value:
        return value.strip()
    if authorization is not None:
        return authorization.strip()  # an unknown scheme: fails the format check below
    return None


# Digests of keys already found well-formed (never the keys themselves): the checksum test
# costs twice the HMAC, and a busy key is presented again and again.
_WELL_FORMED: dict[bytes, None] = {}
_WELL_FORMED_MAX = 4096


def key_digest(request: web.BaseRequest, pepper: bytes) -> bytes:
    """The keyed digest of the presented key; 401 without any lookup when absent or malformed."""
    key = presented_key(request)
    if not key:
        raise GatewayError(401, "missing_api_key", MISSING_KEY)
    if not key.isascii():  # a header with non-UTF-8 bytes arrives with surrogates
        raise GatewayError(401, "invalid_api_key", MALFORMED_KEY)
    digest = keyformat.digest(pepper, key)
    if digest not in _WELL_FORMED:
        if not keyformat.is_well_formed(key):
            raise GatewayError(401, "invalid_api_key", MALFORMED_KEY)
        if len(_WELL_FORMED) >= _WELL_FORMED_MAX:
            _WELL_FORMED.clear()
        _WELL_FORMED[digest] = None
    return digest
