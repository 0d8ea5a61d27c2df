"""Prefixed random ids: ``org_``, ``cred_``, ``mdl_``, ``key_``, ``tok_`` + 26 base32 chars."""

from __future__ import annotations

import base64
import secrets

ORG = "org"
CREDENTIAL = "cred"
MODEL = "mdl"
KEY = "key"
ADMIN_TOKEN = "tok"
DEPLOYMENT = "dpl"


def new_id(prefix: str) -> str:
    """A fresh id: ``prefix_`` + 128 random bits as 26 lowercase base32 characters."""
    body = base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()
    return f"{prefix}_{body}"

