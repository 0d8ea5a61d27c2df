"""OpenAI chat completions -> Gemini ``generateContent`` (issue 13): the request side and the translator.

Turns: system/developer messages become ``systemInstruction``; user -> ``user``, assistant ->
``model``; an assistant's ``tool_calls`` become ``functionCall`` parts and the ``role: tool``
messages answering them ``functionResponse`` parts (an object ``response``) in ONE user turn
right after; consecutive same-role turns are merged, empty text is never sent, nothing is
invented. Tool and response schemas go through :mod:`gemini_schema` (Gemini's OpenAPI subset).
The answer and stream side is :mod:`gemini_stream`, errors :mod:`gemini_errors`.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping
from typing import Any

import orjson

from data_plane.providers.endpoint import encode_gemini_slug
from data_plane.providers.gemini import GenerateTap
from data_plane.providers.gemini_errors import error
from data_plane.providers.gemini_schema import clean_schema
from data_plane.providers.gemini_stream import GeminiChunkWriter, answer, signature_of
from data_plane.providers.translator import (
    ChatRequest,
    ChunkWriter,
    OpenAIError,
    ReplyIds,
    TranslatedModel,
    TranslationError,
    UpstreamCall,
    native_body,
)
from data_plane.usage.stream import StreamTap

MAX_STOP_SEQUENCES = 5  # Gemini rejects more
_ROLES = {"user": "user", "assistant": "model", "tool": "user"}
_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_AUDIO_MIME = {"wav": "audio/wav", "mp3": "audio/mp3"}

# Google's documented stand-in for a thought signature the request cannot give back.
NO_SIGNATURE = "skip_thought_signature_validator"
_SIGNING_MODEL = re.compile(r"gemini-(\d{1,4})(?!\d)")

Part = dict[str, Any]


def checks_signatures(slug: str) -> bool:
    """Gemini 3 and later refuse function calls replayed without their thought signature."""
    found = _SIGNING_MODEL.search(slug)
    return found is not None and int(found.group(1)) >= 3


def _text_parts(content: Any, param: str, allowed: tuple[str, ...] = ("text",)) -> list[Part]:
    """A string, or an array of text (or refusal) parts -> Gemini text parts; empty text dropped."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError("content must be a string or an array of content parts", param)
    parts: list[Part] = []
    for i, item in enumerate(content):
        kind = item.get("type") if isinstance(item, dict) else None
        if kind not in allowed:
            raise TranslationError(f"content part type must be one of {', '.join(allowed)}", f"{param}[{i}].type")
        text = item.get(kind)
        if not isinstance(text, str):
            raise TranslationError(f"content part {kind} must be a string", f"{param}[{i}].{kind}")
        if text:
            parts.append({"text": text})
    return parts


def _data_url(url: str, param: str) -> Part:
    head, sep, data = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise TranslationError("data URLs must be base64 (data:<mime>;base64,<data>)", param)
    mime = head[len("data:") : -len(";base64")]
    if not mime or "/" not in mime:
        raise TranslationError("data URL without a media type", param)
    return {"inlineData": {"mimeType": mime, "data": data}}


def _image(item: Mapping[str, Any], param: str) -> Part:
    image = item.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise TranslationError("image_url.url must be a string", f"{param}.image_url.url")
    if url.startswith("data:"):
        return _data_url(url, f"{param}.image_url.url")
    if url.startswith("https://"):
        # fileData needs a concrete media type; guess it from the path, JPEG when it says nothing.
        mime = mimetypes.guess_type(url.split("?", 1)[0])[0]
        return {"fileData": {"mimeType": mime if mime and mime.startswith("image/") else "image/jpeg", "fileUri": url}}
    raise TranslationError("image_url.url must be an https or data URL", f"{param}.image_url.url")


def _user_parts(content: Any, param: str) -> list[Part]:
    if not isinstance(content, list):
        return _text_parts(content, f"{param}.content")
    parts: list[Part] = []
    for i, item in enumerate(content):
        where = f"{param}.content[{i}]"
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "text":
            parts.extend(_text_parts([item], f"{param}.content"))
        elif kind == "image_url":
            parts.append(_image(item, where))
        elif kind == "input_audio":
            audio = item.get("input_audio")
            fmt = audio.get("format") if isinstance(audio, dict) else None
            data = audio.get("data") if isinstance(audio, dict) else None
            if fmt not in _AUDIO_MIME or not isinstance(data, str):
                raise TranslationError("input_audio needs data and a format (wav, mp3)", f"{where}.input_audio")
            parts.append({"inlineData": {"mimeType": _AUDIO_MIME[fmt], "data": data}})
        elif kind == "file":
            file = item.get("file")
            data_url = file.get("file_data") if isinstance(file, dict) else None
            if not isinstance(data_url, str) or not data_url.startswith("data:"):
                raise TranslationError("file parts need file_data as a data URL", f"{where}.file.file_data")
            parts.append(_data_url(data_url, f"{where}.file.file_data"))
        else:
            raise TranslationError("unsupported content part type", f"{where}.type")
    return parts


def _function_calls(calls: Any, param: str, pending: dict[str, str], sentinel: bool) -> list[Part]:
    if not isinstance(calls, list):
        raise TranslationError("tool_calls must be an array", param)
    parts: list[Part] = []
    for i, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        call_id = call.get("id") if isinstance(call, dict) else None
        if not isinstance(name, str) or not name or not isinstance(call_id, str):
            raise TranslationError("a tool call needs an id and a function name", f"{param}[{i}]")
        raw = fn.get("arguments", "{}") if isinstance(fn, dict) else "{}"
        try:
            args = orjson.loads(raw or "{}") if isinstance(raw, str) else raw
        except orjson.JSONDecodeError:
            raise TranslationError("function arguments are not valid JSON", f"{param}[{i}].function.arguments") from None
        if not isinstance(args, dict):
            raise TranslationError("function arguments must be a JSON object", f"{param}[{i}].function.arguments")
        pending[call_id] = name
        part: Part = {"functionCall": {"name": name, "args": args}}
        if signature := signature_of(call_id):
            part["thoughtSignature"] = signature
        elif sentinel and not parts:
            # Gemini 3 refuses a call turn whose first call has no signature; a call it did not
            # make (or whose id the client rewrote) gets the sentinel Google documents for that.
            part["thoughtSignature"] = NO_SIGNATURE
        parts.append(part)
    return parts


def _function_response(msg: Mapping[str, Any], param: str, pending: dict[str, str]) -> Part:
    call_id = msg.get("tool_call_id")
    if not isinstance(call_id, str) or call_id not in pending:
        raise TranslationError("tool message does not answer a tool call of the previous assistant message",
                               f"{param}.tool_call_id")
    name = pending.pop(call_id)
    text = "".join(p["text"] for p in _text_parts(msg.get("content"), f"{param}.content"))
    response: Any = None
    if text.startswith("{"):
        try:
            response = orjson.loads(text)
        except orjson.JSONDecodeError:
            response = None
    if not isinstance(response, dict):
        response = {"content": text}  # Gemini wants an object; anything else is wrapped
    return {"functionResponse": {"name": name, "response": response}}


def contents(messages: Any, sentinel: bool = False) -> tuple[list[Part], list[dict[str, Any]]]:
    """OpenAI ``messages`` -> (system instruction parts, Gemini ``contents``); ``sentinel``: the
    model checks thought signatures (Gemini 3 and later)."""
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages must be a non-empty array", "messages")
    system: list[Part] = []
    turns: list[dict[str, Any]] = []
    pending: dict[str, str] = {}  # tool_call_id -> function name, of the last assistant turn
    for i, msg in enumerate(messages):
        param = f"messages[{i}]"
        role = msg.get("role") if isinstance(msg, dict) else None
        if not isinstance(msg, dict) or role not in ("system", "developer", "user", "assistant", "tool"):
            raise TranslationError("role must be system, developer, user, assistant or tool", f"{param}.role")
        if role != "tool" and pending:
            raise TranslationError("every tool call must be answered by a tool message before the next message",
                                   f"{param}.role")
        if role in ("system", "developer"):
            system.extend(_text_parts(msg.get("content"), f"{param}.content"))
            continue
        if role == "tool":
            parts = [_function_response(msg, param, pending)]
        elif role == "user":
            parts = _user_parts(msg.get("content"), param)
        else:
            parts = _text_parts(msg.get("content"), f"{param}.content", ("text", "refusal"))
            if msg.get("tool_calls") is not None:
                pending.clear()
                parts.extend(_function_calls(msg["tool_calls"], f"{param}.tool_calls", pending, sentinel))
        if not parts:
            continue
        gemini_role = _ROLES[role]
        if turns and turns[-1]["role"] == gemini_role:
            turns[-1]["parts"].extend(parts)
        else:
            turns.append({"role": gemini_role, "parts": parts})
    if pending:
        raise TranslationError("every tool call must be answered by a tool message", "messages")
    if not turns:
        raise TranslationError("messages need at least one user or assistant message", "messages")
    return system, turns


def _number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TranslationError(f"{key} must be a number", key)
    return value


def _positive_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TranslationError(f"{key} must be a positive integer", key)
    return value


def _stop(value: Any) -> list[str]:
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise TranslationError("stop must be a string or an array of strings", "stop")
    stops = [s for s in stops if s]
    if len(stops) > MAX_STOP_SEQUENCES:
        raise TranslationError(f"Gemini models accept at most {MAX_STOP_SEQUENCES} stop sequences", "stop")
    return stops


def _response_format(value: Any, config: dict[str, Any]) -> None:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
        return
    if kind != "json_schema":
        raise TranslationError("response_format.type must be text, json_object or json_schema", "response_format.type")
    spec = value.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    config["responseMimeType"] = "application/json"
    cleaned = clean_schema(schema, "response_format.json_schema.schema") if schema is not None else {}
    if "type" in cleaned or "anyOf" in cleaned:  # an untyped schema (any JSON): plain JSON mode
        config["responseSchema"] = cleaned


def generation_config(body: Mapping[str, Any], model: TranslatedModel) -> dict[str, Any]:
    """The sampling and output fields -> ``generationConfig`` (unsupported ones dropped)."""
    config: dict[str, Any] = {}
    if (temperature := _number(body, "temperature")) is not None:
        config["temperature"] = temperature
    if (top_p := _number(body, "top_p")) is not None:
        config["topP"] = top_p
    cap = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens") or model.max_output_tokens
    if cap:
        config["maxOutputTokens"] = cap
    if body.get("stop") is not None and (stops := _stop(body["stop"])):
        config["stopSequences"] = stops
    if (n := _positive_int(body, "n")) is not None and n > 1:
        config["candidateCount"] = n
    if body.get("response_format") is not None:
        _response_format(body["response_format"], config)
    return config


def tools(body: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """``tools`` and ``tool_choice`` -> Gemini ``tools`` and ``toolConfig``."""
    declared = body.get("tools")
    if declared is not None and not isinstance(declared, list):
        raise TranslationError("tools must be an array", "tools")
    functions: list[dict[str, Any]] = []
    for i, tool in enumerate(declared or ()):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise TranslationError("only function tools are supported", f"tools[{i}].type")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise TranslationError("a function needs a name", f"tools[{i}].function.name")
        decl: dict[str, Any] = {"name": name}
        if isinstance(fn.get("description"), str) and fn["description"]:
            decl["description"] = fn["description"]
        if fn.get("parameters") is not None:
            params = clean_schema(fn["parameters"], f"tools[{i}].function.parameters")
            # A function without arguments: Gemini rejects an OBJECT with empty properties.
            if params.get("properties") or params.get("type") not in (None, "OBJECT"):
                decl["parameters"] = params
        functions.append(decl)
    choice = body.get("tool_choice")
    if choice is None:
        mode: dict[str, Any] | None = None
    elif isinstance(choice, str) and choice in _MODES:
        mode = {"mode": _MODES[choice]}
    else:
        fn = choice.get("function") if isinstance(choice, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or name not in {f["name"] for f in functions}:
            raise TranslationError("tool_choice must be auto, none, required or a declared function", "tool_choice")
        mode = {"mode": "ANY", "allowedFunctionNames": [name]}
    if not functions:
        if mode is not None and mode["mode"] == "ANY":
            raise TranslationError("tool_choice requires tools", "tool_choice")
        return [], None
    return [{"functionDeclarations": functions}], ({"functionCallingConfig": mode} if mode else None)


def request_body(body: Mapping[str, Any], model: TranslatedModel) -> dict[str, Any]:
    """The whole ``GenerateContentRequest`` (camelCase, as the REST API reads it)."""
    system, turns = contents(body.get("messages"), checks_signatures(model.slug))
    native: dict[str, Any] = {"contents": turns}
    if system:
        native["systemInstruction"] = {"parts": system}
    declarations, tool_config = tools(body)
    if declarations:
        native["tools"] = declarations
    if tool_config:
        native["toolConfig"] = tool_config
    config = generation_config(body, model)
    if declarations and not checks_signatures(model.slug):
        # Before Gemini 3, "Tool use with a response mime type: 'application/json' is unsupported" (a 400):
        # the tools win, the JSON output is asked of the model without the guarantee.
        config.pop("responseMimeType", None)
        config.pop("responseSchema", None)
    if config:
        native["generationConfig"] = config
    return native


class GeminiChat:
    """The :class:`~data_plane.providers.translator.ChatTranslator` for Gemini models."""

    def request(self, chat: ChatRequest, model: TranslatedModel) -> UpstreamCall:
        try:
            slug = encode_gemini_slug(model.slug)
        except ValueError:
            raise TranslationError("the model has no Gemini model id", "model") from None
        method = ":streamGenerateContent?alt=sse" if chat.stream else ":generateContent"
        body = native_body(request_body(chat.body, model))
        return UpstreamCall(path=f"/v1beta/models/{slug}{method}", body=body, stream=chat.stream)

    def answer(self, body: bytes, ids: ReplyIds) -> dict[str, Any]:
        return answer(body, ids)

    def chunks(self, ids: ReplyIds, include_usage: bool, tap: StreamTap | None = None) -> ChunkWriter:
        # Only the Gemini shape's own tap is fed (a meter of any other shape keeps its tap).
        return GeminiChunkWriter(ids, include_usage, tap if isinstance(tap, GenerateTap) else None)

    def error(self, status: int, body: bytes) -> OpenAIError:
        return error(status, body)


TRANSLATOR = GeminiChat()
