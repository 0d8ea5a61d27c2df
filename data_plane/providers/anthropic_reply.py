"""Anthropic Messages -> OpenAI chat completions: the answer, the stream and errors (issue 13).

The request side and the decisions behind it are ``anthropic_chat.py``. A ``tool_use`` of the
reserved JSON tool (JSON output) is message content, never a tool call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from data_plane.providers.anthropic import MessagesTap
from data_plane.providers.translator import ChunkWriter, OpenAIError, ReplyIds
from data_plane.usage.stream import StreamTap
from data_plane.usage.tokens import MAX_TOKENS, shown_count

# The reserved tool that carries JSON output (anthropic_chat adds it for response_format).
JSON_TOOL = "json_answer"
MAX_MESSAGE = 512
_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# The HTTP status behind each Anthropic error type (a stream's ``error`` event has none).
_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
_OVERFLOW_MARKERS = ("prompt is too long", "exceed context limit", "context window")


def _parsed(raw: bytes) -> dict[str, Any] | None:
    """``raw`` as a JSON object; None when it is not one."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _object(raw: bytes) -> dict[str, Any]:
    return _parsed(raw) or {}


def _count(usage: Mapping[str, Any], name: str) -> int:
    # Clamped as the meter clamps (a count beyond 64 bits could not even be serialised).
    return shown_count(usage.get(name))


def openai_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic usage -> OpenAI's: cache reads and writes are prompt tokens too."""
    read = _count(usage, "cache_read_input_tokens")
    prompt = min(_count(usage, "input_tokens") + read + _count(usage, "cache_creation_input_tokens"), MAX_TOKENS)
    completion = _count(usage, "output_tokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": read},
    }


def _finish(stop_reason: object, tool_calls: bool) -> str:
    reason = _STOP.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"
    return "stop" if reason == "tool_calls" and not tool_calls else reason


def _clip(text: str) -> str:
    cleaned = "".join(c if c.isprintable() else " " for c in text[: MAX_MESSAGE + 1])
    return cleaned if len(cleaned) <= MAX_MESSAGE else cleaned[:MAX_MESSAGE] + "..."


def map_error(status: int, body: bytes) -> OpenAIError:
    """Anthropic's error (any body, even garbage) in OpenAI's shape; never echoes a 401/403."""
    found = _object(body).get("error")
    detail: dict[str, Any] = found if isinstance(found, dict) else {}
    kind = detail["type"] if isinstance(detail.get("type"), str) else ""
    said: str = detail["message"] if isinstance(detail.get("message"), str) else ""
    message = _clip(said) or f"the provider answered HTTP {status}"
    if status in (401, 403):
        return OpenAIError(
            502,
            "the provider refused the gateway's credentials for this model",
            "server_error",
            "upstream_auth",
        )
    if status == 404:
        return OpenAIError(404, message, "invalid_request_error", "model_not_found")
    if status == 429:
        return OpenAIError(429, message, "rate_limit_error", "rate_limit_exceeded")
    if status == 529 or kind == "overloaded_error" or status == 503:
        return OpenAIError(503, message, "server_error", "overloaded")
    if status >= 500:
        return OpenAIError(502, message, "server_error", "upstream_error")
    lowered = said[:4096].lower()
    if any(m in lowered for m in _OVERFLOW_MARKERS):
        return OpenAIError(400, message, "invalid_request_error", "context_length_exceeded", "messages")
    if status == 413:
        return OpenAIError(413, message, "invalid_request_error", "request_too_large")
    return OpenAIError(status if 400 <= status < 500 else 400, message, "invalid_request_error", kind or None)


def map_answer(body: bytes, ids: ReplyIds) -> dict[str, Any]:
    """A Messages answer as a ``chat.completion`` (ValueError: not a Messages answer)."""
    answer = _object(body)
    blocks = answer.get("content")
    if not isinstance(blocks, list):  # a bad value from upstream (the gateway answers 502)
        raise ValueError("the provider's answer is not a Messages object")  # noqa: TRY004
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    answer_json: str | None = None
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input", {})).decode()
            if block.get("name") == JSON_TOOL:
                answer_json = arguments if answer_json is None else answer_json
            else:
                function = {"name": block.get("name"), "arguments": arguments}
                calls.append({"id": block.get("id"), "type": "function", "function": function})
    if answer_json is not None:  # the JSON output is the whole content (any text beside it breaks parsing)
        texts = [answer_json]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    usage = answer.get("usage")
    return {
        "id": ids.id,
        "object": "chat.completion",
        "created": ids.created,
        "model": ids.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish(answer.get("stop_reason"), bool(calls)),
            }
        ],
        "usage": openai_usage(usage if isinstance(usage, dict) else {}),
    }


_NO_FINISH = b',"logprobs":null,"finish_reason":null}]}\n\n'
# A text delta event as Anthropic sends most of a stream's events (one data line, LF ends,
# compact JSON in its key order, the text last): its head, then the text's JSON string literal,
# then '"}}'. A literal without a backslash, a quote or a control character that is valid UTF-8
# decodes and re-encodes (orjson) to the same bytes, so it is copied into the chunk without
# parsing the event; anything else takes the general path.
_TEXT_DELTA_HEAD = re.compile(
    rb'(?:event: ?content_block_delta\n)?data: ?\{"type":"content_block_delta","index":(?:0|[1-9][0-9]{0,8}),'
    rb'"delta":\{"type":"text_delta","text":"'
)
_NOT_PLAIN = re.compile(rb'[\x00-\x1f"\\]')
# Four events of every text stream that carry nothing for the client beyond what their type
# says, whole as Anthropic sends them (one data line, LF ends, compact JSON): a ping, message_stop,
# a block's stop, a text block's empty start. Answered without decoding them; any other bytes
# (a duplicate key, another member, spaces) take the general path.
_TRIVIAL = re.compile(
    rb'(?:event: ?[a-z_]{1,32}\n)?data: ?\{"type":"(?:'
    rb'(?P<plain>ping|message_stop)"'
    rb'|content_block_stop","index":(?P<stop>0|[1-9][0-9]{0,8})'
    rb'|content_block_start","index":(?:0|[1-9][0-9]{0,8}),"content_block":\{"type":"text","text":""\}'
    rb")\}"
)


class MessagesChunks:
    """One Messages SSE stream as ``chat.completion.chunk`` lines, each event as it arrives.

    ``tap``: the native stream's usage tap, given the ``message_start``/``message_delta`` events
    this writer decodes anyway, and the events it cannot decode, raw (``reads_usage``: the relay
    then does not run the tap over the bytes).
    """

    def __init__(self, ids: ReplyIds, include_usage: bool, tap: MessagesTap | None = None) -> None:
        self._head: dict[str, Any] = {
            "id": ids.id,
            "object": "chat.completion.chunk",
            "created": ids.created,
            "model": ids.model,
        }
        if include_usage:
            self._head["usage"] = None
        # Every chunk is the head then one choice: its bytes up to the delta, serialised once
        # (orjson keeps insertion order, so the chunk is byte for byte the whole dict's dump).
        self._prefix = b"data: " + orjson.dumps(self._head)[:-1] + b',"choices":[{"index":0,"delta":'
        self._include_usage = include_usage
        self._started = False
        self._done = False
        self._usage: dict[str, Any] = {}
        self._stop: object = None
        self._blocks: dict[int, list[Any]] = {}  # block index -> [tool index or -1 (JSON), pieces sent]
        self._tools = 0
        self._json_seen = False
        self._stopped = False  # message_stop seen: the stream ended, not merely the connection
        self._tap = tap
        self.reads_usage = tap is not None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        end = (
            _NO_FINISH
            if finish is None
            else b',"logprobs":null,"finish_reason":' + orjson.dumps(finish) + b"}]}\n\n"
        )
        return b"".join((self._prefix, orjson.dumps(delta), end))

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._chunk({"role": "assistant", "content": "", "refusal": None})

    def _arguments(self, block: list[Any], piece: str) -> bytes:
        block[1] = True
        if block[0] < 0:
            return self._chunk({"content": piece})
        return self._chunk({"tool_calls": [{"index": block[0], "function": {"arguments": piece}}]})

    def feed(self, event: bytes) -> bytes:
        if self._done:
            if self._tap is not None:  # usage after an error event is still metered
                self._tap.unparsed(event)
            return b""
        head = _TEXT_DELTA_HEAD.match(event)
        if head is not None and event.endswith(b'"}}') and not self._json_seen:
            text = event[head.end() : -3]
            if text and _NOT_PLAIN.search(text) is None and (text.isascii() or _is_utf8(text)):
                # The general path's chunk, byte for byte (tests/data_plane/translated/test_stream_fast_paths.py).
                return self._start() + self._prefix + b'{"content":"' + text + b'"}' + _NO_FINISH
        elif head is None and (trivial := _TRIVIAL.fullmatch(event)) is not None:
            return self._trivial(trivial)
        data = _data(event)
        ev = _parsed(data) if data else None
        if ev is None:
            if self._tap is not None:
                self._tap.unparsed(event)  # the tap decides whether it is a broken usage report
            return b""
        kind = ev.get("type")
        if kind == "message_start":
            message = ev.get("message")
            if self._tap is not None:
                self._tap.parsed(kind, message, None, event)
            usage = message.get("usage") if isinstance(message, dict) else None
            if isinstance(usage, dict):
                self._usage.update(usage)
            return self._start()
        if kind == "content_block_delta":
            delta = ev.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str) and delta["text"]:
                if self._json_seen:  # the JSON output is the content's end (as in map_answer)
                    return b""
                return self._start() + self._chunk({"content": delta["text"]})
            block = self._blocks.get(_index(ev))
            piece = delta.get("partial_json")
            if (
                delta.get("type") == "input_json_delta"
                and block is not None
                and isinstance(piece, str)
                and piece
            ):
                return self._start() + self._arguments(block, piece)
            return b""
        if kind == "content_block_start":
            return self._start() + self._block_start(ev)
        if kind == "content_block_stop":
            block = self._blocks.pop(_index(ev), None)
            # A tool without input streams no pieces; the answer would say "{}".
            return self._arguments(block, "{}") if block is not None and not block[1] else b""
        if kind == "message_delta":
            if self._tap is not None:
                self._tap.parsed(kind, None, ev.get("usage"), event)
            delta = ev.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason") is not None:
                self._stop = delta["stop_reason"]
            usage = ev.get("usage")
            if isinstance(usage, dict):
                self._usage.update({k: v for k, v in usage.items() if v is not None})
            return b""
        if kind == "error":
            self._done = True
            err = map_error(_TYPE_STATUS.get(_error_type(ev), 500), data)
            return b"data: " + orjson.dumps(err.body()) + b"\n\n"
        if kind == "message_stop":
            self._stopped = True
        return b""  # ping, message_stop, and whatever Anthropic adds later

    def _trivial(self, event: re.Match[bytes]) -> bytes:
        """What ``feed`` answers for a ``_TRIVIAL`` event (as the general path would)."""
        plain, stop = event["plain"], event["stop"]
        if plain is not None:
            if plain == b"message_stop":
                self._stopped = True
            return b""
        if stop is not None:
            block = self._blocks.pop(int(stop), None)
            return self._arguments(block, "{}") if block is not None and not block[1] else b""
        return self._start()  # an empty text block's start: nothing of its own

    def _block_start(self, ev: Mapping[str, Any]) -> bytes:
        block = ev.get("content_block")
        index = ev.get("index")
        if not isinstance(block, dict) or not isinstance(index, int):
            return b""
        if block.get("type") == "text" and isinstance(block.get("text"), str) and block["text"]:
            return b"" if self._json_seen else self._chunk({"content": block["text"]})
        if block.get("type") != "tool_use":
            return b""
        if block.get("name") == JSON_TOOL:
            if not self._json_seen:  # the first JSON output only, as in map_answer
                self._json_seen = True
                self._blocks[index] = [-1, False]
            return b""
        self._blocks[index] = [self._tools, False]
        call = {
            "index": self._tools,
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": ""},
        }
        self._tools += 1
        return self._chunk({"tool_calls": [call]})

    def close(self) -> bytes:
        if self._done:
            return b""
        if not self._stopped:
            # A body cut short (a proxy, a dropped connection ending cleanly) must not pass for a
            # whole answer: the relay answers an error chunk instead of finish_reason and [DONE].
            raise ValueError("the provider's stream ended before message_stop")
        self._done = True
        out = self._start() + self._chunk({}, _finish(self._stop, self._tools > 0))
        if self._include_usage:
            final = {**self._head, "choices": [], "usage": openai_usage(self._usage)}
            out += b"data: " + orjson.dumps(final) + b"\n\n"
        return out + b"data: [DONE]\n\n"


def _data(event: bytes) -> bytes:
    """The event's data lines, each stripped, joined by newlines."""
    at = event.find(b"data:")
    if (
        (at == 0 or (at > 0 and event[at - 1] == 10))
        and b"\r" not in event
        and event.find(b"\ndata:", at) < 0
    ):
        # One data line and LF line ends (what Anthropic sends): no line-by-line walk.
        end = event.find(b"\n", at)
        return (event[at + 5 :] if end < 0 else event[at + 5 : end]).strip()
    return b"\n".join(line[5:].strip() for line in event.splitlines() if line.startswith(b"data:"))


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _index(ev: Mapping[str, Any]) -> int:
    """A content block's index (-2, which no block has, when it is not an int: never unhashable)."""
    index = ev.get("index")
    return index if isinstance(index, int) else -2


def _error_type(ev: Mapping[str, Any]) -> str:
    detail = ev.get("error")
    kind = detail.get("type") if isinstance(detail, dict) else None
    return kind if isinstance(kind, str) else "api_error"


class AnthropicReplies:
    """The reply half of the Anthropic translator (``anthropic_chat.AnthropicChat`` adds requests)."""

    def answer(self, body: bytes, ids: ReplyIds) -> dict[str, Any]:
        return map_answer(body, ids)

    def chunks(self, ids: ReplyIds, include_usage: bool, tap: StreamTap | None = None) -> ChunkWriter:
        # Only the Messages shape's own tap is fed (a meter of any other shape keeps its tap).
        return MessagesChunks(ids, include_usage, tap if isinstance(tap, MessagesTap) else None)

    def error(self, status: int, body: bytes) -> OpenAIError:
        return map_error(status, body)
