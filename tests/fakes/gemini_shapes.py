"""Gemini generateContent / streamGenerateContent bodies (SSE with alt=sse, else a streamed JSON array)."""

from __future__ import annotations

from typing import Any

from tests.fakes.reply import Ask, JsonReply, StreamReply, dumps, sse


def _usage(ask: Ask, candidates: int) -> dict[str, Any]:
    return {"promptTokenCount": ask.prompt_tokens, "candidatesTokenCount": candidates,
            "totalTokenCount": ask.prompt_tokens + candidates,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": ask.prompt_tokens}]}


def _chunk(ask: Ask, text: str, candidates: int, finish: bool) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if finish:
        cand["finishReason"] = "STOP"
    return {"candidates": [cand], "usageMetadata": _usage(ask, candidates),
            "modelVersion": ask.model, "responseId": "fakeResponse0001"}


def generate(ask: Ask) -> JsonReply | StreamReply:
    """:generateContent (whole answer) or :streamGenerateContent (one chunk per piece)."""
    if not ask.stream:
        return JsonReply(_chunk(ask, ask.text, ask.completion_tokens, True))
    chunks = [_chunk(ask, p, i + 1, i == len(ask.pieces) - 1) for i, p in enumerate(ask.pieces)]
    if ask.query.get("alt") == "sse":
        # Google ends its SSE events with CRLF pairs.
        return StreamReply([sse(c, newline="\r\n") for c in chunks], len(chunks) - 1,
                           content_type="text/event-stream")
    frames = [(b"[" if i == 0 else b",\r\n") + dumps(c) for i, c in enumerate(chunks)]
    frames.append(b"]")
    return StreamReply(frames, len(chunks) - 1, content_type="application/json; charset=UTF-8")
