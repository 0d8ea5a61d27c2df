"""Model listings answered by the gateway itself: the models the presented key may use.

Three dialects, each in the shape its official SDK parses:

- OpenAI (``GET /v1/models``, ``/v1/models/{model}``, ``/v1/vllm/models``): every family.
- Anthropic (the same ``/v1/models`` paths, told apart by the ``anthropic-version`` header
  every Anthropic SDK sends): anthropic-family models, newest first, with Anthropic's
  ``limit`` / ``after_id`` / ``before_id`` pagination.
- Gemini (``GET /v1beta/models``, ``/v1beta/models/{model}``): gemini-family models as
  ``models/<name>``, by name, with ``pageSize`` / ``pageToken`` pagination.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from data_plane.errors import ANTHROPIC, GEMINI, VLLM, GatewayError, clip, family_name
from data_plane.governance.domain import ControlPlaneUnavailable, KeyGrant, ModelSummary
from data_plane.native import authorize, not_allowed, not_found, unavailable, valid_model_name
from data_plane.state import STATE, NodeState

ANTHROPIC_VERSION = "anthropic-version"
ANTHROPIC_LIMIT = (1, 1000, 20)  # min, max, default (Anthropic's Models API)
GEMINI_PAGE_SIZE = (1000, 50)  # max (larger sizes are clamped, as Google does), default
GEMINI_METHODS = ("generateContent", "streamGenerateContent")
# Model names never contain "/" (docs/architecture.md); ":" starts a Gemini custom method
# ("models/x:generateContent"), so the GET slot stops there and never shadows a POST route.
GEMINI_MODEL_ROUTE = "/v1beta/models/{model:[^{}/:]+}"
_LIFECYCLES = frozenset({"active", "deprecated", "retired"})


def speaks_anthropic(request: web.BaseRequest) -> bool:
    """Whether a ``/v1/models`` request comes from an Anthropic client (it sends ``anthropic-version``)."""
    return ANTHROPIC_VERSION in request.headers


def _bad_parameter(name: str, message: str) -> GatewayError:
    return GatewayError(400, "invalid_parameter", message, param=name)


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
        and family_name(m.family) != "unknown"
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


# --- OpenAI (and vLLM) -------------------------------------------------------------------


def _openai_object(model: ModelSummary) -> dict[str, Any]:
    return {
        "id": model.name,
        "object": "model",
        "created": model.created,
        "owned_by": family_name(model.family),
    }


async def list_models(request: web.Request) -> web.Response:
    """GET /v1/models: the key's models, in OpenAI's list format (Anthropic's with ``anthropic-version``)."""
    state = request.app[STATE]
    grant = await authorize(state, request)
    if speaks_anthropic(request):
        models = await _usable(state, grant, ANTHROPIC)
        return web.json_response(anthropic_page(models, request.query))
    models = await _usable(state, grant)
    return web.json_response({"object": "list", "data": [_openai_object(m) for m in models]})


async def list_vllm_models(request: web.Request) -> web.Response:
    """GET /v1/vllm/models: the vLLM models this key may use."""
    state = request.app[STATE]
    grant = await authorize(state, request)
    models = await _usable(state, grant, VLLM)
    return web.json_response({"object": "list", "data": [_openai_object(m) for m in models]})


async def get_model(request: web.Request) -> web.Response:
    """GET /v1/models/{model}: one model, if it exists and this key may use it (OpenAI or Anthropic shape)."""
    state = request.app[STATE]
    grant = await authorize(state, request)
    name = request.match_info["model"]
    if speaks_anthropic(request):
        return web.json_response(anthropic_object(await _one(state, grant, name, ANTHROPIC)))
    return web.json_response(_openai_object(await _one(state, grant, name)))


# --- Anthropic ---------------------------------------------------------------------------


def _rfc3339(unix_seconds: int) -> str:
    return datetime.fromtimestamp(max(0, unix_seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def anthropic_object(model: ModelSummary) -> dict[str, Any]:
    """A model in Anthropic's ``ModelInfo`` shape (every model the gateway lists is ``active``)."""
    return {
        "type": "model",
        "id": model.name,
        "display_name": model.name,
        "created_at": _rfc3339(model.created),
        "lifecycle": "active",
    }


def _int_parameter(query: MultiMapping[str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise _bad_parameter(name, f"{name}: expected an integer, got {clip(raw)!r}") from None


def _lifecycles(query: MultiMapping[str]) -> frozenset[str] | None:
    values = [*query.getall("lifecycle", []), *query.getall("lifecycle[]", [])]
    if not values:
        return None
    chosen = frozenset(v.strip() for raw in values for v in raw.split(","))
    unknown = chosen - _LIFECYCLES
    if unknown:
        raise _bad_parameter("lifecycle", f"lifecycle: unknown value {clip(min(unknown))!r}")
    return chosen


def _cursor_index(ids: Sequence[str], name: str, value: str) -> int:
    try:
        return ids.index(value)
    except ValueError:
        raise _bad_parameter(name, f"{name}: no model {clip(value)!r} in this list") from None


def anthropic_page(models: Sequence[ModelSummary], query: MultiMapping[str]) -> dict[str, Any]:
    """One page of Anthropic's model list: newest first, ``limit`` 1..1000 (20), ``after_id``/``before_id``."""
    low, high, default = ANTHROPIC_LIMIT
    limit = _int_parameter(query, "limit", default)
    if not low <= limit <= high:
        raise _bad_parameter("limit", f"limit: must be between {low} and {high}")
    after, before = query.get("after_id") or None, query.get("before_id") or None
    if after is not None and before is not None:
        raise _bad_parameter("before_id", "Give after_id or before_id, not both")
    lifecycles = _lifecycles(query)
    if lifecycles is not None and "active" not in lifecycles:
        models = []
    ordered = sorted(models, key=lambda m: (-m.created, m.name))
    ids = [m.name for m in ordered]
    if before is not None:
        end = _cursor_index(ids, "before_id", before)
        start = max(0, end - limit)
        page, has_more = ordered[start:end], start > 0
    else:
        start = _cursor_index(ids, "after_id", after) + 1 if after is not None else 0
        page, has_more = ordered[start : start + limit], start + limit < len(ordered)
    return {
        "data": [anthropic_object(m) for m in page],
        "has_more": has_more,
        "first_id": page[0].name if page else None,
        "last_id": page[-1].name if page else None,
    }


# --- Gemini ------------------------------------------------------------------------------


def gemini_object(model: ModelSummary) -> dict[str, Any]:
    """A model in Gemini's ``Model`` shape; ``name`` is what generateContent takes."""
    return {
        "name": f"models/{model.name}",
        "baseModelId": model.name,
        "displayName": model.name,
        "supportedGenerationMethods": list(GEMINI_METHODS),
    }


def _page_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode("utf-8")).decode("ascii").rstrip("=")


def _after_token(token: str) -> str:
    try:
        padded = token + "=" * (-len(token) % 4)
        name = base64.b64decode(padded, altchars=b"-_", validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        name = ""
    if not name:
        raise _bad_parameter("pageToken", "pageToken: not a token this list handed out")
    return name


def gemini_page(models: Sequence[ModelSummary], query: MultiMapping[str]) -> dict[str, Any]:
    """One page of Gemini's model list, by name; ``pageSize`` (50, at most 1000), ``pageToken``.

    The token names the last model of the previous page, so a model deleted between two
    pages does not break the listing.
    """
    high, default = GEMINI_PAGE_SIZE
    size = _int_parameter(query, "pageSize", default)
    if size < 0:
        raise _bad_parameter("pageSize", "pageSize: must not be negative")
    size = min(size or default, high)
    token = query.get("pageToken") or None
    ordered = sorted(models, key=lambda m: m.name)
    if token is not None:
        after = _after_token(token)
        ordered = [m for m in ordered if m.name > after]
    page = ordered[:size]
    body: dict[str, Any] = {"models": [gemini_object(m) for m in page]}
    if len(ordered) > size:
        body["nextPageToken"] = _page_token(page[-1].name)
    return body


async def list_gemini_models(request: web.Request) -> web.Response:
    """GET /v1beta/models: the gemini-family models this key may use, in Gemini's list format."""
    state = request.app[STATE]
    grant = await authorize(state, request)
    models = await _usable(state, grant, GEMINI)
    return web.json_response(gemini_page(models, request.query))


async def get_gemini_model(request: web.Request) -> web.Response:
    """GET /v1beta/models/{model}: one gemini-family model (``models/`` prefix optional)."""
    state = request.app[STATE]
    grant = await authorize(state, request)
    name = request.match_info["model"].removeprefix("models/")
    return web.json_response(gemini_object(await _one(state, grant, name, GEMINI)))
