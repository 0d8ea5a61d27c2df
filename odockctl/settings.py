"""odockctl's settings from the environment (the only place it reads env)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from odockctl.errors import UsageError

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class CliSettings:
    """Defaults for the global flags; flags override them."""

    address: str = DEFAULT_ADDRESS
    token: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> CliSettings:
        """Read ODOCK_CP_ADDRESS, ODOCK_ADMIN_TOKEN[_FILE] and the TLS files."""
        token = environ.get("ODOCK_ADMIN_TOKEN") or None
        token_file = environ.get("ODOCK_ADMIN_TOKEN_FILE")
        if token is None and token_file:
            token = read_secret_file(token_file, "ODOCK_ADMIN_TOKEN_FILE")
        return cls(
            address=environ.get("ODOCK_CP_ADDRESS") or DEFAULT_ADDRESS,
            token=token,
            tls_ca_file=environ.get("ODOCK_CP_TLS_CA_FILE") or None,
            tls_cert_file=environ.get("ODOCK_CP_TLS_CERT_FILE") or None,
            tls_key_file=environ.get("ODOCK_CP_TLS_KEY_FILE") or None,
        )


def read_secret_file(path: str, what: str) -> str:
    """The stripped contents of a secret file; a one-line error when unreadable or empty."""
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not value:
        raise UsageError(f"{what}: {path} is empty")
    return value


def process_environ() -> Mapping[str, str]:
    """The process environment (kept here so no other module reads it)."""
    return os.environ
