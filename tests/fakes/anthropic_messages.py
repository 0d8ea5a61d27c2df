"""A strict Anthropic Messages API: request validation from the real API's rules, scripted replies.

:func:`problems` lists what the real ``POST /v1/messages`` would refuse with a 400 (unknown
fields, roles other than user/assistant, unpaired ``tool_use`` / ``tool_result``, empty text,
bad names, bad image sources...). :func:`scripted_reply` answers a valid request the way a model
would (text, tool calls, the JSON tool of OpenAI JSON output), :func:`stream_events` turns any
Messages answer into the named-event stream Anthropic sends for it, and :func:`strict_messages`
is a ``tests.fakes.provider`` route builder doing all three.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.fakes.reply import Ask, JsonReply, StreamReply, sse

_TOP = frozenset({
    "model", "messages", "max_tokens", "system", "stop_sequences", "stream", "temperature", "top_p",
    "top_k", "tools", "tool_choice", "metadata", "thinking", "service_tier", "container",
    "cache_control", "output_config", "inference_geo", "speed",
})  # fmt: skip
_BLOCK_KEYS = {
    "text": {"type", "text", "cache_control", "citations"},
    "image": {"type", "source", "cache_control"},
    "tool_use": {"type", "id", "name", "input", "cache_control"},
    "tool_result": {"type", "tool_use_id", "content", "is_error", "cache_control"},
}
_ROLE_BLOCKS = {"user": {"text", "image", "tool_result"}, "assistant": {"text", "tool_use"}}
_CHOICE_KEYS = {
    "auto": {"type", "disable_parallel_tool_use"},
    "any": {"type", "disable_parallel_tool_use"},
    "tool": {"type", "name", "disable_parallel_tool_use"},
    "none": {"type"},
}
_TOOL_KEYS = {"name", "description", "input_schema", "cache_control", "type"}
_MEDIA = {"image/jpeg", "image/png", "image/gif", "image/webp"}
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
JSON_TOOL = "json_answer"


def _number(body: dict[str, Any], name: str, high: float, out: list[str]) -> None:
    value = body.get(name)
    if name in body and (
        isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high
    ):
        out.append(f"{name}: must be a number from 0 to {high:g}")


def _text(block: dict[str, Any], where: str, out: list[str]) -> None:
    if not isinstance(block.get("text"), str) or not block["text"].strip():
        out.append(f"{where}: text content blocks must contain non-whitespace text")


def _is_base64(data: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", data) is not None and len(data) % 4 == 0


def _image(block: dict[str, Any], where: str, out: list[str]) -> None:
    src = block.get("source")
    kind = src.get("type") if isinstance(src, dict) else None
    if kind == "base64" and isinstance(src, dict):
        ok = set(src) == {"type", "media_type", "data"} and src["media_type"] in _MEDIA
        if not ok or not isinstance(src["data"], str) or not src["data"]:
            out.append(
                f"{where}.source: a base64 source is exactly type, media_type (jpeg/png/gif/webp), data"
            )
        elif not _is_base64(src["data"]):
            out.append(f"{where}.source.data: invalid base64 data")
    elif kind == "url" and isinstance(src, dict):
        if (
            set(src) != {"type", "url"}
            or not isinstance(src["url"], str)
            or not src["url"].startswith("https://")
        ):
            out.append(f"{where}.source: a url source is exactly type and an https url")
    else:
        out.append(f"{where}.source: type must be base64 or url")


def _block(block: object, role: str, where: str, out: list[str]) -> None:
    kind = block.get("type") if isinstance(block, dict) else None
    if not isinstance(block, dict) or kind not in _ROLE_BLOCKS[role]:
        out.append(f"{where}: block type {kind!r} is not allowed in a {role} message")
        return
    extra = set(block) - _BLOCK_KEYS[kind]
    if extra:
        out.append(f"{where}: unexpected keys {sorted(extra)}")
    if kind == "text":
        _text(block, where, out)
    elif kind == "image":
        _image(block, where, out)
    elif kind == "tool_use":
        if not isinstance(block.get("id"), str) or not TOOL_ID.match(block["id"]):
            out.append(f"{where}.id: must match ^[a-zA-Z0-9_-]+$")
        if not isinstance(block.get("name"), str) or not TOOL_NAME.match(block["name"]):
            out.append(f"{where}.name: must match ^[a-zA-Z0-9_-]{{1,128}}$")
        if not isinstance(block.get("input"), dict):
            out.append(f"{where}.input: must be an object")
    elif kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            for k, inner in enumerate(content):
                if not isinstance(inner, dict) or inner.get("type") not in ("text", "image"):
                    out.append(f"{where}.content[{k}]: only text and image blocks")
                elif inner["type"] == "text":
                    _text(inner, f"{where}.content[{k}]", out)
                else:
                    _image(inner, f"{where}.content[{k}]", out)
        elif "content" in block and not isinstance(content, str):
            out.append(f"{where}.content: must be a string or an array of blocks")


def _messages(messages: object, out: list[str]) -> None:
    if not isinstance(messages, list) or not messages:
        out.append("messages: must be a non-empty array")
        return
    asked: set[str] = set()  # tool_use ids of the previous assistant turn, to be answered now
    every: set[str] = set()  # tool_use ids of the whole request: Anthropic wants them unique
    previous = None
    for i, msg in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(msg, dict) or set(msg) - {"role", "content"}:
            out.append(f"{where}: a message is exactly role and content")
            continue
        role = msg.get("role")
        if role not in _ROLE_BLOCKS:
            out.append(f'{where}.role: must be "user" or "assistant"')
            continue
        if i == 0 and role != "user":
            out.append('messages: first message must use the "user" role')
        if role == previous:
            out.append(f"{where}: roles must alternate between user and assistant")
        previous = role
        content = msg.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks:
            out.append(f"{where}.content: must be a non-empty string or array")
            continue
        for j, block in enumerate(blocks):
            _block(block, role, f"{where}.content.{j}", out)
        results = [
            b.get("tool_use_id") for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"
        ]
        if role == "user":
            if any(isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks[len(results) :]):
                out.append(f"{where}: tool_result blocks must come first in the message")
            stray = [r for r in results if r not in asked]
            if stray:
                out.append(f"{where}: tool_result ids {stray} have no tool_use in the previous message")
            missing = asked - set(results)
            if missing or len(results) != len(set(results)):
                out.append(f"{where}: tool_use ids {sorted(missing)} need exactly one tool_result here")
            asked = set()
        else:
            if asked:
                out.append(f"{where}: tool_use ids {sorted(asked)} were not answered by a user message")
            ids = [b.get("id") for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"]
            if len(ids) != len(set(ids)) or every & {str(x) for x in ids}:
                out.append(f"{where}: `tool_use` ids must be unique")
            every |= {str(x) for x in ids}
            asked = {str(x) for x in ids}
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") == "assistant":
        if asked:
            out.append(f"messages.{len(messages) - 1}: tool_use ids {sorted(asked)} have no tool_result")
        tail = last.get("content")
        text = (
            tail
            if isinstance(tail, str)
            else tail[-1].get("text")
            if isinstance(tail, list) and tail and isinstance(tail[-1], dict)
            else None
        )
        if isinstance(text, str) and text != text.rstrip():
            out.append("messages: final assistant content cannot end with trailing whitespace")


def _tools(body: dict[str, Any], out: list[str]) -> set[str]:
    names: set[str] = set()
    tools = body.get("tools", [])
    if not isinstance(tools, list):
        out.append("tools: must be an array")
        return names
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or set(tool) - _TOOL_KEYS:
            out.append(f"tools.{i}: unexpected keys")
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name) or name in names:
            out.append(f"tools.{i}.name: must match ^[a-zA-Z0-9_-]{{1,128}}$ and be unique")
        names.add(str(name))
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            out.append(f"tools.{i}.input_schema: must be a JSON schema of type object")
        if "description" in tool and not isinstance(tool["description"], str):
            out.append(f"tools.{i}.description: must be a string")
    return names


def problems(body: object) -> list[str]:
    """What the real API would refuse in this request body (empty: it is valid)."""
    if not isinstance(body, dict):
        return ["body: must be a JSON object"]
    out = [f"{k}: Extra inputs are not permitted" for k in sorted(set(body) - _TOP)]
    if not isinstance(body.get("model"), str) or not body["model"]:
        out.append("model: Field required")
    mt = body.get("max_tokens")
    if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
        out.append("max_tokens: Field required (a positive integer)")
    _messages(body.get("messages"), out)
    system = body.get("system")
    if isinstance(system, list):
        for i, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text" or set(block) - _BLOCK_KEYS["text"]:
                out.append(f"system.{i}: only text blocks")
            else:
                _text(block, f"system.{i}", out)
    elif "system" in body and not isinstance(system, str):
        out.append("system: must be a string or an array of text blocks")
    _number(body, "temperature", 1, out)
    _number(body, "top_p", 1, out)
    stops = body.get("stop_sequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) and s.strip() for s in stops):
        out.append("stop_sequences: each must be a string with non-whitespace text")
    if "stream" in body and not isinstance(body["stream"], bool):
        out.append("stream: must be a boolean")
    names = _tools(body, out)
    if not names and any(
        b in text for b in ('"tool_use"', '"tool_result"') for text in [json.dumps(body.get("messages"))]
    ):
        out.append("messages: requests which include tool_use or tool_result blocks must define tools")
    choice = body.get("tool_choice")
    if choice is not None:
        kind = choice.get("type") if isinstance(choice, dict) else None
        if not isinstance(choice, dict) or kind not in _CHOICE_KEYS or set(choice) - _CHOICE_KEYS[kind]:
            out.append("tool_choice: must be auto, any, tool or none with their fields")
        elif kind != "none" and not names:
            out.append("tool_choice: may only be specified while providing tools")
        elif kind == "tool" and choice.get("name") not in names:
            out.append("tool_choice.name: must name one of the tools")
    if "metadata" in body and (not isinstance(body["metadata"], dict) or set(body["metadata"]) - {"user_id"}):
        out.append("metadata: only user_id")
    return out


def sample(schema: object, defs: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A small value matching a JSON schema (what a model would fill a tool's input with); local
    ``#/$defs/...`` references (Pydantic's nested models) are followed a few levels deep."""
    if not isinstance(schema, dict):
        return "x"
    defs = schema.get("$defs", defs) if isinstance(schema.get("$defs", defs), dict) else defs
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/") and defs and depth < 4:
        return sample(defs.get(ref.removeprefix("#/$defs/")), defs, depth + 1)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return sample(schema[key][0], defs, depth + 1)
    kind = schema.get("type", "object")
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "object":
        props = schema.get("properties", {})
        return {k: sample(v, defs, depth + 1) for k, v in props.items()} if isinstance(props, dict) else {}
    if kind == "array":
        return [sample(schema.get("items"), defs, depth + 1)]
    return {"integer": 7, "number": 1.5, "boolean": True, "null": None}.get(str(kind), "text")


def _last_user_text(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"] if body["messages"][-1]["role"] == "user" else ""
    if isinstance(content, str):
        return content
    return " ".join(b["text"] for b in content if b.get("type") == "text")


def _answered_tools(body: dict[str, Any]) -> bool:
    content = body["messages"][-1]["content"]
    return isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)


def scripted_reply(body: dict[str, Any], *, cache_read: int = 0, cache_write: int = 0) -> dict[str, Any]:
    """A model's answer to a valid request: the forced JSON tool's input from its schema; calls to
    the tools when tools are offered, not forced off and the last turn is not tool results (two
    calls unless parallel use is disabled or one tool is named); else text about the question."""
    tools = {t["name"]: t for t in body.get("tools", [])}
    choice = body.get("tool_choice") or {"type": "auto"}
    content: list[dict[str, Any]] = []
    if choice["type"] == "tool" and choice["name"] == JSON_TOOL:
        answer = sample(tools[JSON_TOOL]["input_schema"])
        content.append({"type": "tool_use", "id": "toolu_json01", "name": JSON_TOOL, "input": answer})
    elif choice["type"] != "none" and set(tools) - {JSON_TOOL} and not _answered_tools(body):
        names = [choice["name"]] if choice["type"] == "tool" else [n for n in tools if n != JSON_TOOL][:2]
        if choice.get("disable_parallel_tool_use"):
            names = names[:1]
        if choice["type"] == "auto":
            content.append({"type": "text", "text": "Let me check."})
        for i, name in enumerate(names):
            content.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_{i:02d}{name[:8]}",
                    "name": name,
                    "input": sample(tools[name]["input_schema"]),
                }
            )
    else:
        content.append({"type": "text", "text": f"You said: {_last_user_text(body)[:60]}".rstrip()})
    stop = "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
    prompt = max(1, len(json.dumps(body["messages"])) // 4)
    output = sum(len(json.dumps(b)) // 8 + 1 for b in content)
    usage = {
        "input_tokens": prompt,
        "output_tokens": output,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
    }
    return {
        "id": "msg_scripted01",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def stream_events(message: dict[str, Any], piece: int = 4) -> list[tuple[str, dict[str, Any]]]:
    """The named events Anthropic streams for ``message``: text in ``piece``-sized deltas, tool
    input as ``input_json_delta`` pieces of its compact JSON (an empty first piece, as Anthropic)."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"message": start}), ("ping", {})]
    for i, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append(
                ("content_block_start", {"index": i, "content_block": {"type": "text", "text": ""}})
            )
            events += [
                ("content_block_delta", {"index": i, "delta": {"type": "text_delta", "text": p}})
                for p in _pieces(block["text"], piece)
            ]
        else:
            head = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            events.append(("content_block_start", {"index": i, "content_block": head}))
            arguments = json.dumps(block["input"], separators=(",", ":"), ensure_ascii=False)
            events += [
                (
                    "content_block_delta",
                    {"index": i, "delta": {"type": "input_json_delta", "partial_json": p}},
                )
                for p in ["", *_pieces(arguments if arguments != "{}" else "", piece)]
            ]
        events.append(("content_block_stop", {"index": i}))
    events.append(
        (
            "message_delta",
            {
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {}))
    return events


def frames(events: list[tuple[str, dict[str, Any]]]) -> list[bytes]:
    """The events as SSE frames (``event:`` and ``data:`` lines, the data carrying ``type``)."""
    return [sse({"type": name, **data}, event=name) for name, data in events]


def invalid(message: str) -> dict[str, Any]:
    """Anthropic's 400 body."""
    return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}


def answered(ask: Ask, message: dict[str, Any]) -> JsonReply | StreamReply:
    """``message`` as Anthropic answers ``ask``: whole, or streamed as its events when asked."""
    if not ask.stream:
        return JsonReply(message)
    out = frames(stream_events(message))
    return StreamReply(out, len(out) - 3)


def strict_messages(ask: Ask) -> JsonReply | StreamReply:
    """A ``tests.fakes.provider`` route builder for POST /v1/messages: 400 on what the real API
    refuses, else the scripted reply (streamed when asked)."""
    found = problems(ask.payload)
    if found:
        return JsonReply(invalid("; ".join(found)), status=400)
    return answered(ask, scripted_reply(ask.payload))
