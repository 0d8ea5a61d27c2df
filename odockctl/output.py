"""Printing: aligned tables and key/value blocks for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC
from typing import Any, TextIO

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from odockctl.values import format_usd


def to_dict(message: Message) -> dict[str, Any]:
    """A message as JSON-ready data with the proto field names."""
    return MessageToDict(message, preserving_proto_field_name=True)


def timestamp_text(ts: Timestamp, present: bool = True) -> str:
    """An RFC 3339 UTC timestamp, or '-' when unset."""
    if not present or (ts.seconds == 0 and ts.nanos == 0):
        return "-"
    return ts.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def usd(micros: int | None) -> str:
    """Micro-USD as $1.50, or '-'."""
    return "-" if micros is None else f"${format_usd(micros)}"


def mapping_text(values: dict[str, str] | Any) -> str:
    """A map as k=v,k=v or '-'."""
    items = sorted(dict(values).items())
    return ",".join(f"{k}={v}" for k, v in items) if items else "-"


class Output:
    """Where results go, in the chosen format."""

    def __init__(self, stream: TextIO, as_json: bool) -> None:
        self.stream = stream
        self.as_json = as_json

    def line(self, text: str = "") -> None:
        """One line of human output."""
        self.stream.write(text + "\n")

    def json(self, data: Any) -> None:
        """Pretty, stable JSON."""
        self.stream.write(json.dumps(data, indent=2, sort_keys=True) + "\n")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Columns aligned to their widest cell; '(none)' for no rows."""
        if not rows:
            self.line("(none)")
            return
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        for row in [list(headers), *rows]:
            self.line("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())

    def fields(self, pairs: Sequence[tuple[str, str]]) -> None:
        """A key: value block for one resource."""
        width = max(len(k) for k, _ in pairs)
        for key, value in pairs:
            self.line(f"{(key + ':').ljust(width + 1)} {value}")

    def message(self, message: Message, pairs: Sequence[tuple[str, str]]) -> None:
        """One resource: JSON of the message, or its key/value block."""
        if self.as_json:
            self.json(to_dict(message))
        else:
            self.fields(pairs)

    def listing(
        self, key: str, messages: Sequence[Message], headers: Sequence[str], rows: Sequence[Sequence[str]]
    ) -> None:
        """Many resources: {key: [...]} as JSON, or a table."""
        if self.as_json:
            self.json({key: [to_dict(m) for m in messages]})
        else:
            self.table(headers, rows)
