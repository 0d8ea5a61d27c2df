"""What the fake provider was asked (Ask) and what it answers (JsonReply / StreamReply)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.multipart import Part

CREATED = 1_700_000_000  # fixed timestamps keep replies deterministic


@dataclass(frozen=True)
class Ask:
    """A parsed request: family, native path, model, stream flag and deterministic token counts."""

    family: str
    path: str
    query: dict[str, str]
    body: bytes
    payload: dict[str, Any]
    form: list[Part]
    model: str
    stream: bool
    prompt_tokens: int
    pieces: tuple[str, ...]

    @property
    def completion_tokens(self) -> int:
        """One completion token per streamed piece."""
        return len(self.pieces)

    @property
    def text(self) -> str:
        """The whole generated text."""
        return "".join(self.pieces)

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def include_usage(self) -> bool:
        """OpenAI ``stream_options.include_usage``."""
        opts = self.payload.get("stream_options")
        return isinstance(opts, dict) and opts.get("include_usage") is True


@dataclass(frozen=True)
class JsonReply:
    """A complete JSON answer."""

    body: Any
    status: int = 200
    content_type: str = "application/json"

    def encode(self) -> bytes:
        """The body bytes."""
        return dumps(self.body)


@dataclass(frozen=True)
class StreamReply:
    """A streamed answer: frames written one by one; ``last_piece`` is the frame index of the last piece."""

    frames: list[bytes]
    last_piece: int
    content_type: str = "text/event-stream; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def dumps(obj: Any) -> bytes:
    """Compact JSON, as the providers send it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sse(data: Any, event: str | None = None, newline: str = "\n") -> bytes:
    """One server-sent event (``data`` already a str is sent verbatim)."""
    payload = data if isinstance(data, str) else dumps(data).decode("utf-8")
    head = f"event: {event}{newline}" if event else ""
    return f"{head}data: {payload}{newline}{newline}".encode()
