"""Format of virtual keys and admin tokens, shared by both planes.

A key is ``PREFIX + base62(32 random bytes, 43 chars) + base62(crc32, 6 chars)``.
The checksum lets a data plane reject a mistyped or truncated key without any
lookup; it is not a security boundary (the 256 random bits are). Stored and
looked up only as HMAC-SHA-256 under a server-side pepper.
"""

from __future__ import annotations

import hmac
import secrets
import zlib

VIRTUAL_KEY_PREFIX = "odk-"
ADMIN_TOKEN_PREFIX = "odka-"

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_BODY_LEN = 43  # 62**43 > 2**256
_CHECK_LEN = 6  # 62**6 > 2**32
DIGEST_SIZE = 32


def _b62(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        out.append(_ALPHABET[rem])
    return "".join(reversed(out))


def _checksum(prefix: str, body: str) -> str:
    return _b62(zlib.crc32((prefix + body).encode("ascii")), _CHECK_LEN)


def generate(prefix: str = VIRTUAL_KEY_PREFIX) -> str:
    """A fresh key with 256 bits of randomness and a checksum."""
    body = _b62(int.from_bytes(secrets.token_bytes(32), "big"), _BODY_LEN)
    return prefix + body + _checksum(prefix, body)


def is_well_formed(key: str, prefix: str = VIRTUAL_KEY_PREFIX) -> bool:
    """True when ``key`` has the prefix, the length, the alphabet and a valid checksum."""
    if len(key) != len(prefix) + _BODY_LEN + _CHECK_LEN or not key.startswith(prefix):
        return False
    rest = key[len(prefix):]
    if any(c not in _INDEX for c in rest):
        return False
    body, check = rest[:_BODY_LEN], rest[_BODY_LEN:]
    return hmac.compare_digest(check, _checksum(prefix, body))


# HMAC objects keyed with a pepper, copied per digest: keying (hashing the pepper into the
# inner and outer states) is most of the cost of one short HMAC; a copy starts from those states.
_KEYED: dict[bytes, hmac.HMAC] = {}


def digest(pepper: bytes, key: str) -> bytes:
    """The keyed hash a key is stored and looked up by (HMAC-SHA256)."""
    keyed = _KEYED.get(pepper)
    if keyed is None:
        if len(_KEYED) >= 8:  # a process has one pepper (tests a few): bounded all the same
            _KEYED.clear()
        keyed = _KEYED[pepper] = hmac.new(pepper, digestmod="sha256")
    mac = keyed.copy()
    mac.update(key.encode("utf-8"))
    return mac.digest()


def display(key: str, prefix: str = VIRTUAL_KEY_PREFIX) -> str:
    """What listings show: the prefix and the last four characters."""
    return f"{prefix}…{key[-4:]}"
