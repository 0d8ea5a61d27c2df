"""Model listings answered by the gateway itself: the models the presented key may use.

Three dialects, each in the shape its official SDK parses:

- OpenAI (``GET /v1/models``, ``/v1/models/{model}``, ``/v1/vllm/models``, ``/v1/vllm/models/{model}``):
  every family (vLLM's: vLLM models only); each listed entry is retrievable as the same object;
  ``/v1/models`` entries add the model registry's fields (``registry_fields``).
- Anthropic (the same ``/v1/models`` paths, told apart by the ``anthropic-version`` header
  every Anthropic SDK sends): anthropic-family models, newest first, with Anthropic's
  ``limit`` / ``after_id`` / ``before_id`` pagination.
- Gemini (``GET /v1beta/models``, ``/v1beta/models/{model}``): gemini-family models as
  ``models/<name>``, by name, with ``pageSize`` / ``pageToken`` pagination.

The shapes (objects, pages, pagination parameters) belong to each family's dialect
(``Dialect.listing`` in ``data_plane/providers/<family>.py``); this module selects the
models a key may see and answers the routes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import MultiMapping

from data_plane.errors import GatewayError
from data_plane.governance.domain import ControlPlaneUnavailable, KeyGrant, ModelSummary
from data_plane.native import authorize, not_allowed, not_found, unavailable, valid_model_name
from data_plane.payload import PayloadError
from data_plane.providers import ANTHROPIC, DIALECTS, GEMINI, OPENAI, VLLM, Listing
from data_plane.providers.anthropic import VERSION_HEADER as ANTHROPIC_VERSION
from data_plane.providers.translator import JSON_OUTPUT, STREAMING, TOOLS, VISION
from data_plane.state import STATE, NodeState

# Model names never contain "/" (docs/architecture.md); ":" starts a Gemini custom method
# ("models/x:generateContent"), so the GET slot stops there and never shadows a POST route.
GEMINI_MODEL_ROUTE = "/v1beta/models/{model:[^{}/:]+}"


def _listing(family: int) -> Listing:
    listing = DIALECTS[family].listing
    if listing is None:
        raise RuntimeError(f"the {DIALECTS[family].name} dialect has no listing")
    return listing


# The capability names, in the order listing entries show them.
CAPABILITIES = (TOOLS, VISION, JSON_OUTPUT, STREAMING)
OPENAI_LISTING = _listing(OPENAI)
ANTHROPIC_LISTING = _listing(ANTHROPIC)
GEMINI_LISTING = _listing(GEMINI)
VLLM_LISTING = _listing(VLLM)


def openai_callable(model: ModelSummary) -> bool:
    """Whether OpenAI's ``POST /v1/chat/completions`` serves ``model``: openai-family models always,
    any other family's only when the model is ``openai_compatible`` (vLLM passed through,
    Anthropic and Gemini translated: ``native.serves_openai_format``)."""
    return model.family == OPENAI or model.openai_compatible


def registry_fields(model: ModelSummary) -> dict[str, Any]:
    """What an OpenAI listing entry adds to OpenAI's ``Model`` (fields the OpenAI SDK keeps as
    extras): the model registry (docs/openai-compatibility.md, "Model registry and opt-in")."""
    return {
        "openai_compatible": openai_callable(model),
        "context_window": model.context_window or None,
        "capabilities": {name: name in model.capabilities for name in CAPABILITIES},
    }


def _openai_entry(model: ModelSummary) -> dict[str, Any]:
    return {**OPENAI_LISTING.model(model), **registry_fields(model)}


def _openai_page(models: list[ModelSummary], query: MultiMapping[str]) -> dict[str, Any]:
    page = _page(OPENAI_LISTING, models, query)
    by_name = {m.name: m for m in models}
    page["data"] = [{**entry, **registry_fields(by_name[entry["id"]])} for entry in page["data"]]
    return page


def speaks_anthropic(request: web.BaseRequest) -> bool:
    """Whether a ``/v1/models`` request comes from an Anthropic client (it sends ``anthropic-version``)."""
    return ANTHROPIC_VERSION in request.headers


def _page(listing: Listing, models: list[ModelSummary], query: MultiMapping[str]) -> dict[str, Any]:
    """One page in ``listing``'s shape; a bad query parameter is a 400 in the family's error shape."""
    try:
        return listing.page(models, query)
    except PayloadError as exc:
        raise GatewayError(400, exc.code, exc.message, param=exc.param) from None


async def _org_models(state: NodeState, grant: KeyGrant) -> list[ModelSummary]:
    try:
        return await state.cache.models(grant.org_id)
    except ControlPlaneUnavailable:
        raise unavailable() from None


async def _usable(state: NodeState, grant: KeyGrant, family: int | None = None) -> list[ModelSummary]:
    models = await _org_models(state, grant)
    return [
        m
        for m in models
        if m.enabled
        and grant.allows(m.name)
        and m.family in DIALECTS
        and (family is None or m.family == family)
    ]


async def _one(state: NodeState, grant: KeyGrant, name: str, family: int | None = None) -> ModelSummary:
    """The enabled model ``name`` (of ``family`` when given); 404 when absent, 403 when not allowed."""
    if not valid_model_name(name):
        raise not_found(name)
    models = await _org_models(state, grant)
    found = next(
        (m for m in models if m.name == name and m.enabled and (family is None or m.family == family)), None
    )
    if found is None:
        raise not_found(name)
    if not grant.allows(name):
        raise not_allowed(name)
    return found


# --- handlers ----------------------------------------------------------------------------


async def list_models(request: web.Request) -> web.Response:
    """GET /v1/models: the key's models the OpenAI API can call, in OpenAI's list format (with
    ``anthropic-version``: the key's Anthropic models, in Anthropic's)."""
    state = request.app[STATE]
    grant = await authorize(state, request)
    if speaks_anthropic(request):
        models = await _usable(state, grant, ANTHROPIC)
        return web.json_response(_page(ANTHROPIC_LISTING, models, request.query))
    # Only what the OpenAI API can call: a model of another family without openai_compatible
    # would answer 400 provider_not_allowed (its own listing shows it: /v1/vllm/models, Anthropic's).
    models = [m for m in await _usable(state, grant) if openai_callable(m)]
    return web.json_response(_openai_page(models, request.query))


async def list_vllm_models(request: web.Request) -> web.Response:
    """GET /v1/vllm/models: the vLLM models this key may use."""
    state = request.app[STATE]
    grant = await authorize(state, request)
    models = await _usable(state, grant, VLLM)
    return web.json_response(_page(VLLM_LISTING, models, request.query))


async def get_model(request: web.Request) -> web.Response:
    """GET /v1/models/{model}: one model, if it exists and this key may use it (OpenAI or Anthropic shape)."""
    state = request.app[STATE]
    grant = await authorize(state, request)
    name = request.match_info["model"]
    if speaks_anthropic(request):
        return web.json_response(ANTHROPIC_LISTING.model(await _one(state, grant, name, ANTHROPIC)))
    return web.json_response(_openai_entry(await _one(state, grant, name)))


async def get_vllm_model(request: web.Request) -> web.Response:
    """GET /v1/vllm/models/{model}: one vLLM model this key may use, as its listing shows it."""
    state = request.app[STATE]
    grant = await authorize(state, request)
    return web.json_response(VLLM_LISTING.model(await _one(state, grant, request.match_info["model"], VLLM)))


async def list_gemini_models(request: web.Request) -> web.Response:
    """GET /v1beta/models: the gemini-family models this key may use, in Gemini's list format."""
    state = request.app[STATE]
    grant = await authorize(state, request)
    models = await _usable(state, grant, GEMINI)
    return web.json_response(_page(GEMINI_LISTING, models, request.query))


async def get_gemini_model(request: web.Request) -> web.Response:
    """GET /v1beta/models/{model}: one gemini-family model (``models/`` prefix optional)."""
    state = request.app[STATE]
    grant = await authorize(state, request)
    name = request.match_info["model"].removeprefix("models/")
    return web.json_response(GEMINI_LISTING.model(await _one(state, grant, name, GEMINI)))
