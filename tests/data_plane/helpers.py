"""Per-family requests and error-shape assertions shared by the data-plane tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

FAMILIES = ("openai", "anthropic", "gemini", "vllm")

# The chat-capable model of each family in tests.support.provision.STANDARD_MODELS.
CHAT_MODEL = {"openai": "gpt-chat", "anthropic": "claude", "gemini": "gemini-flash", "vllm": "llama"}

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}
_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@dataclass(frozen=True)
class NativeCall:
    """One request to a family's chat endpoint."""

    path: str
    body: bytes
    headers: dict[str, str]


def chat_call(family: str, model: str | None, *, stream: bool = False, key: str | None = None) -> NativeCall:
    """The chat request of ``family`` for ``model`` (None: no model in the body)."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if family == "gemini":
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        payload: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        return NativeCall(f"/v1beta/models/{model}:{method}", json.dumps(payload).encode(), headers)
    payload = {"messages": [{"role": "user", "content": "hi"}]}
    if family == "anthropic":
        payload["max_tokens"] = 16
    if model is not None:
        payload["model"] = model
    if stream:
        payload["stream"] = True
    path = {
        "openai": "/v1/chat/completions",
        "anthropic": "/v1/messages",
        "vllm": "/v1/vllm/chat/completions",
    }
    return NativeCall(path[family], json.dumps(payload).encode(), headers)


async def send(client: httpx.AsyncClient, call: NativeCall, **headers: str) -> httpx.Response:
    """POST ``call`` (extra headers merged in)."""
    return await client.post(call.path, content=call.body, headers={**call.headers, **headers})


def assert_error(family: str, resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """``resp`` is a gateway error of ``status`` in ``family``'s shape (with our ``code``); returns the body."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers.get("x-request-id")
    body: dict[str, Any] = resp.json()
    assert len(resp.content) < 2000, "error bodies stay short whatever the input"
    if family == "anthropic":
        assert body["type"] == "error"
        err = body["error"]
        assert err["type"] == _ANTHROPIC_TYPES[status] and isinstance(err["message"], str) and err["message"]
        if code is not None:
            assert err["code"] == code
    elif family == "gemini":
        err = body["error"]
        assert list(body) == ["error"]
        assert err["code"] == status and err["status"] == _GEMINI_STATUS[status] and err["message"]
        if code is not None:
            assert err["details"][0]["reason"] == code
    else:
        err = body["error"]
        assert set(err) == {"message", "type", "code", "param"}
        assert err["type"] == _OPENAI_TYPES[status] and err["message"]
        if code is not None:
            assert err["code"] == code
    return body
