"""Calls on a provider object go to the one deployment that holds it (docs/files-and-batches.md).

A file or batch lives at one provider account: the deployment of the model that created it,
recorded in the ledger. Every later call on it goes there, once: no retry on another
deployment, no fallback model (they cannot see the object). If that deployment or its model
was removed since, the call answers 502 ``object_deployment_gone``.

:func:`locate` finds the deployment (and checks the key may still use the model, 403 like the
native endpoints); :func:`open_upstream` sends one request to it through a :class:`Relay`
(secret scrubbed from the answer, egress policy and timeouts as on the native path);
:func:`relay_answer` and :func:`read_answer` hand the answer on, streamed or read whole.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from aiohttp import web

from data_plane import attempts
from data_plane.errors import GatewayError
from data_plane.governance.domain import ControlPlaneUnavailable, Deployment, Route, RouteUnusable
from data_plane.native import not_allowed, unavailable
from data_plane.objects.call import Call
from data_plane.objects.errors import deployment_gone
from data_plane.objects.ledger import OwnedObject
from data_plane.providers import DIALECTS, OPENAI
from data_plane.providers.endpoint import url_for_path
from data_plane.providers.headers import build_headers
from data_plane.relay import Relay
from data_plane.routing.health import DEFAULT_NAME
from data_plane.scrub import secret_for
from data_plane.upstream.body import BodySource
from data_plane.upstream.egress import EGRESS
from data_plane.upstream.response import UpstreamResponse

__all__ = [
    "answer", "deployment_named", "locate", "locate_object", "object_path", "open_upstream", "read_answer",
    "read_whole", "relay_answer", "scrubbed",
]  # fmt: skip


async def locate(call: Call, model_name: str, deployment: str) -> tuple[Route, Deployment]:
    """The route and deployment holding an object of ``model_name`` at ``deployment``.

    502 ``object_deployment_gone`` when the model (or the deployment) no longer exists, is
    disabled or is no longer an OpenAI-family model; 403 when the key may not use the model.
    """
    try:
        route = await call.state.cache.route(call.grant.org_id, model_name)
    except ControlPlaneUnavailable:
        raise unavailable() from None
    except RouteUnusable:
        raise GatewayError(
            502, "credential_unavailable", "The model's provider credential cannot be used right now"
        ) from None
    if route is None or not route.enabled or route.family != OPENAI:
        raise deployment_gone()
    if not call.grant.allows(model_name):
        raise not_allowed(model_name)
    dep = deployment_named(route, deployment)
    if dep is None:
        raise deployment_gone()
    call.meter.model_name = route.model_name[:256]
    call.meter.pricing = route.pricing
    return route, dep


async def locate_object(call: Call, obj: OwnedObject) -> tuple[Route, Deployment]:
    """:func:`locate` for an object the ledger returned."""
    return await locate(call, obj.model_name, obj.deployment)


def deployment_named(route: Route, name: str) -> Deployment | None:
    """The route's deployment called ``name`` (a route naming none has one: ``default``, its own fields)."""
    for dep in route.deployments:
        if dep.name == name:
            return dep
    if not route.deployments and name == DEFAULT_NAME:
        return Deployment(
            name=DEFAULT_NAME, base_url=route.base_url, upstream_slug=route.upstream_slug, timeout=route.timeout,
            credential_id=route.credential_id, secret=route.secret,
        )  # fmt: skip
    return None


def object_path(collection: str, object_id: str, suffix: str = "") -> str:
    """The provider path of one object (``/files/<id>/content``): the id percent-encoded, one segment."""
    return f"/{collection}/{quote(object_id, safe='')}{suffix}"


async def open_upstream(
    call: Call,
    route: Route,
    dep: Deployment,
    method: str,
    path: str,
    *,
    query: str = "",
    body: bytes | BodySource | None = None,
    content_type: str = "",
    streaming: bool = False,
    sending_body: bool = False,
    deadline: float | None = None,
) -> tuple[Relay, UpstreamResponse]:
    """Send one request to ``dep`` (``path`` under its base URL, the client's ``query`` minus credentials).

    ``sending_body``: a large upload, whose first-byte timeout counts from after the body was
    sent, so the bound is the request's total time rather than the deployment's timeout.
    ``deadline`` (loop time): the trip's own bound instead of the request's (created.take_back).
    """
    request, settings, meter = call.request, call.state.settings, call.meter
    if deadline is None:
        deadline = call.deadline
    relay = Relay(
        request, meter, family=OPENAI, upstream_idle=settings.timeouts.upstream_idle, deadline=deadline,
        max_buffered=settings.max_buffered_response_bytes, max_sse_event=settings.max_sse_event_bytes,
    )  # fmt: skip
    try:
        url = url_for_path(dep.base_url, path, query)
    except ValueError:
        raise GatewayError(502, "upstream_misconfigured", "The model's upstream address is not usable") from None
    try:
        headers = build_headers(DIALECTS[OPENAI], request.headers.items(), dep.secret)
    except (ValueError, UnicodeDecodeError):
        raise GatewayError(
            502, "credential_unavailable", "The model's provider credential cannot be used right now"
        ) from None
    for name in [n for n in headers if n.lower() == "content-type"]:
        del headers[name]  # the body sent is the gateway's (a rebuilt form, or none), not the client's
    if content_type:
        headers["Content-Type"] = content_type
    attempts.note(call.ex, meter, dep, 1)
    meter.streamed = streaming
    relay.secret = secret = secret_for(dep.secret)
    timeout = dep.timeout
    relay.idle = min(relay.idle, timeout) if timeout > 0 else relay.idle
    first_byte = timeout
    if sending_body or timeout <= 0:
        first_byte = max(timeout, deadline - asyncio.get_running_loop().time())
    EGRESS.set(route.egress)  # checked on each new upstream connection (upstream/egress.py)
    upstream = await relay.open(
        call.state.transport, method, url, headers, body,
        tenant=secret.pool_tag, first_byte_timeout=first_byte, network=dep.network,
    )  # fmt: skip
    return relay, upstream


async def relay_answer(relay: Relay, upstream: UpstreamResponse, *, streaming: bool) -> web.StreamResponse:
    """The answer passed on as it comes (file content: never held whole)."""
    return await relay.relay(upstream, streaming=streaming)


async def read_whole(relay: Relay, upstream: UpstreamResponse) -> bytes | web.StreamResponse:
    """The answer's body read whole (bounded, released), or, over ``ODOCK_MAX_BUFFERED_RESPONSE_BYTES``,
    the answer already passed on as it came. Nothing is settled yet: :func:`answer` does that."""
    body = await relay.read_failure(upstream)
    if len(body) > relay.max_buffered:
        return await relay.relay_rest(upstream, body)
    return body


def scrubbed(relay: Relay, body: bytes) -> bytes:
    """``body`` without the deployment's secret (what the client gets, and what the ledger keeps)."""
    return relay.secret.bytes(body) if relay.secret is not None else body


def answer(relay: Relay, upstream: UpstreamResponse, body: bytes) -> web.Response:
    """The client's response for a body :func:`read_whole` read (the meter settled with its status)."""
    return relay.buffered_answer(upstream, body)


async def read_answer(relay: Relay, upstream: UpstreamResponse) -> tuple[web.StreamResponse, bytes | None]:
    """The answer read whole (bounded) and passed on; its scrubbed body when it was a 2xx one read whole."""
    body = await read_whole(relay, upstream)
    if not isinstance(body, bytes):
        return body, None
    ok = 200 <= upstream.status < 300
    return answer(relay, upstream, body), (scrubbed(relay, body) if ok else None)
