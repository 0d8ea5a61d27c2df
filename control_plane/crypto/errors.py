"""Crypto errors. Messages never include key material or plaintext.

ValueError
 └── KeyringError   a malformed KEK specification (configuration error)
CryptoError         decryption refused: tampered, row-swapped, or unknown KEK
"""

from __future__ import annotations


class KeyringError(ValueError):
    """The KEK specification is malformed."""


class CryptoError(Exception):
    """A ciphertext could not be authenticated or its KEK is not configured."""
