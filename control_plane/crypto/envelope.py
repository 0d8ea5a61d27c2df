"""Envelope encryption of provider secrets with AES-256-GCM.

Each secret gets a fresh random 32-byte data key (DEK). The secret is sealed
with the DEK, the DEK is wrapped by the keyring's newest KEK; both are stored
as ``nonce || ciphertext+tag``. Associated data binds the secret's ciphertext
to the row id, and the wrapped DEK to the row id and the KEK id, so a
ciphertext copied onto another row, relabelled with another KEK id, or altered
by one byte fails authentication instead of decrypting to something else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from control_plane.crypto.errors import CryptoError
from control_plane.crypto.keyring import Keyring

DEK_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
_SECRET_DOMAIN = b"odock.v1.credential.secret"
_DEK_DOMAIN = b"odock.v1.credential.dek"


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a credential row stores: KEK id, wrapped DEK and sealed secret."""

    kek_id: str
    wrapped_dek: bytes
    ciphertext: bytes

    def __repr__(self) -> str:
        return f"Envelope(kek_id={self.kek_id!r}, wrapped_dek=<{len(self.wrapped_dek)} bytes>, ciphertext=<{len(self.ciphertext)} bytes>)"


def _frame(*parts: bytes) -> bytes:
    # Length-prefixed so no two different (domain, ids) tuples share an encoding.
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _secret_ad(row_id: str) -> bytes:
    return _frame(_SECRET_DOMAIN, row_id.encode("utf-8"))


def _dek_ad(kek_id: str, row_id: str) -> bytes:
    return _frame(_DEK_DOMAIN, kek_id.encode("utf-8"), row_id.encode("utf-8"))


def _seal(key: bytes, plaintext: bytes, ad: bytes) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, ad)


def _open(key: bytes, blob: bytes, ad: bytes, what: str, row_id: str) -> bytes:
    if len(blob) < NONCE_SIZE + TAG_SIZE:
        raise CryptoError(f"credential {row_id!r}: {what} is truncated")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], ad)
    except InvalidTag:
        raise CryptoError(
            f"credential {row_id!r}: {what} failed authentication (tampered, or copied from another row)"
        ) from None


def _unwrap_dek(keyring: Keyring, env: Envelope, row_id: str) -> bytes:
    kek = keyring.get(env.kek_id)
    dek = _open(kek, env.wrapped_dek, _dek_ad(env.kek_id, row_id), "wrapped data key", row_id)
    if len(dek) != DEK_SIZE:
        raise CryptoError(f"credential {row_id!r}: wrapped data key has the wrong size")
    return dek


def encrypt(keyring: Keyring, secret: bytes, row_id: str) -> Envelope:
    """Seal ``secret`` for the row ``row_id`` under a fresh DEK wrapped by the newest KEK."""
    if not row_id:
        raise ValueError("row_id is required")
    if not secret:
        # An empty secret would make "decrypts to empty" ambiguous; refuse it up front.
        raise ValueError("secret is empty")
    dek = AESGCM.generate_key(bit_length=DEK_SIZE * 8)
    kek_id = keyring.newest_id
    return Envelope(
        kek_id=kek_id,
        wrapped_dek=_seal(keyring.get(kek_id), dek, _dek_ad(kek_id, row_id)),
        ciphertext=_seal(dek, secret, _secret_ad(row_id)),
    )


def decrypt(keyring: Keyring, env: Envelope, row_id: str) -> bytes:
    """Open the secret of row ``row_id``; ``CryptoError`` on tamper, row swap or unknown KEK."""
    dek = _unwrap_dek(keyring, env, row_id)
    secret = _open(dek, env.ciphertext, _secret_ad(row_id), "ciphertext", row_id)
    if not secret:
        raise CryptoError(f"credential {row_id!r}: decrypted to an empty secret")
    return secret


def rewrap(keyring: Keyring, env: Envelope, row_id: str) -> Envelope:
    """Wrap the same DEK under the newest KEK; the secret's ciphertext is unchanged.

    The secret is authenticated first, so a damaged row fails here rather than
    being carried forward under the new KEK.
    """
    dek = _unwrap_dek(keyring, env, row_id)
    _open(dek, env.ciphertext, _secret_ad(row_id), "ciphertext", row_id)
    if env.kek_id == keyring.newest_id:
        return env
    kek_id = keyring.newest_id
    return Envelope(
        kek_id=kek_id,
        wrapped_dek=_seal(keyring.get(kek_id), dek, _dek_ad(kek_id, row_id)),
        ciphertext=env.ciphertext,
    )
