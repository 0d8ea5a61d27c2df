"""OpenAI chat completions -> Anthropic Messages: the request (issue 13).

The answer, the stream and errors are ``anthropic_reply.py``; ``TRANSLATOR`` joins both.

Decisions (docs/openai-compatibility.md):

- ``temperature``: OpenAI allows 0..2, Anthropic 0..1. Values above 1 are clamped to 1 (the
  most random Anthropic allows); below 0 or above 2 is refused like OpenAI would. When both
  ``temperature`` and ``top_p`` are set only ``temperature`` is sent (recent Claude models
  refuse both together).
- JSON output (``response_format`` ``json_object`` / ``json_schema``): Anthropic has no JSON
  mode, so a tool named :data:`JSON_TOOL` is added whose ``input_schema`` is the schema, and
  forced when the client has no tools of its own. Its ``tool_use`` input comes back as the
  message content (a JSON string), ``finish_reason`` ``stop``. The name is reserved.
- ``n`` is not translated: the gateway makes n calls. Dropped and unknown fields are never sent.
- System and developer messages, wherever they are, join the top-level ``system`` in order.
- A conversation must start with a user turn and every tool call must be answered by a tool
  message before the next assistant turn: Anthropic refuses anything else and inventing turns
  would put words in someone's mouth, so these are 400s naming the message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from data_plane.providers.anthropic_reply import JSON_TOOL, AnthropicReplies
from data_plane.providers.translator import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    ChatRequest,
    TranslatedModel,
    TranslationError,
    UpstreamCall,
    native_body,
)

PATH = "/v1/messages"
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_SYSTEM_ROLES = frozenset({"system", "developer"})
_UNANSWERED = "this tool call has no tool message answering it"

Block = dict[str, Any]


def _is_name(value: object, limit: int = 128) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit and all(c in _NAME_CHARS for c in value)


def _tool_id(value: object, param: str) -> str:
    """An OpenAI tool call id as an Anthropic one (``^[a-zA-Z0-9_-]+$``), the same on both sides."""
    if not isinstance(value, str) or not value:
        raise TranslationError("a tool call id must be a non-empty string", param)
    return "".join(c if c in _NAME_CHARS else "_" for c in value[:256])


def _text_parts(content: object, param: str) -> list[str]:
    """A message's text: a string, or an array of text parts (empty strings dropped)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if content.strip() else []
    if not isinstance(content, list):
        raise TranslationError("content must be a string or an array of content parts", param)
    texts: list[str] = []
    for i, part in enumerate(content):
        if not isinstance(part, Mapping) or part.get("type") not in ("text", "refusal"):
            raise TranslationError("only text content parts are allowed here", f"{param}[{i}]")
        text = part.get("text", part.get("refusal"))
        if not isinstance(text, str):
            raise TranslationError("a text part needs a string text", f"{param}[{i}].text")
        if text.strip():  # Anthropic refuses empty and whitespace-only text blocks
            texts.append(text)
    return texts


def _image(part: Mapping[str, Any], param: str) -> Block:
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, Mapping) else spec
    if not isinstance(url, str):
        raise TranslationError("an image_url part needs image_url.url", f"{param}.image_url.url")
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        # data:<type>[;<param>=<value>]*;base64 (RFC 2397); media types are case-insensitive and
        # clients often write image/jpg, which Anthropic refuses.
        media_type, *params = header.split(";")
        media_type = media_type.strip().lower()
        media_type = "image/jpeg" if media_type == "image/jpg" else media_type
        data = "".join(data.split())  # line-wrapped base64 (MIME style) is still the same bytes
        where = f"{param}.image_url.url"
        if not sep or not params or params[-1].strip().lower() != "base64" or not data:
            raise TranslationError("an image data URL must be data:<type>;base64,<data>", where)
        if media_type not in IMAGE_TYPES:
            raise TranslationError(
                f"image type {media_type[:64]!r} is not supported (jpeg, png, gif, webp)", where
            )
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith("https://") and len(url) > 8:
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise TranslationError("an image URL must be an https URL or a base64 data URL", f"{param}.image_url.url")


def _user_blocks(content: object, param: str) -> list[Block]:
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": t} for t in _text_parts(content, param)]
    if not isinstance(content, list):
        raise TranslationError("content must be a string or an array of content parts", param)
    blocks: list[Block] = []
    for i, part in enumerate(content):
        where = f"{param}[{i}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "image_url":
            blocks.append(_image(part, where))
        elif kind == "text":
            blocks.extend({"type": "text", "text": t} for t in _text_parts([part], param))
        else:
            raise TranslationError(
                f"content part type {str(kind)[:64]!r} is not supported for this model", where
            )
    return blocks


def _assistant_blocks(msg: Mapping[str, Any], param: str) -> tuple[list[Block], list[str]]:
    blocks: list[Block] = [
        {"type": "text", "text": t} for t in _text_parts(msg.get("content"), f"{param}.content")
    ]
    calls = msg.get("tool_calls")
    if calls is None:
        return blocks, []
    if not isinstance(calls, list):
        raise TranslationError("tool_calls must be an array", f"{param}.tool_calls")
    ids: list[str] = []
    for j, call in enumerate(calls):
        where = f"{param}.tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping) or call.get("type", "function") != "function":
            raise TranslationError("a tool call must be a function call", where)
        if not _is_name(fn.get("name")):
            raise TranslationError(
                "a function name must match ^[a-zA-Z0-9_-]{1,128}$", f"{where}.function.name"
            )
        raw = fn.get("arguments")
        try:
            args = orjson.loads(raw) if isinstance(raw, str) and raw.strip() else {}
        except orjson.JSONDecodeError:
            args = None
        if not isinstance(args, dict) or (raw is not None and not isinstance(raw, str)):
            raise TranslationError(
                "function arguments must be a JSON object string", f"{where}.function.arguments"
            )
        tool_id = _tool_id(call.get("id"), f"{where}.id")
        ids.append(tool_id)
        blocks.append({"type": "tool_use", "id": tool_id, "name": fn["name"], "input": args})
    return blocks, ids


def _tool_result(msg: Mapping[str, Any], param: str) -> Block:
    block: Block = {
        "type": "tool_result",
        "tool_use_id": _tool_id(msg.get("tool_call_id"), f"{param}.tool_call_id"),
    }
    texts = _text_parts(msg.get("content"), f"{param}.content")
    if len(texts) == 1:
        block["content"] = texts[0]
    elif texts:
        block["content"] = [{"type": "text", "text": t} for t in texts]
    return block


def _conversation(messages: object) -> tuple[list[str], list[Block]]:
    """(system texts, Anthropic messages) with same-role turns merged and tool calls paired."""
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages must be a non-empty array", "messages")
    system: list[str] = []
    turns: list[Block] = []
    open_calls: dict[str, str] = {}  # tool_use id -> the param of the call, until answered
    # Anthropic wants tool_use ids unique in the whole request; clients reuse them across turns
    # (call_0 of another provider's model): a reused id is renamed, its results follow.
    sent_ids: set[str] = set()
    renamed: dict[str, str] = {}  # the open calls' client id (mapped) -> the id sent
    for i, msg in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(msg, Mapping):
            raise TranslationError("a message must be an object", param)
        role = msg.get("role")
        if role is None:
            raise TranslationError("a message needs a role", f"{param}.role")
        if not isinstance(role, str):  # a list or an object is unhashable: never a 500
            raise TranslationError("a message's role must be a string", f"{param}.role")
        if role in _SYSTEM_ROLES:
            system.extend(_text_parts(msg.get("content"), f"{param}.content"))
            continue
        if role == "assistant":
            if open_calls:
                raise TranslationError(_UNANSWERED, next(iter(open_calls.values())))
            blocks, ids = _assistant_blocks(msg, param)
            renamed = {}
            for j, tool_id in enumerate(ids):
                if tool_id in open_calls:
                    raise TranslationError("duplicate tool call id", f"{param}.tool_calls[{j}].id")
                open_calls[tool_id] = f"{param}.tool_calls[{j}]"
                unique, n = tool_id, 1
                while unique in sent_ids:
                    unique, n = f"{tool_id[:240]}_{n}", n + 1
                sent_ids.add(unique)
                renamed[tool_id] = unique
            for block in (b for b in blocks if b["type"] == "tool_use"):
                block["id"] = renamed[block["id"]]
            kind = "assistant"
        elif role == "user":
            blocks, kind = _user_blocks(msg.get("content"), f"{param}.content"), "user"
        elif role == "tool":
            block = _tool_result(msg, param)
            if open_calls.pop(block["tool_use_id"], None) is None:
                raise TranslationError(
                    "no open tool call of the previous assistant message has this id", f"{param}.tool_call_id"
                )
            block["tool_use_id"] = renamed[block["tool_use_id"]]
            blocks, kind = [block], "user"
        else:
            raise TranslationError(f"unknown role {str(role)[:64]!r}", f"{param}.role")
        if not blocks:
            continue
        if not turns and kind != "user":
            raise TranslationError("the conversation must start with a user message", f"{param}.role")
        if turns and turns[-1]["role"] == kind:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": kind, "content": blocks})
    if open_calls:
        raise TranslationError(_UNANSWERED, next(iter(open_calls.values())))
    if not turns:
        raise TranslationError("messages must contain a user message with content", "messages")
    for turn in turns:
        if turn["role"] == "user":  # Anthropic wants tool results before anything else in the turn
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    last = turns[-1]
    if last["role"] == "assistant" and last["content"][-1]["type"] == "text":
        # A final assistant turn is a prefill, which must not end with whitespace.
        text = last["content"][-1]["text"].rstrip()
        if text:
            last["content"][-1]["text"] = text
        else:
            last["content"].pop()
            if not last["content"]:
                turns.pop()
    return system, turns


def _tools(tools: object) -> list[Block]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise TranslationError("tools must be an array", "tools")
    out: list[Block] = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(fn, Mapping) or tool.get("type", "function") != "function":
            raise TranslationError("only function tools are supported for this model", f"tools[{i}]")
        name = fn.get("name")
        if not _is_name(name) or name == JSON_TOOL:
            raise TranslationError(
                f"a function name must match ^[a-zA-Z0-9_-]{{1,128}}$ and not be {JSON_TOOL!r}",
                f"tools[{i}].function.name",
            )
        entry: Block = {
            "name": name,
            "input_schema": _schema(fn.get("parameters"), f"tools[{i}].function.parameters"),
        }
        if isinstance(fn.get("description"), str) and fn["description"]:
            entry["description"] = fn["description"]
        out.append(entry)
    return out


def _schema(schema: object, param: str) -> dict[str, Any]:
    """A JSON schema as Anthropic's ``input_schema``, which must describe an object."""
    if schema is None:
        return {"type": "object", "properties": {}}
    if not isinstance(schema, Mapping) or schema.get("type", "object") != "object":
        raise TranslationError("the schema must describe a JSON object", param)
    return {"type": "object", **schema}


def _tool_choice(choice: object, names: Sequence[str], parallel: object) -> Block | None:
    if choice is None and parallel is not False:
        return None  # Anthropic's default is auto
    if choice is None or choice == "auto":
        out: Block = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        name = choice["function"].get("name")
        if name not in names:
            raise TranslationError(
                "tool_choice names a function that is not in tools", "tool_choice.function.name"
            )
        out = {"type": "tool", "name": name}
    else:
        raise TranslationError("tool_choice must be auto, none, required or a named function", "tool_choice")
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def _json_tool(fmt: object) -> Block | None:
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {
            "name": JSON_TOOL,
            "description": "Answer with a JSON object.",
            "input_schema": {"type": "object"},
        }
    if kind == "json_schema" and isinstance(fmt, Mapping) and isinstance(fmt.get("json_schema"), Mapping):
        spec = fmt["json_schema"]
        about = spec.get("description")
        about = about if isinstance(about, str) and about else "Answer with JSON matching the schema."
        schema = _schema(spec.get("schema"), "response_format.json_schema.schema")
        return {"name": JSON_TOOL, "input_schema": schema, "description": about}
    raise TranslationError("response_format must be text, json_object or json_schema", "response_format")


def _number(body: Mapping[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise TranslationError(f"{name} must be a number from {low:g} to {high:g}", name)
    return float(value)


def _max_tokens(body: Mapping[str, Any], model: TranslatedModel) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TranslationError(f"{name} must be a positive integer", name)
        return value
    return model.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS


def _stop(stop: object) -> list[str]:
    items = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise TranslationError("stop must be a string or an array of strings", "stop")
    return [s for s in items if s.strip()]  # Anthropic refuses blank stop sequences


def build_request(chat: ChatRequest, model: TranslatedModel) -> dict[str, Any]:
    """The Messages request body for ``chat`` (TranslationError names the offending param)."""
    body = chat.body
    system, turns = _conversation(body.get("messages"))
    out: dict[str, Any] = {"model": model.slug, "max_tokens": _max_tokens(body, model), "messages": turns}
    if system:
        out["system"] = system[0] if len(system) == 1 else [{"type": "text", "text": t} for t in system]
    temperature = _number(body, "temperature", 0, 2)
    top_p = _number(body, "top_p", 0, 1)
    if temperature is not None:
        out["temperature"] = min(temperature, 1.0)
    elif top_p is not None:
        out["top_p"] = top_p
    stop = _stop(body.get("stop"))
    if stop:
        out["stop_sequences"] = stop
    if chat.stream:
        out["stream"] = True
    tools = _tools(body.get("tools"))
    names = [t["name"] for t in tools]
    choice = _tool_choice(body.get("tool_choice"), names, body.get("parallel_tool_calls")) if tools else None
    json_tool = _json_tool(body.get("response_format"))
    if json_tool is not None and not (choice is not None and choice["type"] == "none"):
        if not tools:
            choice = {"type": "tool", "name": JSON_TOOL}
        tools.append(json_tool)
    used = sorted({b["name"] for t in turns for b in t["content"] if b["type"] == "tool_use"})
    if used and not tools:  # Anthropic wants tools defined when the history uses them
        tools, choice = [{"name": n, "input_schema": {"type": "object"}} for n in used], {"type": "none"}
    if tools:
        out["tools"] = tools
    if choice is not None:
        out["tool_choice"] = choice
    return out


class AnthropicChat(AnthropicReplies):
    """The :class:`~data_plane.providers.translator.ChatTranslator` of the Anthropic family."""

    def request(self, chat: ChatRequest, model: TranslatedModel) -> UpstreamCall:
        return UpstreamCall(path=PATH, body=native_body(build_request(chat, model)), stream=chat.stream)


TRANSLATOR = AnthropicChat()
