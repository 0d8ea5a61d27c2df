"""A strict Gemini ``generateContent`` request validator, and scripted Gemini replies.

``problems(payload)`` checks a request body the way Gemini's REST API does (written from its
reference and the 400s it answers): unknown fields are rejected (camelCase only), roles are
``user`` / ``model``, a part holds exactly one data field, text is never empty, every
``functionResponse`` answers a ``functionCall`` of the model turn right before it (as many
responses as calls) with an object ``response``, a function-call turn follows a user turn,
schemas use only the keys of Gemini's ``Schema``, ``stopSequences`` has at most 5 entries,
``candidateCount`` is at least 1, and for a Gemini 3 model the first call of a replayed
function-call turn carries a ``thoughtSignature``. ``generate(ask, script)`` answers a request
like the fake provider's builders: a Gemini 400 for an invalid request, else the scripted reply
(whole or as SSE chunks); plug it in with ``fake.builders["gemini"] = lambda ask: generate(ask,
script)``. ``embed_problems`` checks ``batchEmbedContents`` bodies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.reply import Ask, JsonReply, StreamReply, sse

REQUEST_KEYS = {"contents", "tools", "toolConfig", "safetySettings", "systemInstruction", "generationConfig",
                "cachedContent", "model"}
CONTENT_KEYS = {"role", "parts"}
DATA_KEYS = {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
             "codeExecutionResult"}
PART_KEYS = DATA_KEYS | {"thought", "thoughtSignature", "videoMetadata"}
GENERATION_KEYS = {"stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "candidateCount",
                   "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty", "frequencyPenalty",
                   "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers", "responseModalities",
                   "speechConfig", "thinkingConfig", "mediaResolution"}
SCHEMA_KEYS = {"type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
               "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example",
               "anyOf", "propertyOrdering", "default", "items", "minimum", "maximum"}
SCHEMA_TYPES = {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
FORMATS = {"STRING": {"enum", "date-time"}, "NUMBER": {"float", "double"}, "INTEGER": {"int32", "int64"}}
FUNCTION_KEYS = {"name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema",
                 "behavior"}
FUNCTION_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}")
MIME_TYPES = {"text/plain", "application/json", "text/x.enum"}
BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")


class _Check:
    def __init__(self, signed: bool) -> None:
        self.errors: list[str] = []
        self.signed = signed  # a Gemini 3 model: replayed function calls carry their thought signature

    def fail(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    def keys(self, obj: Any, allowed: set[str], where: str) -> bool:
        if not isinstance(obj, dict):
            self.fail(where, "must be an object")
            return False
        for key in obj:
            if key not in allowed:
                self.fail(where, f'Unknown name "{key}": Cannot find field.')
        return True

    def schema(self, node: Any, where: str, depth: int = 0) -> None:
        if depth > 40 or not self.keys(node, SCHEMA_KEYS, where):
            return
        kind = node.get("type")
        if kind is not None and (not isinstance(kind, str) or kind.upper() not in SCHEMA_TYPES):
            self.fail(f"{where}.type", f"invalid value {kind!r}")
        kind = kind.upper() if isinstance(kind, str) else None
        fmt = node.get("format")
        if fmt is not None and fmt not in FORMATS.get(kind or "", ()):
            self.fail(f"{where}.format", f"only {sorted(FORMATS.get(kind or '', ()))} are supported for {kind}")
        enum = node.get("enum")
        if enum is not None and (not isinstance(enum, list) or not all(isinstance(v, str) for v in enum)
                                 or kind != "STRING"):
            self.fail(f"{where}.enum", "only string enums on STRING schemas")
        props = node.get("properties")
        if props is not None:
            if not isinstance(props, dict) or not props:
                self.fail(f"{where}.properties", "should be non-empty for OBJECT type")
            else:
                for name, sub in props.items():
                    self.schema(sub, f"{where}.properties[{name}]", depth + 1)
        required = node.get("required")
        if required is not None and (not isinstance(required, list)
                                     or any(r not in (props or {}) for r in required)):
            self.fail(f"{where}.required", "property is not defined")
        for key, owner in (("properties", "OBJECT"), ("required", "OBJECT"), ("items", "ARRAY")):
            if key in node and kind != owner:
                self.fail(f"{where}.{key}", f"only allowed for {owner} type")
        if kind == "OBJECT" and props is None:  # proto3: an absent map is an empty one
            self.fail(f"{where}.properties", "should be non-empty for OBJECT type")
        if kind == "ARRAY" and "items" not in node:
            self.fail(f"{where}.items", "missing field.")
        if "items" in node:
            self.schema(node["items"], f"{where}.items", depth + 1)
        any_of = node.get("anyOf")
        if any_of is not None:
            if not isinstance(any_of, list) or not any_of:
                self.fail(f"{where}.anyOf", "must be a non-empty array")
            else:
                for i, sub in enumerate(any_of):
                    self.schema(sub, f"{where}.anyOf[{i}]", depth + 1)

    def part(self, part: Any, where: str, role: str | None) -> None:
        if not self.keys(part, PART_KEYS, where):
            return
        signature = part.get("thoughtSignature")
        if signature is not None and not (isinstance(signature, str) and BASE64.fullmatch(signature)):
            self.fail(f"{where}.thoughtSignature", "must be base64 bytes")
        data = [k for k in part if k in DATA_KEYS]
        if len(data) != 1:
            self.fail(where, f"a part needs exactly one data field, got {data}")
            return
        kind, value = data[0], part[data[0]]
        if kind == "text":
            if not isinstance(value, str) or not value:
                self.fail(where, "Unable to submit request because it has an empty text parameter.")
        elif kind == "inlineData":
            if self.keys(value, {"mimeType", "data", "displayName"}, f"{where}.inlineData") and not (
                    isinstance(value.get("mimeType"), str) and "/" in value["mimeType"]
                    and isinstance(value.get("data"), str) and BASE64.fullmatch(value["data"])):
                self.fail(f"{where}.inlineData", "needs a mimeType and base64 data")
        elif kind == "fileData":
            if self.keys(value, {"mimeType", "fileUri", "displayName"}, f"{where}.fileData") and not (
                    isinstance(value.get("fileUri"), str) and value["fileUri"]):
                self.fail(f"{where}.fileData.fileUri", "required")
        elif kind == "functionCall":
            if role != "model":
                self.fail(where, "functionCall parts belong to model turns")
            if self.keys(value, {"name", "args", "id"}, f"{where}.functionCall") and not (
                    isinstance(value.get("name"), str) and isinstance(value.get("args", {}), dict)):
                self.fail(f"{where}.functionCall", "needs a name and object args")
        elif kind == "functionResponse":
            if role != "user":
                self.fail(where, "functionResponse parts belong to user turns")
            if self.keys(value, {"name", "response", "id", "willContinue", "scheduling", "parts"},
                         f"{where}.functionResponse") and not isinstance(value.get("response"), dict):
                self.fail(f"{where}.functionResponse.response", "must be an object (google.protobuf.Struct)")

    def contents(self, contents: Any) -> None:
        if not isinstance(contents, list) or not contents:
            self.fail("contents", "is not specified")
            return
        previous_calls: list[str] = []
        previous_role: str | None = None
        for i, content in enumerate(contents):
            where = f"contents[{i}]"
            if not self.keys(content, CONTENT_KEYS, where):
                continue
            role = content.get("role")
            if role not in ("user", "model"):
                self.fail(f"{where}.role", "Please use a valid role: user, model.")
            parts = content.get("parts")
            if not isinstance(parts, list) or not parts:
                self.fail(f"{where}.parts", "must contain at least one part")
                continue
            for j, part in enumerate(parts):
                self.part(part, f"{where}.parts[{j}]", role)
            calls = [p["functionCall"].get("name") for p in parts
                     if isinstance(p, dict) and isinstance(p.get("functionCall"), dict)]
            answers = [p["functionResponse"].get("name") for p in parts
                       if isinstance(p, dict) and isinstance(p.get("functionResponse"), dict)]
            first_call = next((p for p in parts if isinstance(p, dict) and "functionCall" in p), None)
            if self.signed and first_call is not None and "thoughtSignature" not in first_call:
                self.fail(where, "Function call is missing a thought_signature in functionCall parts.")
            if calls and previous_role != "user":
                self.fail(where, "Please ensure that function call turn comes immediately after a user turn "
                                 "or after a function response turn.")
            if answers and sorted(answers) != sorted(previous_calls):
                self.fail(where, "Please ensure that the number of function response parts is equal to the "
                                 "number of function call parts of the function call turn.")
            if previous_calls and not answers:
                self.fail(where, "a function call turn must be answered by function responses")
            previous_calls, previous_role = calls, role if isinstance(role, str) else None

    def tools(self, tools: Any, tool_config: Any) -> None:
        declared: set[str] = set()
        if tools is not None:
            if not isinstance(tools, list):
                self.fail("tools", "must be an array")
                return
            for i, tool in enumerate(tools):
                if not self.keys(tool, {"functionDeclarations", "googleSearch", "codeExecution", "urlContext"},
                                 f"tools[{i}]"):
                    continue
                for j, fn in enumerate(tool.get("functionDeclarations") or ()):
                    where = f"tools[{i}].functionDeclarations[{j}]"
                    if not self.keys(fn, FUNCTION_KEYS, where):
                        continue
                    name = fn.get("name")
                    if not isinstance(name, str) or not FUNCTION_NAME.fullmatch(name):
                        self.fail(f"{where}.name", "Invalid function name.")
                    else:
                        declared.add(name)
                    if "parameters" in fn:
                        self.schema(fn["parameters"], f"{where}.parameters")
        if tool_config is None:
            return
        if not self.keys(tool_config, {"functionCallingConfig", "retrievalConfig"}, "toolConfig"):
            return
        fcc = tool_config.get("functionCallingConfig")
        if not self.keys(fcc, {"mode", "allowedFunctionNames"}, "toolConfig.functionCallingConfig"):
            return
        mode = fcc.get("mode")
        if mode not in ("AUTO", "ANY", "NONE", "VALIDATED"):
            self.fail("toolConfig.functionCallingConfig.mode", f"invalid value {mode!r}")
        names = fcc.get("allowedFunctionNames")
        if names is not None and (mode != "ANY" or not isinstance(names, list) or not set(names) <= declared):
            self.fail("toolConfig.functionCallingConfig.allowedFunctionNames", "only with mode ANY, declared names")

    def generation(self, config: Any) -> None:
        if config is None or not self.keys(config, GENERATION_KEYS, "generationConfig"):
            return
        stops = config.get("stopSequences")
        if stops is not None and (not isinstance(stops, list) or len(stops) > 5
                                  or not all(isinstance(s, str) and s for s in stops)):
            self.fail("generationConfig.stopSequences", "at most 5 non-empty strings")
        for key, low, high in (("candidateCount", 1, 8), ("maxOutputTokens", 1, 1 << 31)):
            value = config.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or not low <= value <= high):
                self.fail(f"generationConfig.{key}", f"must be an integer in [{low}, {high}]")
        bounds: tuple[tuple[str, float], ...] = (("temperature", 2.0), ("topP", 1.0))
        for name, top in bounds:
            number = config.get(name)
            if number is not None and (not isinstance(number, int | float) or isinstance(number, bool)
                                       or not 0 <= number <= top):
                self.fail(f"generationConfig.{name}", f"must be a number in [0, {top}]")
        mime = config.get("responseMimeType")
        if mime is not None and mime not in MIME_TYPES:
            self.fail("generationConfig.responseMimeType", "unsupported mime type")
        if "responseSchema" in config:
            if mime not in ("application/json", "text/x.enum"):
                self.fail("generationConfig.responseSchema", "requires responseMimeType application/json")
            self.schema(config["responseSchema"], "generationConfig.responseSchema")


def problems(payload: Any, model: str = "") -> list[str]:
    """Why Gemini would answer 400 to this ``generateContent`` body (empty: it is accepted);
    ``model``: the model id of the path (Gemini 3 and later check thought signatures)."""
    found = re.search(r"gemini-(\d{1,4})(?!\d)", model)
    check = _Check(signed=found is not None and int(found.group(1)) >= 3)
    if not check.keys(payload, REQUEST_KEYS, "request"):
        return check.errors
    check.contents(payload.get("contents"))
    system = payload.get("systemInstruction")
    if system is not None and check.keys(system, CONTENT_KEYS, "systemInstruction"):
        parts = system.get("parts")
        if not isinstance(parts, list) or not parts:
            check.fail("systemInstruction.parts", "must contain at least one part")
        else:
            for j, part in enumerate(parts):
                if not isinstance(part, dict) or set(part) != {"text"}:
                    check.fail(f"systemInstruction.parts[{j}]", "system instructions are text")
                check.part(part, f"systemInstruction.parts[{j}]", None)
    check.tools(payload.get("tools"), payload.get("toolConfig"))
    check.generation(payload.get("generationConfig"))
    config = payload.get("generationConfig")
    if (payload.get("tools") and not check.signed and isinstance(config, dict)
            and config.get("responseMimeType") == "application/json"):  # Gemini 3 takes both
        check.fail("request", "Tool use with a response mime type: 'application/json' is unsupported")
    return check.errors


# --- scripted replies ----------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One scripted candidate: Gemini parts in order (each streamed as its own chunk) and its finishReason."""

    parts: tuple[dict[str, Any], ...]
    finish: str = "STOP"


@dataclass(frozen=True)
class Script:
    """A scripted Gemini reply (candidates, usage, a prompt block, a mid-stream error after N chunks)."""

    candidates: tuple[Candidate, ...] = ()
    prompt_tokens: int = 11
    candidates_tokens: int = 7
    thoughts_tokens: int = 0
    cached_tokens: int = 0
    block_reason: str | None = None
    error_after: int | None = None  # streamed: an error event after this many chunks, then the end
    seen: list[dict[str, Any]] = field(default_factory=list)  # the validated request bodies


def text(*pieces: str, finish: str = "STOP") -> Candidate:
    """A text candidate (streamed one piece per chunk)."""
    return Candidate(tuple({"text": p} for p in pieces), finish)


def call(name: str, args: Mapping[str, Any], signature: str | None = None) -> dict[str, Any]:
    """A functionCall part (Gemini 3 signs the first call of a turn)."""
    part: dict[str, Any] = {"functionCall": {"name": name, "args": dict(args)}}
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def usage_metadata(script: Script) -> dict[str, Any]:
    meta = {"promptTokenCount": script.prompt_tokens, "candidatesTokenCount": script.candidates_tokens,
            "totalTokenCount": script.prompt_tokens + script.candidates_tokens + script.thoughts_tokens}
    if script.thoughts_tokens:
        meta["thoughtsTokenCount"] = script.thoughts_tokens
    if script.cached_tokens:
        meta["cachedContentTokenCount"] = script.cached_tokens
    return meta


def _response(candidates: list[dict[str, Any]], script: Script, last: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {"candidates": candidates, "modelVersion": "gemini-fake", "responseId": "fakeScript01"}
    if script.block_reason:
        doc = {"promptFeedback": {"blockReason": script.block_reason}}
    meta = usage_metadata(script)
    if not last:  # Gemini's intermediate chunks carry the prompt count only
        meta = {"promptTokenCount": script.prompt_tokens, "totalTokenCount": script.prompt_tokens}
    doc["usageMetadata"] = meta
    return doc


def whole(script: Script) -> dict[str, Any]:
    """The scripted ``generateContent`` answer."""
    cands = [{"content": {"role": "model", "parts": list(c.parts)}, "finishReason": c.finish, "index": i}
             for i, c in enumerate(script.candidates)]
    return _response(cands, script, True)


def chunks(script: Script) -> list[dict[str, Any]]:
    """The scripted ``streamGenerateContent`` chunks: step k carries part k of every candidate."""
    steps = max((len(c.parts) for c in script.candidates), default=1)
    out = []
    for k in range(steps):
        cands = []
        for i, c in enumerate(script.candidates):
            if k < len(c.parts):
                cand: dict[str, Any] = {"content": {"role": "model", "parts": [c.parts[k]]}, "index": i}
                if k == len(c.parts) - 1:
                    cand["finishReason"] = c.finish
                cands.append(cand)
        out.append(_response(cands, script, k == steps - 1))
    return out


def generate(ask: Ask, script: Script) -> JsonReply | StreamReply:
    """A fake-provider builder: Gemini's 400 for a request it would reject, else the scripted reply."""
    found = problems(ask.payload, ask.model)
    if found:
        return JsonReply({"error": {"code": 400, "message": "; ".join(found)[:2000], "status": "INVALID_ARGUMENT"}},
                         status=400)
    script.seen.append(ask.payload)
    if not ask.stream:
        return JsonReply(whole(script))
    frames = [sse(c, newline="\r\n") for c in chunks(script)]
    if script.error_after is not None:
        frames = frames[: script.error_after]
        frames.append(sse({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}},
                          newline="\r\n"))
    return StreamReply(frames, len(frames) - 1, content_type="text/event-stream")


def embed_problems(payload: Any, slug: str) -> list[str]:
    """Why Gemini would answer 400 to this ``batchEmbedContents`` body for ``models/{slug}``."""
    check = _Check(signed=False)
    if not check.keys(payload, {"requests"}, "request"):
        return check.errors
    requests = payload.get("requests")
    if not isinstance(requests, list) or not 1 <= len(requests) <= 100:
        check.fail("requests", "between 1 and 100 requests")
        return check.errors
    for i, one in enumerate(requests):
        where = f"requests[{i}]"
        if not check.keys(one, {"model", "content", "taskType", "title", "outputDimensionality"}, where):
            continue
        if one.get("model") != f"models/{slug}":
            check.fail(f"{where}.model", "Model names should start with `models/` and match the batch's model")
        dims = one.get("outputDimensionality")
        if dims is not None and (not isinstance(dims, int) or dims < 1):
            check.fail(f"{where}.outputDimensionality", "must be positive")
        content = one.get("content")
        if check.keys(content, CONTENT_KEYS, f"{where}.content"):
            parts = content.get("parts")
            if not isinstance(parts, list) or not parts:
                check.fail(f"{where}.content.parts", "must contain at least one part")
            else:
                for j, part in enumerate(parts):
                    check.part(part, f"{where}.content.parts[{j}]", None)
    return check.errors
