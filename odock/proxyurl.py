"""How a proxy URL with a password is shown: the control plane's answers and odockctl's output agree."""

from __future__ import annotations

from urllib.parse import urlsplit

MASKED_PASSWORD = "***"


def mask_proxy(value: str) -> str:
    """The proxy URL with its password (if any) shown as ``***``."""
    if "@" not in value:
        return value
    parts = urlsplit(value)
    if parts.password is None:
        return value
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{parts.scheme}://{user}:{MASKED_PASSWORD}@{hostport}"
