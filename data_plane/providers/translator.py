"""The seam of OpenAI-format access to another family's model (issue 13): one translator per backend.

A client sends an OpenAI ``POST /v1/chat/completions``; the model's route names an Anthropic or
Gemini backend. The gateway (``data_plane/translated.py``) parses the body once into a
:class:`ChatRequest`, asks the backend family's :class:`ChatTranslator` for the native
:class:`UpstreamCall`, forwards it with the backend dialect's auth and headers, meters the
native answer with the backend endpoint's usage shape, and hands the answer back to the
translator: a whole JSON answer to :meth:`ChatTranslator.answer`, a stream event by event to a
:class:`ChunkWriter`, an error answer to :meth:`ChatTranslator.error`. Everything the client sees
is OpenAI's shape; nothing a translator returns carries the provider secret (the relay's
scrubber still runs over it).

A translator is pure: bytes and dicts in, bytes and dicts out, no I/O, no aiohttp. It lives
beside its family (``providers/anthropic_chat.py``, ``providers/gemini_chat.py``) and is listed
in ``TRANSLATORS`` (``providers/__init__.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import orjson

if TYPE_CHECKING:
    from data_plane.usage.stream import StreamTap

# What a model may be asked to do beyond plain chat (the control plane's model capabilities).
TOOLS = "tools"
VISION = "vision"
JSON_OUTPUT = "json_output"
STREAMING = "streaming"
# Output tokens asked of a backend that requires a cap (Anthropic's max_tokens) when neither the
# request nor the model sets one (docs/openai-compatibility.md).
DEFAULT_MAX_OUTPUT_TOKENS = 4096


class TranslationError(Exception):
    """The request cannot be expressed to the backend: a 400 ``invalid_request_error`` naming ``param``."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def native_body(document: Any) -> bytes:
    """The native request's JSON; a TranslationError (400) for what orjson cannot write: nesting
    beyond its 254 levels (a body within the gateway's depth bound can still hold deeper function
    arguments, which are JSON strings there), or an integer beyond 64 bits."""
    try:
        return orjson.dumps(document)
    except TypeError as exc:  # orjson.JSONEncodeError; its message is all that tells the cases apart
        reason = str(exc)
        if reason.startswith("Recursion limit"):
            raise TranslationError(
                "the request nests too deeply to be sent to this model (function arguments included)",
                None,
                "json_too_deep",
            ) from None
        if reason.startswith("Integer exceeds"):
            raise TranslationError("a number in the request is out of range", None) from None
        raise  # anything else (a value of a type JSON has not) is the translator's bug: a 500


@dataclass(frozen=True, slots=True)
class TranslatedModel:
    """What a translator needs to know of the route's model."""

    name: str  # the gateway's model name (what the client sent)
    slug: str  # the provider's model id
    max_output_tokens: int = 0  # the model's default output cap; 0: DEFAULT_MAX_OUTPUT_TOKENS
    capabilities: frozenset[str] = frozenset()


class ChatRequest(msgspec.Struct, frozen=True):  # built per request: a struct, not a frozen dataclass
    """The client's chat completions request, parsed once (a JSON object; fields unchecked)."""

    body: Mapping[str, Any]
    stream: bool
    include_usage: bool  # stream_options.include_usage


class UpstreamCall(msgspec.Struct, frozen=True):  # built per request: a struct, not a frozen dataclass
    """The native request: ``path`` (with its query) is appended to the route's base URL."""

    path: str
    body: bytes
    stream: bool  # the answer is server-sent events


class ReplyIds(msgspec.Struct, frozen=True):  # built per request: a struct, not a frozen dataclass
    """What every chunk or answer of one reply repeats."""

    id: str  # "chatcmpl-..."
    created: int  # unix seconds
    model: str  # reported in the answer's ``model``


@dataclass(frozen=True, slots=True)
class OpenAIError:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    status: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None
    retry_after: str | None = None  # seconds, for a Retry-After the upstream gave only in its body

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ChunkWriter(Protocol):
    """One streamed reply: the backend's SSE events in, OpenAI ``chat.completion.chunk`` SSE out."""

    # Whether this writer hands the native stream's usage to the tap it was made with (it decodes
    # the events that carry it anyway); if not, the relay runs that tap over the stream's bytes.
    reads_usage: bool

    def feed(self, event: bytes) -> bytes:
        """One complete upstream event (its lines, without the blank line that ended it) -> zero or
        more complete ``data: {...}\\n\\n`` lines for the client, as soon as there is something to say."""
        ...

    def close(self) -> bytes:
        """At the upstream's clean end: the last chunks (``finish_reason``; the usage chunk with
        ``choices: []`` when asked) and ``data: [DONE]\\n\\n``."""
        ...


class ChatTranslator(Protocol):
    """OpenAI chat completions <-> one backend family's native generation endpoint."""

    def request(self, chat: ChatRequest, model: TranslatedModel) -> UpstreamCall:
        """The native request (TranslationError: the client's request cannot be expressed)."""
        ...

    def answer(self, body: bytes, ids: ReplyIds) -> dict[str, Any]:
        """The backend's 200 JSON answer -> a ``chat.completion`` object (usage included)."""
        ...

    def chunks(self, ids: ReplyIds, include_usage: bool, tap: StreamTap | None = None) -> ChunkWriter:
        """A writer for one streamed reply; ``tap``: the native stream's usage tap, if it has one."""
        ...

    def error(self, status: int, body: bytes) -> OpenAIError:
        """The backend's error answer (any status >= 400, any body) -> OpenAI's error, e.g. a
        context-window overflow -> 400 ``context_length_exceeded``; 429 stays 429."""
        ...
