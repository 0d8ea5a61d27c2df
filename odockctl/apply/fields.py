"""Walking untrusted YAML with a path, so every error names the field.

The loader rejects duplicate mapping keys (PyYAML silently keeps the last)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, datetime
from typing import Any, TypeVar, cast

import yaml

from odockctl.errors import UsageError
from odockctl.values import ValueProblem

T = TypeVar("T")
_TYPE_NAMES = {
    str: "a string",
    int: "a whole number",
    bool: "true or false",
    dict: "a mapping",
    list: "a list",
    float: "a number",
}


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML; a syntax problem becomes one line naming file, line and column."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise UsageError(f"{source}: invalid YAML at {where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: invalid YAML: {exc}") from None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (datetime, date)):
        return "a timestamp"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def shown_key(key: Any, limit: int = 40) -> str:
    """A mapping key as quoted in an error: printable and short (the file may not be ours to echo)."""
    text = "".join(c if c.isprintable() else "?" for c in str(key)[: limit + 1])
    return text if len(text) <= limit else text[:limit] + "..."


class Node:
    """A value in the document and where it is (``orgs[0].models[1]``)."""

    def __init__(self, value: Any, path: str, source: str) -> None:
        self.value = value
        self.path = path
        self.source = source

    def fail(self, message: str) -> UsageError:
        """A one-line error naming this node's path."""
        where = f"{self.path}: " if self.path else ""
        return UsageError(f"{self.source}: {where}{message}")

    def expect(self, kind: type[T]) -> T:
        """The value when it has the given type (bool is not an int here)."""
        ok = isinstance(self.value, kind) and not (kind is int and isinstance(self.value, bool))
        if not ok:
            raise self.fail(f"expected {_TYPE_NAMES.get(kind, kind.__name__)}, got {_kind(self.value)}")
        return cast(T, self.value)

    def parse(self, parser: Callable[[Any], T]) -> T:
        """Run a values.* parser; its complaint is prefixed with this path."""
        try:
            return parser(self.value)
        except ValueProblem as exc:
            raise self.fail(str(exc)) from None

    def mapping(self, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> Fields:
        """This node as a mapping with only the allowed keys."""
        data = self.expect(dict)
        for key in data:
            if not isinstance(key, str) or key not in allowed:
                raise Node(None, self._child(shown_key(key)), self.source).fail(
                    f"unknown field (allowed here: {', '.join(allowed)})"
                )
        for key in required:
            if key not in data or data[key] is None:
                raise Node(None, self._child(key), self.source).fail("required field missing")
        return Fields(data, self)

    def items(self) -> Iterator[Node]:
        """Children of a list node."""
        for i, value in enumerate(self.expect(list)):
            yield Node(value, f"{self.path}[{i}]", self.source)

    def string_map(self) -> dict[str, str]:
        """A mapping of strings to strings (labels, default models)."""
        out: dict[str, str] = {}
        for key, value in self.expect(dict).items():
            child = Node(value, self._child(str(key)), self.source)
            if not isinstance(key, str):
                raise child.fail("keys must be strings")
            if not isinstance(value, str):
                raise child.fail(f"expected a string, got {_kind(value)} (quote it)")
            out[key] = value
        return out

    def _child(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key


class Fields:
    """Access to a validated mapping's children."""

    def __init__(self, data: dict[str, Any], node: Node) -> None:
        self.data = data
        self.node = node

    def has(self, key: str) -> bool:
        """True when the key is present and not null."""
        return self.data.get(key) is not None

    def child(self, key: str) -> Node:
        """The node under ``key`` (value None when absent)."""
        return Node(self.data.get(key), self.node._child(key), self.node.source)
