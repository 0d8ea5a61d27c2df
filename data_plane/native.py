"""The native-endpoint handler: authenticate, govern, rewrite the model, forward.

Rules, in order (seed "Native endpoint rules"): the key is valid, not revoked
or expired (401) -> the model exists in the key's org and is enabled (404; a
disabled model is indistinguishable from a missing one) -> the key may use it
(403) -> the model's family matches the endpoint's (400 provider_not_allowed).

One exception to the last rule (issue 13): OpenAI's ``/v1/chat/completions`` also serves a
model of another family that opted in to OpenAI-format access (``Route.openai_compatible``):
a vLLM model passes through to its own ``/v1/chat/completions``, an Anthropic or Gemini model
is translated (``translated.py``). This is decided only where the family mismatch is found.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from data_plane import attempts, auth, translated
from data_plane.body import check_declared_length, read_body
from data_plane.errors import GatewayError, clip
from data_plane.exchange import EXCHANGE, Exchange
from data_plane.governance.domain import ControlPlaneUnavailable, KeyGrant, KeyRejected, Route, RouteUnusable
from data_plane.limits.gate import admit_request
from data_plane.native_leg import NativeLeg
from data_plane.payload import PayloadError, form_flag, inspect_json, inspect_multipart
from data_plane.providers import DIALECTS, OPENAI, VLLM, Endpoint, endpoint_named, family_name
from data_plane.providers.audio_duration import measured_upload
from data_plane.providers.dialect import Dialect
from data_plane.providers.headers import HOP_HEADER
from data_plane.relay import Relay
from data_plane.state import STATE, NodeState
from data_plane.usage.meter import FLAG_TRANSLATED, RequestMeter
from data_plane.usage.shapes import NO_USAGE

RETRY_AFTER_SECONDS = 5
MAX_MODEL_NAME = 256
# Model names: 1..256 printable characters without '/', '?', '#', whitespace or controls.
_MODEL_NAME = re.compile(r"[^\s/?#\x00-\x1f\x7f]{1,256}")

_REJECTIONS = {
    "revoked": ("api_key_revoked", "API key has been revoked"),
    "expired": ("api_key_expired", "API key has expired"),
}


def unavailable() -> GatewayError:
    """The 503 for an unreachable control plane with nothing usable cached."""
    return GatewayError(
        503,
        "control_plane_unavailable",
        "Gateway cannot verify the request right now (control plane unreachable); retry shortly",
        retry_after=RETRY_AFTER_SECONDS,
    )


def not_found(name: str) -> GatewayError:
    """The 404 for a model the org does not have (or has disabled)."""
    return GatewayError(
        404, "model_not_found", f"The model {clip(name)!r} does not exist in your organization", param="model"
    )


def not_allowed(name: str) -> GatewayError:
    """The 403 for a model the key may not use."""
    return GatewayError(
        403, "model_not_allowed", f"This API key is not allowed to use the model {clip(name)!r}", param="model"
    )


def loop_detected() -> GatewayError:
    """The 508 for a request a gateway forwarded (x-odock-hop): a model whose base URL is a gateway."""
    return GatewayError(
        508,
        "loop_detected",
        "This request was forwarded by an Odock gateway; a model's base URL points back at a gateway",
    )


def article(word: str) -> str:
    """``word`` with its indefinite article ("an anthropic", "a gemini")."""
    return ("an " if word[:1] in "aeiou" else "a ") + word


def serves_openai_format(route: Route) -> bool:
    """Whether OpenAI's chat endpoint serves this other family's model (its opt-in, a way to reach it)."""
    return route.openai_compatible and (route.family == VLLM or translated.translator_for(route) is not None)


def valid_model_name(name: str) -> bool:
    """Whether ``name`` could name a model at all (anything else cannot exist: 404 without lookup)."""
    return _MODEL_NAME.fullmatch(name) is not None and name.isprintable()


async def authorize(state: NodeState, request: web.Request) -> KeyGrant:
    """The grant of the presented key, or a 401/503 GatewayError."""
    digest = auth.key_digest(request, state.settings.key_pepper)
    try:
        grant = await state.cache.grant(digest)
    except KeyRejected as exc:
        code, message = _REJECTIONS.get(exc.reason, ("invalid_api_key", "Invalid API key"))
        raise GatewayError(401, code, message) from None
    except ControlPlaneUnavailable:
        raise unavailable() from None
    if grant.expired():
        raise GatewayError(401, "api_key_expired", "API key has expired")
    return grant


async def resolve(
    state: NodeState, grant: KeyGrant, name: str, endpoint_family: int, *, other_families: bool = False
) -> Route:
    """The route for ``name`` after the model, permission and family rules.

    ``other_families``: the endpoint (OpenAI's chat completions) also serves models of other
    families that opted in to OpenAI-format access (:func:`serves_openai_format`).
    """
    if not valid_model_name(name):
        raise not_found(name)
    try:
        route = await state.cache.route(grant.org_id, name)
    except ControlPlaneUnavailable:
        raise unavailable() from None
    except RouteUnusable:
        raise GatewayError(
            502, "credential_unavailable", "The model's provider credential cannot be used right now"
        ) from None
    if route is None or not route.enabled:
        raise not_found(name)
    if not grant.allows(name):
        raise not_allowed(name)
    if route.family != endpoint_family and not (other_families and serves_openai_format(route)):
        raise GatewayError(
            400,
            "provider_not_allowed",
            f"The model {clip(name)!r} is {article(family_name(route.family))} model; "
            f"this endpoint serves {family_name(endpoint_family)} models",
            param="model",
        )
    return route


async def fallback_route(state: NodeState, grant: KeyGrant, name: str) -> Route | None:
    """A fallback model's route when the key may use it (None: missing, disabled, not allowed, unusable)."""
    if not valid_model_name(name) or not grant.allows(name):
        return None
    try:
        route = await state.cache.route(grant.org_id, name)
    except (ControlPlaneUnavailable, RouteUnusable):
        return None
    return route if route is not None and route.enabled else None


def make_handler(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler of one native endpoint."""
    # What depends only on the endpoint is decided once, not per request.
    shape = endpoint.usage
    injectable = endpoint.injectable
    dialect = DIALECTS[endpoint.family]
    form = endpoint.model_in == "form"
    # OpenAI's chat endpoint also serves opted-in models of other families (module docstring).
    other_families = endpoint.family == OPENAI and endpoint.name == "/v1/chat/completions"
    vllm_chat = endpoint_named("/v1/vllm/chat/completions") if other_families else endpoint

    async def handle(request: web.Request) -> web.StreamResponse:
        if HOP_HEADER in request.headers:  # before any work: one nested request, not a loop
            raise loop_detected()
        state = request.app[STATE]
        settings = state.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.timeouts.total
        check_declared_length(request, settings.max_body_bytes)
        grant = await authorize(state, request)
        ex = request[EXCHANGE]
        ex.grant = grant
        # From here on the request is metered: exactly one record, whatever happens (the middleware
        # closes the meter). With metering off the meter only keeps timings (metrics, logs): shape
        # NO_USAGE means no tap and no usage read.
        metering = settings.usage.metering
        ex.meter = meter = RequestMeter(
            state.shipper if metering else None,
            request_id=ex.record_id,
            node_id=settings.node_id,
            org_id=grant.org_id,
            key_id=grant.key_id,
            family=endpoint.family,
            endpoint=endpoint.name,
            shape=shape if metering else NO_USAGE,
            client_request_id=ex.client_request_id,
        )
        return await serve(request, ex, state, grant, meter, deadline)

    async def serve(
        request: web.Request,
        ex: Exchange,
        state: NodeState,
        grant: KeyGrant,
        meter: RequestMeter,
        deadline: float,
    ) -> web.StreamResponse:
        settings = state.settings
        body: bytes | None = None
        content_type = request.headers.get("Content-Type", "") if form else ""
        facts = None
        form_facts = None
        model: str | None = None
        try:
            if endpoint.body != "none":
                body = await read_body(request, settings.max_body_bytes, settings.timeouts)
            if endpoint.body == "json":
                assert body is not None
                facts = inspect_json(body, max_depth=settings.max_json_depth)
            if endpoint.model_in == "body" and facts is not None:
                model = facts.model
            elif form:
                assert body is not None
                form_facts = inspect_multipart(body, content_type)  # parsed once, reused to rewrite
                model = form_facts.model
            elif endpoint.model_in == "path":
                model = endpoint.model_from_path(request.match_info)
        except PayloadError as exc:
            raise GatewayError(400, exc.code, exc.message, param=exc.param) from None

        if model is None:
            model = grant.default_models.get(endpoint.name)
            if model is None:
                raise GatewayError(
                    400,
                    "missing_model",
                    "The request does not name a model ('model' is required)",
                    param="model",
                )
        if valid_model_name(model):
            meter.model_name = model
        ex.route = route = await resolve(state, grant, model, endpoint.family, other_families=other_families)
        meter.upstream_slug = route.upstream_slug[:256]
        meter.pricing = route.pricing
        if route.family != endpoint.family:  # an opted-in model of another family (resolve checked)
            # The record names the backend, and a translated one says so, whatever ends the
            # request (a limit, a 400 before the upstream).
            meter.family = route.family
            if route.family != VLLM:
                meter.flags |= FLAG_TRANSLATED
        if state.limiter is not None:
            ex.admission = await admit_request(
                state.limiter, settings.limits, grant, endpoint, body, facts, route.pricing
            )
        streaming = endpoint.streams == "always" or (
            endpoint.streams == "body_flag"
            and (
                bool(facts.stream)
                if facts is not None
                else body is not None and form_facts is not None and form_flag(body, form_facts)
            )
        )
        inject = streaming and injectable and body is not None and settings.usage.metering
        native_shape = shape if settings.usage.metering else NO_USAGE
        # What the request itself bills (speech: its characters); counted once a 2xx is relayed.
        units = native_shape.request_units(body) if native_shape.request_units and body is not None else None
        if native_shape.measures_audio and form_facts is not None and route.pricing.per_million_audio_seconds_micros:
            assert body is not None
            units = await measured_upload(body, form_facts)  # the answer may not say (audio_duration.py)
        relay: Relay | None = None

        def native_leg(serving: Route, target: Endpoint, target_dialect: Dialect) -> NativeLeg:
            nonlocal relay
            if relay is None:
                relay = Relay(request, meter, family=endpoint.family, upstream_idle=settings.timeouts.upstream_idle,
                              deadline=deadline, max_buffered=settings.max_buffered_response_bytes,
                              max_sse_event=settings.max_sse_event_bytes)  # fmt: skip
            return NativeLeg(request, relay, state.transport, serving, target, target_dialect, body, facts=facts,
                             form_facts=form_facts, content_type=content_type if form else "", streaming=streaming,
                             inject=inject, idle=settings.timeouts.upstream_idle, shape=native_shape,
                             units=units)  # fmt: skip

        async def fallback_leg(name: str) -> attempts.Leg | None:
            found = await fallback_route(state, grant, name)
            if found is None:
                return None
            if found.family == endpoint.family:
                return native_leg(found, endpoint, dialect)
            if not (other_families and serves_openai_format(found)):
                return None  # a family this endpoint cannot serve
            if found.family == VLLM:
                return native_leg(found, vllm_chat, DIALECTS[VLLM])
            assert body is not None
            return translated.fallback_leg(request, ex, state, meter, found, body, deadline)

        fallback = fallback_leg if route.fallbacks else None
        if route.family != endpoint.family and route.family != VLLM:
            translator = translated.translator_for(route)
            assert translator is not None and body is not None
            return await translated.serve(request, ex, state, meter, route, translator, body, deadline, fallback)
        if route.family == endpoint.family:
            leg = native_leg(route, endpoint, dialect)
        else:  # vLLM passed through to its own /v1/chat/completions
            leg = native_leg(route, vllm_chat, DIALECTS[VLLM])
        return await attempts.run(ex, meter, state.health, settings.routing, leg, deadline, fallback)

    return handle
