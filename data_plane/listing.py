"""Model listings answered by the gateway itself: the models the presented key may use."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from data_plane.errors import VLLM, GatewayError, clip, family_name
from data_plane.gateway import authorize, not_found, unavailable, valid_model_name
from data_plane.governance.types import ControlPlaneUnavailable, KeyGrant, ModelSummary
from data_plane.state import STATE, NodeState


def _model_object(model: ModelSummary) -> dict[str, Any]:
    return {
        "id": model.name,
        "object": "model",
        "created": model.created,
        "owned_by": family_name(model.family),
    }


async def _usable(state: NodeState, grant: KeyGrant) -> list[ModelSummary]:
    try:
        models = await state.cache.models(grant.org_id)
    except ControlPlaneUnavailable:
        raise unavailable() from None
    return [m for m in models if m.enabled and grant.allows(m.name) and family_name(m.family) != "unknown"]


async def list_models(request: web.Request) -> web.Response:
    """GET /v1/models: every model this key may use, in OpenAI's list format."""
    state = request.app[STATE]
    grant = await authorize(state, request)
    models = await _usable(state, grant)
    return web.json_response({"object": "list", "data": [_model_object(m) for m in models]})


async def list_vllm_models(request: web.Request) -> web.Response:
    """GET /v1/vllm/models: the vLLM models this key may use."""
    state = request.app[STATE]
    grant = await authorize(state, request)
    models = [m for m in await _usable(state, grant) if m.family == VLLM]
    return web.json_response({"object": "list", "data": [_model_object(m) for m in models]})


async def get_model(request: web.Request) -> web.Response:
    """GET /v1/models/{model}: one model, if it exists and this key may use it."""
    state = request.app[STATE]
    grant = await authorize(state, request)
    name = request.match_info["model"]
    if not valid_model_name(name):
        raise not_found(name)
    try:
        models = await state.cache.models(grant.org_id)
    except ControlPlaneUnavailable:
        raise unavailable() from None
    found = next((m for m in models if m.name == name and m.enabled), None)
    if found is None:
        raise not_found(name)
    if not grant.allows(name):
        raise GatewayError(
            403,
            "model_not_allowed",
            f"This API key is not allowed to use the model {clip(name)!r}",
            param="model",
        )
    return web.json_response(_model_object(found))
