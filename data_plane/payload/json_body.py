"""Strict inspection of JSON request bodies and a byte-exact rewrite of the top-level model.

The body the gateway checks must be the body the provider parses, so inspection is
stricter than most JSON parsers: anything two parsers could read differently (duplicate
keys, NaN/Infinity, invalid UTF-8, lone surrogates, huge exponents) is refused.

The common path touches the bytes only at C speed:
1. ``msgspec`` decodes the whole body (syntax, UTF-8, NaN/Infinity, trailing garbage).
2. A walk over the decoded containers (never over the bytes) checks nesting depth and
   counts object members, and the ':' characters inside strings.
3. Duplicate keys, at any level: a JSON text has exactly one ':' outside strings per
   object member, so ``body.count(b":")`` minus the ':' inside strings is the number of
   members written; the decoded objects hold fewer exactly when a key was repeated
   (a repeated key drops a member, and with it whatever it contained). A ':' written as
   the escape ``\u003a`` would skew the count, so such bodies take the exact path.
4. The top-level ``model`` value is located by a byte search when ``"model"`` occurs
   once in the body (spelled plainly, no escapes of its letters); otherwise a tokenizing
   walk finds it.

The exact path (a ``re.finditer`` walk over strings and brackets, numbers and literals
skipped inside the regex engine) runs only for bodies the count cannot vouch for, and to
name the duplicate key in the error message.
"""

from __future__ import annotations

import re
from itertools import repeat
from typing import Any, Final

import msgspec

from data_plane.payload.errors import PayloadError, echo

DEFAULT_MAX_DEPTH = 64

# One token per match, every alternative led by a literal so the regex engine jumps
# between candidates at C speed (numbers, literals, ',' and whitespace are never visited).
# Validity was already checked by msgspec, so these patterns only need to tokenize:
# 1. a key (group 1 = its contents) with ':' and, when the value is a string or scalar,
#    that value (group 2): one match per member;
# 2. a run of string values in an array (no group): one match for ["a", "b", ...];
# 3. '{' (group 3), '[' (group 4), '}' (group 5), ']' (group 6).
_S = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_W = rb"[ \t\r\n]*+"
_TOKEN = re.compile(
    rb'"([^"\\]*+(?:\\.[^"\\]*+)*+)"' + _W + b":" + _W + rb"(" + _S + rb"|[-+.0-9A-Za-z]++)?"
    + rb"|" + _S + rb"(?:" + _W + b"," + _W + _S + rb"(?!" + _W + rb":))*+"
    + rb"|\{()|\[()|\}()|\]()",
    re.DOTALL,
)  # fmt: skip
_KEY, _KEY_WITH_VALUE, _OPEN_OBJECT, _OPEN_ARRAY = 1, 2, 3, 4
_WS = re.compile(rb"[ \t\r\n]*")
_BYTE_AT = re.compile(r"\(byte (\d+)\)")
_MODEL_KEY = b"model"
_QUOTED_MODEL = b'"model"'
# After the key: ':' and a string or null value (group 1); anything else is left to the walk.
_MEMBER_VALUE = re.compile(_W + b":" + _W + rb"(" + _S + rb"|null)")
# \u escapes of ':' skew the colon count (looked for only when a backslash is present).
_COLON_ESCAPES = (b"\\u003a", b"\\u003A")
_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()  # a member the body does not have (unlike null)


class JsonFacts(msgspec.Struct, frozen=True):
    """What the gateway needs from a JSON body, found in one inspection.

    A struct rather than a frozen dataclass: built for every JSON request, and a frozen
    dataclass's constructor sets each of its ten fields through ``object.__setattr__`` (1.9 µs
    in ``timeit`` against 0.2, issue 16).
    """

    model: str | None  # None: absent or null
    stream: bool | None  # None: absent or null
    # Byte span [start, end) of the top-level model value (quotes included), or of its null.
    model_span: tuple[int, int] | None
    # Offset of the top-level '{' and how many members it has (for inserting a model).
    object_start: int
    members: int
    max_tokens: int | None = None
    max_output_tokens: int | None = None
    max_completion_tokens: int | None = None
    # Gemini: generationConfig.maxOutputTokens (snake_case accepted as the API does).
    gemini_max_output_tokens: int | None = None
    # The decoded top-level stream_options value, ABSENT when the body has none.
    stream_options: object = ABSENT

    @property
    def output_token_limit(self) -> int | None:
        """The first output-token cap the client set, whichever dialect spelled it."""
        for value in (
            self.max_completion_tokens,
            self.max_tokens,
            self.max_output_tokens,
            self.gemini_max_output_tokens,
        ):
            if value is not None:
                return value
        return None


def inspect_json(body: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> JsonFacts:
    """Validate a JSON request body strictly and extract the routing facts; raise PayloadError."""
    if not body.strip(b" \t\r\n"):
        raise PayloadError("request body is empty; a JSON object is required", code="invalid_json")
    doc = _decode(body, max_depth)
    if type(doc) is not dict:
        raise PayloadError("request body must be a JSON object", code="invalid_json")
    members, texts = _walk(doc, max_depth)
    colons = body.count(b":")
    if colons != members and (
        colons - sum(map(str.count, texts, repeat(":"))) != members
        or (b"\\" in body and (_COLON_ESCAPES[0] in body or _COLON_ESCAPES[1] in body))
    ):
        # A repeated key somewhere (or a body the count cannot vouch for): the exact walk
        # names the key, or finds nothing wrong and the body is fine.
        _scan(body, max_depth)
    model_span = _model_span(body, doc, texts)

    model = doc.get("model")
    # null means "the provider's default" where a provider allows that (OpenAI images):
    # model stays None, but model_span covers the null so a splice replaces it.
    if model is not None and type(model) is not str:
        raise PayloadError("'model' must be a string", code="invalid_model", param="model")
    if model_span is None and "model" in doc:
        # Unreachable for valid JSON; refusing beats inserting a second "model" key.
        raise PayloadError("could not locate 'model' in the body", code="invalid_json", param="model")
    stream = doc.get("stream")  # null is what the OpenAI schema calls "not streaming"
    if stream is not None and type(stream) is not bool:
        raise PayloadError("'stream' must be a boolean", code="invalid_stream", param="stream")

    config = doc.get("generationConfig", doc.get("generation_config"))
    gemini_max = None
    if type(config) is dict:
        gemini_max = _int(config.get("maxOutputTokens", config.get("max_output_tokens")))
    return JsonFacts(
        model=model,
        stream=stream,
        model_span=model_span,
        object_start=_skip_ws(body, 0),
        members=len(doc),
        max_tokens=_int(doc.get("max_tokens")),
        max_output_tokens=_int(doc.get("max_output_tokens")),
        max_completion_tokens=_int(doc.get("max_completion_tokens")),
        gemini_max_output_tokens=gemini_max,
        stream_options=doc.get("stream_options", ABSENT),
    )


def with_model(body: bytes, facts: JsonFacts, slug: str) -> bytes:
    """Return body with only the top-level model value replaced by slug (inserted first when absent)."""
    encoded = msgspec.json.encode(slug)
    view = memoryview(body)  # slices without copies: the join makes the one copy
    if facts.model_span is not None:
        start, end = facts.model_span
        return b"".join((view[:start], encoded, view[end:]))
    at = facts.object_start + 1
    sep = b"," if facts.members else b""
    return b"".join((view[:at], b'"model":', encoded, sep, view[at:]))


def _decode(body: bytes, max_depth: int) -> Any:
    try:
        return _DECODER.decode(body)
    except RecursionError:
        raise PayloadError(f"JSON nesting is deeper than {max_depth} levels", code="json_too_deep") from None
    except UnicodeDecodeError:
        raise PayloadError("request body is not valid UTF-8", code="invalid_json") from None
    except msgspec.ValidationError:
        raise PayloadError("JSON number out of range", code="invalid_json") from None
    except msgspec.DecodeError as exc:
        raise PayloadError(_syntax_message(body, str(exc)), code="invalid_json") from None
    except ValueError:  # a gateway error is always a 400, never a 500
        raise PayloadError("request body is not valid JSON", code="invalid_json") from None


def _syntax_message(body: bytes, detail: str) -> str:
    found = _BYTE_AT.search(detail)
    if found:
        at = int(found.group(1))
        if body.startswith((b"NaN", b"Infinity"), at):
            return "NaN and Infinity are not valid JSON numbers"
        if at < len(body) and body[at] >= 0x80:
            return "request body is not valid UTF-8"
    if "truncated" in detail:
        # msgspec also reports lone UTF-16 surrogate escapes this way.
        return "request body is not valid JSON (truncated, or an invalid \\u escape)"
    # msgspec's messages name a position and a reason, never the input itself.
    return f"request body is not valid JSON: {detail[:120]}"


def _too_deep(max_depth: int) -> PayloadError:
    return PayloadError(f"JSON nesting is deeper than {max_depth} levels", code="json_too_deep")


def _walk(doc: dict[str, Any], max_depth: int) -> tuple[int, list[str]]:
    """Check the nesting depth; return (members of every object, every key and string value)."""
    members = 0
    texts: list[str] = []
    stack: list[tuple[Any, int]] = [(doc, 1)]
    pop, push, add = stack.pop, stack.append, texts.append
    while stack:
        node, depth = pop()
        if depth > max_depth:
            raise _too_deep(max_depth)
        if type(node) is dict:
            members += len(node)
            texts.extend(node)
            values = node.values()
        else:
            if len(node) > 16:
                try:
                    sum(node)  # C speed; only numbers and booleans add up (token ids, embeddings)
                    continue
                except TypeError:
                    pass
            values = node
        for value in values:
            kind = type(value)
            if kind is str:
                add(value)
            elif kind is dict or kind is list:
                push((value, depth + 1))
    return members, texts


def _model_span(body: bytes, doc: dict[str, Any], texts: list[str]) -> tuple[int, int] | None:
    """The byte span of the top-level model value (None when there is no top-level model)."""
    if "model" not in doc:
        return None
    if texts.count("model") == 1:
        # No other key or string is "model", so a '"model"' in the bytes is either this key
        # or the tail of a string ending in an escaped quote and "model" (a backslash before it).
        at = body.find(_QUOTED_MODEL)
        if at > 0 and body[at - 1] != 0x5C:
            value = _MEMBER_VALUE.match(body, at + len(_QUOTED_MODEL))
            if value is not None:
                return value.span(1)
    return _scan(body, 1 << 30, check_keys=False)[1]


def _scan(body: bytes, max_depth: int, *, check_keys: bool = True) -> tuple[int, tuple[int, int] | None]:
    """Check depth and duplicate keys; return (top-level member count, span of a scalar top-level model).

    With ``check_keys=False`` (a body already validated) it only locates the model and
    stops there.
    """
    stack: list[set[bytes] | None] = []
    members = 0
    model_span: tuple[int, int] | None = None
    for m in _TOKEN.finditer(body):
        kind = m.lastindex
        if kind is None:  # string values in an array
            continue
        if kind <= _KEY_WITH_VALUE:
            key = m.group(1)
            if b"\\" in key:
                key = msgspec.json.decode(b'"' + key + b'"').encode("utf-8", "surrogatepass")
            if not check_keys:
                if len(stack) == 1 and key == _MODEL_KEY:
                    return members, m.span(2) if kind == _KEY_WITH_VALUE else None
                continue
            seen = stack[-1]
            assert seen is not None  # keys only occur in objects (msgspec validated)
            if key in seen:
                raise PayloadError(
                    f"duplicate key {echo(key.decode('utf-8', 'replace'))} in a JSON object",
                    code="duplicate_key",
                    param="model" if key == _MODEL_KEY else None,
                )
            seen.add(key)
            if len(stack) == 1:
                members += 1
                if key == _MODEL_KEY and kind == _KEY_WITH_VALUE:
                    model_span = m.span(2)
        elif kind <= _OPEN_ARRAY:
            stack.append(set() if kind == _OPEN_OBJECT and check_keys else None)
            if len(stack) > max_depth:
                raise _too_deep(max_depth)
        else:
            stack.pop()
    return members, model_span


def _skip_ws(body: bytes, pos: int) -> int:
    m = _WS.match(body, pos)
    return m.end() if m else pos


def _int(value: object) -> int | None:
    return value if type(value) is int else None
