"""Application wiring only: middleware, routes, health, and the state's cleanup context."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from data_plane import logs
from data_plane.errors import ANTHROPIC, GEMINI, OPENAI, VLLM, GatewayError, render
from data_plane.gateway import make_handler
from data_plane.limits import stamp_limit_headers
from data_plane.listing import get_model, list_models, list_vllm_models
from data_plane.metrics import METRICS, DataPlaneMetrics
from data_plane.observe import OBSERVATION, observed, stamp_overhead
from data_plane.providers import ENDPOINTS, LOCAL_ROUTES
from data_plane.settings import Settings
from data_plane.state import STATE, node_state_ctx
from data_plane.usage import METER, RECORD_ID, RECORD_ID_HEADER, new_record_id

log = logging.getLogger("odock.data_plane")

REQUEST_ID: web.RequestKey[str] = web.RequestKey("odock_request_id", str)
_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._:-]{1,128}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def family_for_path(path: str) -> int:
    """The provider family whose error shape a path's errors use."""
    if path.startswith("/v1beta/"):
        return GEMINI
    if path.startswith("/v1/vllm/"):
        return VLLM
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return ANTHROPIC
    return OPENAI


def request_id_for(request: web.BaseRequest, fresh: str | None = None) -> str:
    """A well-formed client x-request-id, else a fresh one."""
    given = request.headers.get("x-request-id")
    if given and _REQUEST_ID_OK.fullmatch(given):
        return given
    return fresh or f"req_{secrets.token_hex(12)}"


@web.middleware
async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, header-timeout bookkeeping, and GatewayError rendering in the family's shape."""
    record_id = new_record_id()
    request[RECORD_ID] = record_id
    request[REQUEST_ID] = request_id_for(request, record_id)
    started = getattr(request.protocol, "request_started", None)
    if started is not None:
        started()
    try:
        return await handler(request)
    except GatewayError as err:
        return render(family_for_path(request.path), err)
    except web.HTTPNotFound:
        return render(family_for_path(request.path), GatewayError(404, "not_found", "Unknown endpoint"))
    except web.HTTPMethodNotAllowed:
        return render(
            family_for_path(request.path), GatewayError(405, "method_not_allowed", "Method not allowed here")
        )
    except Exception:
        log.exception("unhandled error on %s", request.path[:200])
        return render(
            family_for_path(request.path), GatewayError(500, "internal_error", "Internal gateway error")
        )
    finally:
        finished = getattr(request.protocol, "request_finished", None)
        if finished is not None:
            finished(request.content.is_eof())


async def stamp_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every header the gateway adds, in one handler.

    ``x-request-id`` on every answer; on native endpoints also ``x-odock-request-id``
    (metered requests), the limit headers (admitted requests) and ``x-odock-overhead-ms``.
    """
    headers = response.headers
    headers["x-request-id"] = request.get(REQUEST_ID) or request_id_for(request)
    obs = request.get(OBSERVATION)
    if obs is None:  # not a native endpoint: nothing metered or admitted
        return
    meter = request.get(METER)
    if meter is not None:
        headers[RECORD_ID_HEADER] = meter.request_id
    await stamp_limit_headers(request, response)
    stamp_overhead(response, obs, meter)


async def _flush_logs(_app: web.Application) -> None:
    logs.flush()  # queued request lines reach stderr before the worker exits


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the worker's event loop answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness plus the status object (connected/disconnected, staleness, cache, RPC counts)."""
    status = request.app[STATE].status()
    return web.json_response(status, status=200 if status["ready"] else 503)


def build_app(settings: Settings) -> web.Application:
    """The data-plane application for one worker."""
    app = web.Application(middlewares=[gateway_middleware], client_max_size=settings.max_body_bytes)
    metrics = DataPlaneMetrics(multiprocess=settings.metrics_dir is not None)
    app[METRICS] = metrics
    app.cleanup_ctx.append(node_state_ctx(settings))
    app.on_response_prepare.append(stamp_headers)
    app.on_cleanup.append(_flush_logs)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    app.router.add_get("/v1/vllm/models", list_vllm_models)
    for endpoint in ENDPOINTS:
        if (endpoint.method, endpoint.route) in LOCAL_ROUTES:
            continue
        app.router.add_route(
            endpoint.method, endpoint.route, observed(endpoint, make_handler(endpoint), metrics)
        )
    return app
