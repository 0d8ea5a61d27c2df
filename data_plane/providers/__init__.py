"""Provider dialects: the table of families, every native endpoint, and which family a path speaks.

One module per family (``openai``, ``anthropic``, ``gemini``, ``vllm``) builds that family's
``Endpoint`` objects and its ``Dialect``: routes, auth header, error body and SSE error
event, dropped headers, listing shape and the usage shape each endpoint answers in. The
generic machinery is ``endpoint.py`` (upstream URLs), ``dialect.py`` and ``headers.py``. Adding
a family is one module plus a line in ``_FAMILIES`` below.

Import direction: ``providers`` imports ``data_plane.usage`` (the generic usage machinery its
families plug their extraction hooks into); nothing in ``data_plane.usage`` imports
``providers``.
"""

from __future__ import annotations

from data_plane.providers import anthropic, anthropic_chat, gemini, gemini_chat, openai, vllm
from data_plane.providers.dialect import FAMILY_NAMES, Dialect, Listing, family_name
from data_plane.providers.endpoint import BodyKind, Endpoint, ModelIn, Query, Streams
from data_plane.providers.translator import ChatTranslator

OPENAI = openai.FAMILY
ANTHROPIC = anthropic.FAMILY
GEMINI = gemini.FAMILY
VLLM = vllm.FAMILY

_FAMILIES = (openai.DIALECT, anthropic.DIALECT, gemini.DIALECT, vllm.DIALECT)
DIALECTS: dict[int, Dialect] = {d.family: d for d in _FAMILIES}
# OpenAI chat completions translated to a family's native API (issue 13).
TRANSLATORS: dict[int, ChatTranslator] = {
    ANTHROPIC: anthropic_chat.TRANSLATOR,
    GEMINI: gemini_chat.TRANSLATOR,
}
# The dialect of paths no family claims (and of families this build does not know).
DEFAULT_DIALECT = openai.DIALECT
ENDPOINTS: tuple[Endpoint, ...] = tuple(e for d in DIALECTS.values() for e in d.endpoints)
# Routes the data plane answers itself from the control plane (not in ENDPOINTS, never proxied).
LOCAL_ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model}"),
    ("GET", vllm.MODELS_ROUTE),
    ("GET", vllm.MODELS_ROUTE + "/{model}"),
)
_PATH_OWNERS = tuple(d for d in _FAMILIES if d.paths)


def endpoint_named(name: str) -> Endpoint:
    """The endpoint with this stable name (KeyError if none)."""
    return _BY_NAME[name]


def dialect_of(family: int) -> Dialect:
    """The dialect of ``family`` (the default one for a family this build does not know)."""
    return DIALECTS.get(family, DEFAULT_DIALECT)


def family_for_path(path: str) -> int:
    """The provider family whose error shape a path's errors use (OpenAI's unless a family owns it)."""
    for dialect in _PATH_OWNERS:
        if dialect.owns_path(path):
            return dialect.family
    return DEFAULT_DIALECT.family


_BY_NAME = {e.name: e for e in ENDPOINTS}

__all__ = [
    "ANTHROPIC",
    "DEFAULT_DIALECT",
    "DIALECTS",
    "ENDPOINTS",
    "FAMILY_NAMES",
    "GEMINI",
    "LOCAL_ROUTES",
    "OPENAI",
    "TRANSLATORS",
    "VLLM",
    "BodyKind",
    "Dialect",
    "Endpoint",
    "Listing",
    "ModelIn",
    "Query",
    "Streams",
    "dialect_of",
    "endpoint_named",
    "family_for_path",
    "family_name",
]
