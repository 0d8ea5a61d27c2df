"""Provider dialects: every native endpoint, its upstream URL, and the headers sent upstream."""

from __future__ import annotations

from data_plane.providers import anthropic, gemini, openai, vllm
from data_plane.providers.endpoint import BodyKind, Dialect, Endpoint, ModelIn, Query, Streams

DIALECTS: dict[int, Dialect] = {
    d.family: d for d in (openai.DIALECT, anthropic.DIALECT, gemini.DIALECT, vllm.DIALECT)
}
ENDPOINTS: tuple[Endpoint, ...] = tuple(e for d in DIALECTS.values() for e in d.endpoints)
# Routes the data plane answers itself from the control plane (not in ENDPOINTS, never proxied).
LOCAL_ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model}"),
    ("GET", vllm.MODELS_ROUTE),
)


def endpoint_named(name: str) -> Endpoint:
    """The endpoint with this stable name (KeyError if none)."""
    return _BY_NAME[name]


_BY_NAME = {e.name: e for e in ENDPOINTS}

__all__ = [
    "DIALECTS",
    "ENDPOINTS",
    "LOCAL_ROUTES",
    "BodyKind",
    "Dialect",
    "Endpoint",
    "ModelIn",
    "Query",
    "Streams",
    "endpoint_named",
]
