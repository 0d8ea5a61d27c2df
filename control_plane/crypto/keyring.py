"""Key-encryption keys (KEKs) by id, loaded from a ``kid1=BASE64,kid2=BASE64`` spec.

The last KEK in the spec is the newest: it wraps new data keys. Every KEK in
the spec can unwrap, so a KEK is retired only after ``rewrap`` has moved every
secret off it.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterator, Mapping

from control_plane.crypto.errors import CryptoError, KeyringError

KEK_SIZE = 32
KID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _decode_key(where: str, text: str) -> bytes:
    compact = text.strip()
    padded = compact + "=" * (-len(compact) % 4)
    try:
        # Accept the URL-safe alphabet and missing padding, but nothing else.
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"{where}: value is not valid base64") from None
    if len(raw) != KEK_SIZE:
        raise KeyringError(f"{where}: must decode to {KEK_SIZE} bytes, got {len(raw)}")
    return raw


def _check_kid(kid: str, where: str = "KEK") -> None:
    if not KID_RE.fullmatch(kid):
        raise KeyringError(f"{where}: id must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}")


class Keyring:
    """An ordered, immutable set of 32-byte KEKs; the last one is the newest."""

    __slots__ = ("_keys", "_newest")

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        if not keys:
            raise KeyringError("at least one KEK is required")
        checked: dict[str, bytes] = {}
        for position, (kid, key) in enumerate(keys.items(), start=1):
            _check_kid(kid, f"KEK #{position}")
            if len(key) != KEK_SIZE:
                raise KeyringError(f"KEK #{position}: must be {KEK_SIZE} bytes, got {len(key)}")
            checked[kid] = bytes(key)
        self._keys = checked
        self._newest = next(reversed(checked))

    @classmethod
    def from_spec(cls, spec: str) -> Keyring:
        """Parse ``kid1=BASE64,kid2=BASE64`` (last = newest).

        Errors name entries by position only: a malformed entry may be a pasted key.
        """
        keys: dict[str, bytes] = {}
        first_seen: dict[str, int] = {}
        entries = [e.strip() for e in spec.replace("\n", ",").split(",")]
        for position, entry in enumerate(entries, start=1):
            if not entry:
                continue
            where = f"KEK entry #{position}"
            kid, sep, value = entry.partition("=")
            kid = kid.strip()
            if not sep or not kid or not value.strip():
                raise KeyringError(f"{where}: must look like kid=BASE64")
            _check_kid(kid, where)
            if kid in keys:
                raise KeyringError(f"{where}: id repeats KEK entry #{first_seen[kid]}")
            keys[kid] = _decode_key(where, value)
            first_seen[kid] = position
        if not keys:
            raise KeyringError("at least one KEK is required (kid=BASE64)")
        return cls(keys)

    @property
    def newest_id(self) -> str:
        """Id of the KEK that wraps new data keys."""
        return self._newest

    @property
    def ids(self) -> tuple[str, ...]:
        """All KEK ids, oldest first."""
        return tuple(self._keys)

    def get(self, kid: str) -> bytes:
        """The KEK named ``kid``; ``CryptoError`` when it is not configured."""
        try:
            return self._keys[kid]
        except KeyError:
            raise CryptoError(f"unknown KEK id {kid!r}: not in the configured keyring") from None

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Keyring(ids={list(self._keys)!r}, newest={self._newest!r})"


def generate_kek_spec(kid: str) -> str:
    """A fresh random KEK as one ``kid=BASE64`` spec entry (for setup tooling)."""
    _check_kid(kid, "KEK")
    return f"{kid}={base64.b64encode(secrets.token_bytes(KEK_SIZE)).decode('ascii')}"
