"""Seal a secret to one data-plane node (an ECIES construction).

The node holds an X25519 key pair for its lifetime and sends the public half
with each route lookup; the control plane encrypts the provider key to it with
an ephemeral X25519 key, HKDF-SHA256 and AES-256-GCM. A captured response or a
dump of the node's cache is useless without the node's private key, which
never leaves its memory. ``context`` (e.g. the credential id) is bound as
associated data so a sealed blob cannot be replayed as another credential.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"odock.v1.sealing"
PUBLIC_KEY_SIZE = 32


@dataclass(frozen=True, slots=True)
class Sealed:
    ephemeral_public_key: bytes
    nonce: bytes
    ciphertext: bytes


def _raw(pub: X25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _kdf(shared: bytes, eph_pub: bytes, recipient_pub: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=eph_pub + recipient_pub, info=_INFO).derive(shared)


class NodeKeyPair:
    """A node's sealing key pair; the private half stays in process memory."""

    def __init__(self) -> None:
        self._private = X25519PrivateKey.generate()
        self.public_key: bytes = _raw(self._private.public_key())

    def open(self, sealed: Sealed, context: bytes) -> bytes:
        """Decrypt a secret sealed to this node; raises InvalidTag if tampered."""
        peer = X25519PublicKey.from_public_bytes(sealed.ephemeral_public_key)
        key = _kdf(self._private.exchange(peer), sealed.ephemeral_public_key, self.public_key)
        return AESGCM(key).decrypt(sealed.nonce, sealed.ciphertext, context)


def seal(recipient_public_key: bytes, plaintext: bytes, context: bytes) -> Sealed:
    """Encrypt ``plaintext`` so only the holder of the matching private key can read it."""
    if len(recipient_public_key) != PUBLIC_KEY_SIZE:
        raise ValueError("node public key must be 32 bytes (X25519)")
    recipient = X25519PublicKey.from_public_bytes(recipient_public_key)
    eph = X25519PrivateKey.generate()
    eph_pub = _raw(eph.public_key())
    key = _kdf(eph.exchange(recipient), eph_pub, recipient_public_key)
    nonce = os.urandom(12)
    return Sealed(eph_pub, nonce, AESGCM(key).encrypt(nonce, plaintext, context))
