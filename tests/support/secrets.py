"""Fresh secrets for test processes: KEKs, pepper, admin and node tokens."""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass, field


def kek() -> bytes:
    """A random 32-byte key-encryption key."""
    return os.urandom(32)


def keks_spec(keks: dict[str, bytes]) -> str:
    """``kid=BASE64,...`` in the given order (the last one encrypts)."""
    return ",".join(f"{kid}={base64.b64encode(k).decode('ascii')}" for kid, k in keks.items())


def pepper() -> bytes:
    """A random 32-byte HMAC pepper."""
    return os.urandom(32)


def token(prefix: str = "") -> str:
    """A random bearer token (>= 32 characters)."""
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class PlaneSecrets:
    """One consistent set of secrets for a control plane and its data planes."""

    keks: dict[str, bytes] = field(default_factory=lambda: {"kek1": kek()})
    pepper: bytes = field(default_factory=pepper)
    admin_token: str = field(default_factory=lambda: token("adm-"))
    node_token: str = field(default_factory=lambda: token("node-"))

    @property
    def pepper_b64(self) -> str:
        """The pepper as the environment carries it."""
        return base64.b64encode(self.pepper).decode("ascii")

    def control_plane_env(self) -> dict[str, str]:
        """The secret part of a control plane's environment."""
        return {
            "ODOCK_KEKS": keks_spec(self.keks),
            "ODOCK_KEY_PEPPER": self.pepper_b64,
            "ODOCK_ADMIN_TOKEN": self.admin_token,
            "ODOCK_NODE_TOKENS": self.node_token,
        }
