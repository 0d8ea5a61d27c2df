"""Envelope encryption of provider secrets under a keyring of KEKs."""

from control_plane.crypto.envelope import Envelope, decrypt, encrypt, rewrap
from control_plane.crypto.errors import CryptoError, KeyringError
from control_plane.crypto.keyring import Keyring, generate_kek_spec

__all__ = [
    "CryptoError",
    "Envelope",
    "Keyring",
    "KeyringError",
    "decrypt",
    "encrypt",
    "generate_kek_spec",
    "rewrap",
]
