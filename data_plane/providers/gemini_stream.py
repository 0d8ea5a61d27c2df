"""Gemini ``GenerateContentResponse`` -> OpenAI ``chat.completion`` and ``chat.completion.chunk`` (issue 13).

One candidate is one choice (its ``index``). Text parts are joined (``thought`` parts, the
model's reasoning summaries, are not content); each ``functionCall`` part is a tool call with a
generated id, stable for a reply id, choice and position, so a streamed reply reassembles to the
same message as the whole answer. Usage: ``completion_tokens`` counts ``candidatesTokenCount``
plus ``thoughtsTokenCount`` (Google bills thinking as output, OpenAI counts reasoning inside
completion tokens and reports it in ``completion_tokens_details.reasoning_tokens``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import orjson

from data_plane.providers.gemini import GenerateTap
from data_plane.providers.gemini_errors import error, stream_error
from data_plane.providers.translator import ReplyIds
from data_plane.usage.stream import event_fields
from data_plane.usage.tokens import MAX_TOKENS, shown_count

CONTENT_FILTER = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
                            "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT"})
DONE = b"data: [DONE]\n\n"
SIGNATURE_MARK = ".ts."
MAX_SIGNATURE = 16_384
SIGNATURE = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
_SIGNED_ID = re.compile(r"call_[0-9a-f]{24}\.ts\.([A-Za-z0-9+/_-]+={0,2})")


def finish_reason(reason: Any, has_calls: bool) -> str:
    """Gemini's ``finishReason`` -> OpenAI's (an unknown or missing one is ``stop``)."""
    if reason == "MAX_TOKENS":
        return "length"
    if reason in CONTENT_FILTER:
        return "content_filter"
    return "tool_calls" if has_calls else "stop"


def call_id(reply_id: str, choice: int, position: int) -> str:
    digest = hashlib.blake2b(f"{reply_id}/{choice}/{position}".encode(), digest_size=12).hexdigest()
    return f"call_{digest}"


def with_signature(tool_call_id: str, signature: str | None) -> str:
    """The tool call id carrying Gemini's ``thoughtSignature`` (Gemini 3 wants it back on the call's
    part in the next request, and the id is the only thing an OpenAI client echoes verbatim)."""
    if signature and len(signature) <= MAX_SIGNATURE and SIGNATURE.fullmatch(signature):
        return f"{tool_call_id}{SIGNATURE_MARK}{signature}"
    return tool_call_id


def signature_of(tool_call_id: str) -> str | None:
    """The ``thoughtSignature`` a tool call id of ours carries (None for any other id)."""
    found = _SIGNED_ID.fullmatch(tool_call_id)
    return found.group(1) if found else None


def usage(meta: Any) -> dict[str, Any]:
    """``usageMetadata`` -> OpenAI ``usage``."""
    meta = meta if isinstance(meta, dict) else {}

    def count(key: str) -> int:  # clamped as the meter clamps (beyond 64 bits it cannot be serialised)
        return shown_count(meta.get(key))

    prompt, thoughts = count("promptTokenCount"), count("thoughtsTokenCount")
    completion = min(count("candidatesTokenCount") + thoughts, MAX_TOKENS)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": count("cachedContentTokenCount")},
            "completion_tokens_details": {"reasoning_tokens": thoughts}}


def _parts(candidate: Mapping[str, Any]) -> list[Any]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return parts if isinstance(parts, list) else []


def split_parts(candidate: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(the text, the function calls {name, args}) of one candidate."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in _parts(candidate):
        if not isinstance(part, dict) or part.get("thought") is True:
            continue
        if isinstance(text := part.get("text"), str):
            texts.append(text)
        elif isinstance(fc := part.get("functionCall"), dict):
            args = fc.get("args")
            signature = part.get("thoughtSignature")
            calls.append({"name": str(fc.get("name", "")), "args": args if isinstance(args, dict) else {},
                          "signature": signature if isinstance(signature, str) else None})
    return "".join(texts), calls


def tool_call(reply_id: str, choice: int, position: int, call: Mapping[str, Any]) -> dict[str, Any]:
    arguments = orjson.dumps(call["args"]).decode()
    return {"id": with_signature(call_id(reply_id, choice, position), call.get("signature")), "type": "function",
            "function": {"name": call["name"], "arguments": arguments}}


def _index(candidate: Mapping[str, Any], default: int) -> int:
    index = candidate.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) and index >= 0 else default


def _candidates(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = response.get("candidates")
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


def _blocked(response: Mapping[str, Any]) -> bool:
    feedback = response.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def answer(body: bytes, ids: ReplyIds) -> dict[str, Any]:
    """A whole ``generateContent`` answer -> ``chat.completion``."""
    try:
        response = orjson.loads(body)
    except orjson.JSONDecodeError:
        response = None
    if not isinstance(response, dict):
        raise ValueError("the upstream answer is not a JSON object")  # noqa: TRY004 (a bad value, not a caller bug)
    choices: list[dict[str, Any]] = []
    for i, candidate in enumerate(_candidates(response)):
        index = _index(candidate, i)
        text, calls = split_parts(candidate)
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
        if calls:
            message["tool_calls"] = [tool_call(ids.id, index, k, c) for k, c in enumerate(calls)]
        choices.append({"index": index, "message": message, "logprobs": None,
                        "finish_reason": finish_reason(candidate.get("finishReason"), bool(calls))})
    if not choices:
        reason = "content_filter" if _blocked(response) else "stop"
        choices.append({"index": 0, "message": {"role": "assistant", "content": None}, "logprobs": None,
                        "finish_reason": reason})
    return {"id": ids.id, "object": "chat.completion", "created": ids.created, "model": ids.model,
            "choices": choices, "usage": usage(response.get("usageMetadata"))}


class GeminiChunkWriter:
    """One streamed reply: ``streamGenerateContent?alt=sse`` events -> OpenAI chunks.

    ``tap``: the native stream's usage tap, given each event's ``usageMetadata`` this writer decodes
    anyway, and raw the events it cannot read as the tap would (``reads_usage``: the relay then
    does not run the tap over the bytes; issue 16).
    """

    def __init__(self, ids: ReplyIds, include_usage: bool, tap: GenerateTap | None = None) -> None:
        self._tap = tap
        self.reads_usage = tap is not None
        self.ids = ids
        self.include_usage = include_usage
        self.started: set[int] = set()  # choices whose role was sent
        self.calls: dict[int, int] = {}  # choice -> tool calls sent
        self.finished: set[int] = set()
        self.usage_meta: Any = None
        self.failed = False
        self.blocked = False

    def _chunk(self, choices: list[dict[str, Any]], usage_value: Any = None) -> bytes:
        chunk: dict[str, Any] = {"id": self.ids.id, "object": "chat.completion.chunk", "created": self.ids.created,
                                 "model": self.ids.model, "choices": choices}
        if self.include_usage:
            chunk["usage"] = usage_value
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _choice(self, index: int, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        if index not in self.started:
            self.started.add(index)
            # OpenAI's first delta: the role, and content "" (null when the turn is tool calls).
            delta = {"role": "assistant", "content": None if "tool_calls" in delta else "", **delta}
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}

    def _candidate(self, candidate: Mapping[str, Any], default: int) -> dict[str, Any] | None:
        index = _index(candidate, default)
        if index in self.finished:
            return None
        text, calls = split_parts(candidate)
        delta: dict[str, Any] = {}
        if text:
            delta["content"] = text
        if calls:
            first = self.calls.get(index, 0)
            delta["tool_calls"] = [{"index": first + k, **tool_call(self.ids.id, index, first + k, c)}
                                   for k, c in enumerate(calls)]
            self.calls[index] = first + len(calls)
        reason = candidate.get("finishReason")
        mapped = finish_reason(reason, self.calls.get(index, 0) > 0) if reason else None
        if mapped:
            self.finished.add(index)
        if not delta and not mapped:  # e.g. a thought: nothing to say yet (not even the role)
            return None
        return self._choice(index, delta, mapped)

    def feed(self, event: bytes) -> bytes:
        tap = self._tap
        if self.failed:
            if tap is not None:  # usage after an error is still metered
                tap.unparsed(event)
            return b""
        _, data = event_fields(event)  # the tap's reading (a bare CR ends a line, as SSE says)
        if not data.strip():
            if tap is not None:
                tap.unparsed(event)
            return b""
        try:
            response = orjson.loads(data)
        except orjson.JSONDecodeError:
            response = None
        if tap is not None:  # before anything below can fail
            if isinstance(response, dict):
                if "usageMetadata" in response:
                    tap.parsed(response["usageMetadata"], event)
            else:
                tap.unparsed(event)
        if not isinstance(response, dict) or "error" in response:
            self.failed = True
            return stream_error(error(500, data) if response is None else error(0, data))
        if "usageMetadata" in response:
            self.usage_meta = response["usageMetadata"]
        self.blocked = self.blocked or _blocked(response)
        out = [c for i, cand in enumerate(_candidates(response)) if (c := self._candidate(cand, i)) is not None]
        return self._chunk(out) if out else b""

    def close(self) -> bytes:
        if self.failed:
            return b""
        tail = b""
        if not self.started:
            tail += self._chunk([self._choice(0, {"content": None})])
        open_choices = sorted(self.started - self.finished)
        if open_choices:
            blocked = "content_filter" if self.blocked else None
            tail += self._chunk([self._choice(i, {}, blocked or finish_reason(None, self.calls.get(i, 0) > 0))
                                 for i in open_choices])
            self.finished.update(open_choices)
        if self.include_usage:
            tail += self._chunk([], usage(self.usage_meta))
        return tail + DONE
