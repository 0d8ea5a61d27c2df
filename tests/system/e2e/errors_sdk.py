"""Call each family's SDK and check the exception it raises for a gateway error."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
from google.genai import errors as genai_errors

from tests.system.e2e.clients import anthropic_client, gemini_client, openai_client, vllm_client

MSGS: Any = [{"role": "user", "content": "hi"}]

OPENAI_CLASSES: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError, 401: openai.AuthenticationError, 403: openai.PermissionDeniedError,
    404: openai.NotFoundError, 429: openai.RateLimitError, 502: openai.InternalServerError,
    503: openai.InternalServerError, 504: openai.InternalServerError, 413: openai.APIStatusError,
}
ANTHROPIC_CLASSES: dict[int, type[anthropic.APIStatusError]] = {
    400: anthropic.BadRequestError, 401: anthropic.AuthenticationError, 403: anthropic.PermissionDeniedError,
    404: anthropic.NotFoundError, 413: anthropic.ContentTooLargeError, 429: anthropic.RateLimitError,
    502: anthropic.InternalServerError, 503: anthropic.InternalServerError, 504: anthropic.InternalServerError,
}


async def call(family: str, gateway: str, key: str, model: str) -> None:
    """One non-streaming request through ``family``'s SDK."""
    if family in ("openai", "vllm"):
        make = openai_client if family == "openai" else vllm_client
        async with make(gateway, key) as oc:
            await oc.chat.completions.create(model=model, messages=MSGS)
    elif family == "anthropic":
        async with anthropic_client(gateway, key) as ac:
            await ac.messages.create(model=model, max_tokens=16, messages=MSGS)
    else:
        await gemini_client(gateway, key).aio.models.generate_content(model=model, contents="hi")


async def raised(family: str, gateway: str, key: str, model: str) -> BaseException:
    """The exception ``call`` raises (fails the test when it raises none)."""
    try:
        await call(family, gateway, key, model)
    except Exception as exc:  # noqa: BLE001 - the type is what the caller checks
        return exc
    raise AssertionError(f"{family}: no error for model {model!r}")


def check(family: str, exc: BaseException, status: int, code: str | None = None,
          forbidden: str = "") -> str:
    """``exc`` is the SDK's usual class for ``status``, carries a message (returned) and ``code``."""
    if family in ("openai", "vllm"):
        assert isinstance(exc, OPENAI_CLASSES[status]), repr(exc)
        assert exc.status_code == status
        assert isinstance(exc.body, dict), exc.body
        message, got_code = exc.body["message"], exc.body.get("code")
        assert set(exc.body) >= {"message", "type", "code", "param"}
    elif family == "anthropic":
        assert isinstance(exc, ANTHROPIC_CLASSES[status]), repr(exc)
        assert exc.status_code == status
        assert isinstance(exc.body, dict) and exc.body["type"] == "error", exc.body
        message, got_code = exc.body["error"]["message"], exc.body["error"].get("code")
        assert isinstance(exc.body["error"]["type"], str)
    else:
        expected = genai_errors.ClientError if status < 500 else genai_errors.ServerError
        assert isinstance(exc, expected), repr(exc)
        assert exc.code == status and isinstance(exc.status, str)
        message, got_code = exc.message, None
        details = exc.details.get("error", {}).get("details", []) if isinstance(exc.details, dict) else []
        got_code = next((d.get("reason") for d in details if isinstance(d, dict) and "reason" in d), None)
    assert isinstance(message, str) and message and message in str(exc)
    if code is not None and family != "gemini":
        assert got_code == code, (got_code, message)
    if code is not None and family == "gemini" and got_code is not None:
        assert got_code == code
    if forbidden:
        assert forbidden not in str(exc) and forbidden[4:-6] not in str(exc)
    return message
