"""What a careless or broken provider does: echo the key it received, never end an event."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web
from multidict import CIMultiDict

from tests.fakes.errors import native_error
from tests.fakes.reply import dumps


def received_key(family: str, headers: CIMultiDict[str]) -> str:
    """The provider key a request carried, in the family's header."""
    if family == "anthropic":
        return headers.get("x-api-key", "")
    if family == "gemini":
        return headers.get("x-goog-api-key", "")
    return headers.get("Authorization", "").removeprefix("Bearer ")


def echo_error(
    family: str, headers: CIMultiDict[str], how: str | None, extra: dict[str, str]
) -> web.Response:
    """A 401 repeating the received key: in its message (raw and as a key= query) or in a header."""
    key = received_key(family, headers)
    if how == "header":
        message = "fake: key rejected"
        extra = {**extra, "X-Echo-Key": key}
    else:
        message = f"Incorrect API key provided: {key}. Retry at https://example.invalid/v1?key={quote(key, safe='')}"
    return web.Response(status=401, body=dumps(native_error(family, 401, message)),
                        content_type="application/json", headers=extra)  # fmt: skip


async def unterminated(resp: web.StreamResponse, size: int) -> None:
    """One SSE event of ``size`` bytes without its blank line, in 64 KiB writes."""
    await resp.write(b"data: ")
    block = b"x" * 65536
    sent = 0
    while sent < size:
        await resp.write(block[: size - sent])
        sent += len(block)
