"""The attempt loop: one client request tried on its model's deployments, then on its fallbacks.

The handler admits the request once, then hands the loop a :class:`Leg` (how to call one
deployment of a route and relay its answer). Per attempt the route's plan (``data_plane.routing``)
names a deployment; its answer decides:

- no answer (refused, reset, connect or first-byte timeout: the gateway's 502/504) or a head
  whose status is retryable (429, 500, 502, 503, 504, 529): the deployment failed (with its
  Retry-After), the answer is read (bounded) and released, and the next deployment is tried;
- any other head (2xx, a 4xx other than 429...): the deployment answered and its answer is
  relayed as it comes. Nothing is retried once a head is taken, so nothing is retried after a
  byte reached the client;
- an error the gateway decides before or instead of an answer (a 400 rewriting the body, a
  misconfigured base URL or credential, egress refused, a redirect) ends the request as it is.

When the model's deployments are exhausted its fallback models are tried in order (each
resolved like the model itself, skipped when missing, disabled, not allowed to the key or not
servable here; their own fallbacks are not followed). Attempts are bounded by
``ODOCK_ROUTING_MAX_ATTEMPTS`` and the request's deadline. When everything failed the answer
is the last upstream answer if one came, else the last 502/504 naming the attempts, and a
503 ``no_deployment_available`` when every deployment was cooling down so none was tried.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol

from aiohttp import web

from data_plane import metrics
from data_plane.errors import GatewayError
from data_plane.exchange import Exchange
from data_plane.governance.domain import Deployment, Route
from data_plane.routing import RETRYABLE_STATUSES, Health, retry_after_seconds
from data_plane.settings import RoutingSettings
from data_plane.upstream.response import UpstreamResponse
from data_plane.usage.meter import RequestMeter

log = logging.getLogger("odock.data_plane.attempts")

# The gateway's own errors for "no answer came": the deployment failed, another may answer.
NO_ANSWER = frozenset({"upstream_unreachable", "upstream_timeout"})
MAX_NAME = 128  # a deployment name in a header or a record


class Leg(Protocol):
    """One route's way to call a deployment and relay its answer (native or translated)."""

    route: Route

    def enter(self, meter: RequestMeter) -> None:
        """The record now speaks of this route's backend (family, usage shape, flags): a fallback's."""
        ...

    async def open(self, dep: Deployment) -> UpstreamResponse:
        """``dep``'s answer once its head came; GatewayError when none usable came."""
        ...

    async def pass_on(self, upstream: UpstreamResponse) -> web.StreamResponse:
        """The answer taken: relayed to the client (released at its end)."""
        ...

    async def hold(self, upstream: UpstreamResponse) -> bytes | web.StreamResponse:
        """A retryable answer read and released (its body), or, too big to hold, passed on (final)."""
        ...

    def answer(self, dep: Deployment, upstream: UpstreamResponse, body: bytes) -> web.StreamResponse:
        """The client's response for a held answer (the last failure), as for any error answer."""
        ...


Fallback = Callable[[str], Awaitable["Leg | None"]]
Held = tuple[Leg, Deployment, UpstreamResponse, bytes]  # a failed answer kept as the last word


def _outcome(status: int) -> str:
    return "rate_limited" if status == 429 else "failed"


async def run(
    ex: Exchange,
    meter: RequestMeter,
    health: Health,
    settings: RoutingSettings,
    leg: Leg,
    deadline: float,
    fallback: Fallback | None = None,
) -> web.StreamResponse:
    """The client's response: the first deployment that answers, else the last failure (module doc)."""
    loop = asyncio.get_running_loop()
    cap = settings.max_attempts
    requested = leg.route.model_name  # the model asked for (a fallback's record keeps it)
    held: Held | None = None  # the last answer that failed
    error: GatewayError | None = None  # the last failure without an answer
    cooling: float | None = None
    names: Iterator[str] | None = None  # the fallbacks, once the model's deployments are exhausted
    current: Leg | None = leg
    while current is not None:
        route = current.route
        plan = health.plan(route)
        try:
            while ex.attempts < cap:
                if ex.attempts and loop.time() >= deadline:
                    break
                dep = plan.next()
                if dep is None:
                    back = plan.cooling_until()
                    if back is not None and (cooling is None or back < cooling):
                        cooling = back
                    break
                if ex.attempts:
                    meter.retrying()
                note(ex, meter, dep, ex.attempts + 1)
                started = loop.time()
                try:
                    upstream = await current.open(dep)
                except GatewayError as err:
                    if err.code not in NO_ANSWER:
                        raise
                    plan.failed(dep)
                    _record(route, dep, "timeout" if err.status == 504 else "unreachable", loop.time() - started)
                    error = err
                    continue
                status = upstream.status
                if status not in RETRYABLE_STATUSES:  # the answer: taken (the common case, kept lean)
                    took = loop.time() - started
                    plan.succeeded(dep, took)
                    _record(route, dep, "ok", took)
                    return await current.pass_on(upstream)
                try:
                    body = await current.hold(upstream)
                except GatewayError as err:  # the error answer broke off: no answer after all
                    plan.failed(dep, status=status)
                    _record(route, dep, _outcome(status), loop.time() - started)
                    error = err
                    continue
                wait = retry_after_seconds(
                    status, upstream.raw_headers, body if isinstance(body, bytes) else None, time.time(),
                    cap=settings.retry_after_max,
                )  # fmt: skip
                plan.failed(dep, wait, status=status)
                _record(route, dep, _outcome(status), loop.time() - started)
                if not isinstance(body, bytes):
                    return body  # too big to hold: passed on as it came
                held = (current, dep, upstream, body)
        finally:
            plan.finish()
        if ex.attempts >= cap or (ex.attempts and loop.time() >= deadline):
            break
        if fallback is None:
            break
        if names is None:
            names = iter(leg.route.fallbacks)
        current = await _next_fallback(names, fallback, ex, meter, requested)
    return _give_up(ex, meter, health, leg, held, error, cooling)


async def _next_fallback(
    names: Iterator[str], fallback: Fallback, ex: Exchange, meter: RequestMeter, requested: str
) -> Leg | None:
    """The next fallback model that can serve this request, its meter fields set; None: no more."""
    for name in names:
        leg = await fallback(name)
        if leg is None:
            continue
        route = leg.route
        ex.routed_model = route.model_name
        meter.model_name = route.model_name
        meter.requested_model = requested
        meter.pricing = route.pricing
        leg.enter(meter)
        return leg
    return None


def _give_up(
    ex: Exchange,
    meter: RequestMeter,
    health: Health,
    primary: Leg,
    held: Held | None,
    error: GatewayError | None,
    cooling: float | None,
) -> web.StreamResponse:
    """Everything failed: the last upstream answer, else the last 502/504, else 503 (nothing tried)."""
    fell_back = bool(ex.routed_model)
    if held is not None:
        leg, dep, upstream, body = held
        # The record and the headers name the deployment (and model) whose answer the client gets.
        ex.deployment = meter.deployment = dep.name[:MAX_NAME]
        meter.upstream_slug = dep.upstream_slug[:256]
        if fell_back:
            _speak_of(ex, meter, leg, primary)
        return leg.answer(dep, upstream, body)
    if fell_back:  # no answer came: the record speaks of the model asked for
        _speak_of(ex, meter, primary, primary)
    if error is not None:
        if ex.attempts > 1:
            raise GatewayError(error.status, error.code, f"{error.message} ({ex.attempts} attempts)")
        raise error
    raise no_deployment(health, cooling)


def _speak_of(ex: Exchange, meter: RequestMeter, leg: Leg, primary: Leg) -> None:
    route = leg.route
    meter.model_name, meter.pricing = route.model_name, route.pricing
    if leg is primary:
        ex.routed_model = meter.requested_model = ""
    else:
        ex.routed_model = route.model_name
    leg.enter(meter)


def note(ex: Exchange, meter: RequestMeter, dep: Deployment, attempt: int) -> None:
    """Attempt number ``attempt`` goes to ``dep``: the headers, the log line and the record say so."""
    ex.attempts = meter.upstream_attempts = attempt
    ex.deployment = meter.deployment = dep.name[:MAX_NAME]
    meter.upstream_slug = dep.upstream_slug[:256]


def no_deployment(health: Health, cooling: float | None) -> GatewayError:
    """The 503 for a request none of whose deployments could be tried (all cooling down or open)."""
    wait = 1 if cooling is None else max(1, math.ceil(cooling - health.clock()))
    return GatewayError(
        503,
        "no_deployment_available",
        "Every deployment of this model is cooling down after failures; retry after the delay given",
        retry_after=wait,
    )


def _record(route: Route, dep: Deployment, outcome: str, seconds: float) -> None:
    try:
        metrics.record_attempt(route.model_name, dep.name, outcome, seconds)
    except Exception:  # a metrics bug must never fail a request
        log.exception("recording an upstream attempt failed")
