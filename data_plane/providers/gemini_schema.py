"""JSON Schema -> Gemini's ``Schema`` (an OpenAPI 3.0 subset) for function parameters and ``responseSchema``.

Gemini's REST API rejects any key outside its ``Schema`` message (``additionalProperties``,
``$schema``, ``strict``, ``$ref``, ``oneOf``...), ``format`` values other than a few per type,
non-string ``enum`` values, and a ``required`` name that is not a property. So: local ``$ref``s
(``#/$defs/X``, ``#/definitions/X``) are inlined (a recursive one is an error), a type list
``["string", "null"]`` becomes ``STRING`` + ``nullable``, ``oneOf`` becomes ``anyOf``, ``const``
a one-value ``enum``, a one-element ``allOf`` is merged, and everything else Gemini does not read
is dropped. Bounded: at most ``MAX_DEPTH`` nested schemas and ``MAX_NODES`` in all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from data_plane.providers.translator import TranslationError

MAX_DEPTH = 32
MAX_NODES = 10_000
TYPES = {"string": "STRING", "number": "NUMBER", "integer": "INTEGER", "boolean": "BOOLEAN",
         "array": "ARRAY", "object": "OBJECT"}
# format values Gemini accepts, by type (others are rejected, so they are dropped)
FORMATS = {"STRING": {"enum", "date-time"}, "NUMBER": {"float", "double"}, "INTEGER": {"int32", "int64"}}
# keys copied as they are (JSON Schema and Gemini spell them alike)
_COPIED = ("title", "description", "nullable", "minItems", "maxItems", "minLength", "maxLength", "pattern",
           "minimum", "maximum", "minProperties", "maxProperties", "default", "example", "propertyOrdering")
# Every key Gemini's Schema message has (the validator in tests/fakes uses this set too).
GEMINI_KEYS = frozenset((*_COPIED, "type", "format", "enum", "properties", "required", "items", "anyOf"))


class _Walk:
    def __init__(self, root: Mapping[str, Any], param: str) -> None:
        defs = root.get("$defs", root.get("definitions"))
        self.defs: Mapping[str, Any] = defs if isinstance(defs, dict) else {}
        self.param = param
        self.nodes = 0

    def fail(self, message: str) -> TranslationError:
        return TranslationError(f"schema not expressible for Gemini: {message}", self.param)

    def resolve(self, node: Mapping[str, Any], seen: tuple[str, ...]) -> tuple[Mapping[str, Any], tuple[str, ...]]:
        while isinstance(ref := node.get("$ref"), str):
            name = ref.removeprefix("#/$defs/").removeprefix("#/definitions/")
            target = self.defs.get(name)
            if name == ref or not isinstance(target, dict):
                raise self.fail(f"unresolvable $ref {ref[:100]!r}")
            if name in seen:
                raise self.fail(f"recursive $ref {ref[:100]!r}")
            seen = (*seen, name)
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return node, seen

    def schema(self, node: Any, depth: int, seen: tuple[str, ...]) -> dict[str, Any]:
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise self.fail("too deep or too large")
        if node is True or node == {}:
            return {}
        if not isinstance(node, dict):
            raise self.fail("a schema must be an object")
        node, seen = self.resolve(node, seen)
        all_of = node.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
            node, seen = self.resolve({**all_of[0], **{k: v for k, v in node.items() if k != "allOf"}}, seen)
        elif all_of is not None:
            raise self.fail("allOf with several schemas")
        out: dict[str, Any] = {k: node[k] for k in _COPIED if k in node}
        self.type_of(node, out)
        variants = node.get("anyOf", node.get("oneOf"))
        if isinstance(variants, list):
            kept = [v for v in variants if not (isinstance(v, dict) and v.get("type") == "null")]
            if len(kept) < len(variants):
                out["nullable"] = True
            cleaned = [self.schema(v, depth + 1, seen) for v in kept]
            if len(cleaned) == 1:
                out = {**cleaned[0], **out}
            elif cleaned:
                out["anyOf"] = cleaned
        self.values(node, out)
        # properties / items on a schema of another type: Gemini refuses them ("only allowed for OBJECT
        # type"), JSON Schema ignores them, so they are dropped.
        kind = out.get("type")
        if isinstance(props := node.get("properties"), dict) and props and kind in (None, "OBJECT"):
            out["properties"] = {str(k): self.schema(v, depth + 1, seen) for k, v in props.items()}
            out.setdefault("type", "OBJECT")
            required = node.get("required")
            if isinstance(required, list):
                names = [r for r in required if isinstance(r, str) and r in out["properties"]]
                if names:
                    out["required"] = names
        if isinstance(items := node.get("items"), dict) and kind in (None, "ARRAY"):
            out["items"] = self.schema(items, depth + 1, seen)
            out.setdefault("type", "ARRAY")
        if out.get("type") == "ARRAY" and "items" not in out:
            out["items"] = {}
        if out.get("type") == "OBJECT" and "properties" not in out:
            # Gemini rejects an OBJECT without properties ("should be non-empty for OBJECT type"), e.g.
            # a free-form dict (additionalProperties): left untyped, as an array without items is.
            del out["type"]
        return out

    def type_of(self, node: Mapping[str, Any], out: dict[str, Any]) -> None:
        kind = node.get("type")
        kinds = kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else []
        if "null" in kinds:
            out["nullable"] = True
        named = [TYPES[k] for k in kinds if isinstance(k, str) and k in TYPES]
        if len(named) == 1:
            out["type"] = named[0]
        elif len(named) > 1:
            out["anyOf"] = [{"type": t} for t in named]
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt in FORMATS.get(out.get("type", ""), ()):
            out["format"] = fmt

    @staticmethod
    def values(node: Mapping[str, Any], out: dict[str, Any]) -> None:
        values = node.get("enum")
        if "const" in node:
            values = [node["const"]]
        # Gemini's enum is a list of strings, on STRING schemas only.
        if isinstance(values, list) and values and all(isinstance(v, str) for v in values):
            out["enum"] = values
            out["type"] = "STRING"
            out["format"] = "enum"


def clean_schema(schema: Any, param: str) -> dict[str, Any]:
    """A JSON Schema -> Gemini ``Schema`` (TranslationError naming ``param`` when it cannot be expressed)."""
    if not isinstance(schema, dict):
        raise TranslationError("a schema must be a JSON object", param)
    walk = _Walk(schema, param)
    return walk.schema(schema, 0, ())
