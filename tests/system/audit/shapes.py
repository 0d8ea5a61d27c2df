"""Each family's error shape, checked strictly (what the official SDKs parse)."""

from __future__ import annotations

from typing import Any

FAMILY_ROUTES = {
    "openai": "/v1/chat/completions",
    "anthropic": "/v1/messages",
    "gemini": "/v1beta/models/gemini-flash:generateContent",
    "vllm": "/v1/vllm/chat/completions",
}
OWN_MODEL = {"openai": "gpt-chat", "anthropic": "claude", "gemini": "gemini-flash", "vllm": "llama"}
GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
}


def chat_body(family: str, model: str | None = None) -> dict[str, Any]:
    """A minimal valid request body for ``family``'s chat-like route."""
    model = model or OWN_MODEL[family]
    if family == "gemini":
        return {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if family == "anthropic":
        body["max_tokens"] = 16
    return body


def error_code(family: str, status: int, body: Any) -> str:
    """The gateway code in ``body`` after checking it is exactly ``family``'s error shape for ``status``."""
    assert isinstance(body, dict), body
    if family == "anthropic":
        assert set(body) == {"type", "error"} and body["type"] == "error", body
        err = body["error"]
        assert isinstance(err["type"], str) and isinstance(err["message"], str) and err["message"], err
        return str(err["code"])
    err = body["error"]
    assert set(body) == {"error"}, body
    assert isinstance(err["message"], str) and err["message"], err
    if family == "gemini":
        assert err["code"] == status and err["status"] == GEMINI_STATUS.get(status, err["status"]), err
        info = err["details"][0]
        assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" and info["domain"] == "odock.ai", (
            err
        )
        return str(info["reason"])
    assert set(err) == {"message", "type", "code", "param"}, err
    return str(err["code"])
