"""Application wiring only: middleware, routes, health, and the state's cleanup context."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.typedefs import Middleware

from data_plane import logs, providers
from data_plane.body import too_large
from data_plane.errors import GatewayError, render
from data_plane.exchange import EXCHANGE, Exchange
from data_plane.listing import (
    GEMINI_MODEL_ROUTE,
    get_gemini_model,
    get_model,
    get_vllm_model,
    list_gemini_models,
    list_models,
    list_vllm_models,
    speaks_anthropic,
)
from data_plane.metrics import METRICS, DataPlaneMetrics
from data_plane.native import make_handler
from data_plane.objects import batches, files
from data_plane.observe import finish, stamp_overhead, stamp_routing
from data_plane.providers import ANTHROPIC, ENDPOINTS, LOCAL_ROUTES, Endpoint
from data_plane.settings import Settings
from data_plane.state import STATE, node_state_ctx
from data_plane.usage import RECORD_ID_HEADER, client_request_id, new_record_id
from data_plane.usage.meter import CANCELLED, CLIENT_CLOSED, ERROR

log = logging.getLogger("odock.data_plane")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def family_for_path(path: str) -> int:
    """The provider family whose error shape a path's errors use (the providers table decides)."""
    return providers.family_for_path(path)


def family_for(request: web.BaseRequest) -> int:
    """The family whose error shape a request's errors use: by path, and for ``/v1/models*`` by client."""
    path = request.path
    if (path == "/v1/models" or path.startswith("/v1/models/")) and speaks_anthropic(request):
        return ANTHROPIC
    return family_for_path(path)


ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]
_UNKNOWN_EXPECTATION = GatewayError(
    417, "expectation_failed", "Only 'Expect: 100-continue' is supported", close=True
)


def continue_handler(limit: int) -> ExpectHandler:
    """The routes' ``Expect`` handler: a declared body over ``limit`` is refused before ``100 Continue``.

    aiohttp's default handler says "100 Continue" to any size, inviting the client to send
    a body the gateway will refuse. It runs before the middleware, so it renders its own errors.
    """

    async def expect(request: web.Request) -> web.StreamResponse | None:
        family = family_for(request)
        if request.headers.get("Expect", "").strip().lower() != "100-continue":
            return render(family, _UNKNOWN_EXPECTATION)
        length = request.content_length
        if length is not None and length > limit:
            return render(family, too_large(limit))
        if request.version == HttpVersion11:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the answer's head is still to come
        return None

    return expect


def request_id_for(request: web.BaseRequest, fresh: str | None = None) -> str:
    """A well-formed client x-request-id, else a fresh one."""
    return client_request_id(request) or fresh or f"req_{secrets.token_hex(12)}"


def gateway_middleware(metrics: DataPlaneMetrics, natives: Mapping[Handler, Endpoint]) -> Middleware:
    """The one layer every request passes: its exchange, header-timeout bookkeeping, the status.

    It opens the request's :class:`Exchange` (ids; on a native endpoint, the one ``natives`` maps
    its handler to, the endpoint and start time), works out how the request ended once (a
    response, a GatewayError rendered in the family's shape, an unknown route, a cancellation,
    a bug) and, on a native endpoint, closes the exchange with it (``observe.finish``: usage
    record, limits settlement, metrics, log line) before the error is rendered.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        record_id = new_record_id()
        client_id = client_request_id(request)
        endpoint = natives.get(handler)
        if endpoint is None:
            ex = Exchange(record_id, client_id or record_id, client_id)
        else:
            ex = Exchange(record_id, client_id or record_id, client_id, endpoint, time.perf_counter())
            metrics.in_flight_now += 1
        request[EXCHANGE] = ex
        started = getattr(request.protocol, "request_started", None)
        if started is not None:
            started()
        try:
            response = await handler(request)
        except GatewayError as err:
            if endpoint is not None:
                finish(request, ex, metrics, err.status, err.code, ERROR)
            return render(family_for(request), err)
        except web.HTTPNotFound as exc:
            if endpoint is not None:
                finish(request, ex, metrics, exc.status, "", 0)
            return render(family_for(request), GatewayError(404, "not_found", "Unknown endpoint"))
        except web.HTTPMethodNotAllowed as exc:
            if endpoint is not None:
                finish(request, ex, metrics, exc.status, "", 0)
            resp = render(
                family_for(request), GatewayError(405, "method_not_allowed", "Method not allowed here")
            )
            resp.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))  # RFC 9110: a 405 names them
            return resp
        except asyncio.CancelledError:
            if endpoint is not None:
                finish(request, ex, metrics, CLIENT_CLOSED, "", CANCELLED)
            raise
        except Exception as exc:
            if endpoint is not None:
                if isinstance(exc, web.HTTPException):
                    finish(request, ex, metrics, exc.status, "", 0)
                else:
                    finish(request, ex, metrics, 500, "internal_error", 0)
            log.exception("unhandled error on %s", request.path[:200])
            return render(family_for(request), GatewayError(500, "internal_error", "Internal gateway error"))
        else:
            if endpoint is not None:
                finish(request, ex, metrics, response.status, "", 0)
            return response
        finally:
            finished = getattr(request.protocol, "request_finished", None)
            if finished is not None:
                finished(request.content.is_eof())

    return middleware


async def stamp_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every header the gateway adds, in one handler.

    ``x-request-id`` on every answer; on native endpoints also ``x-odock-request-id``
    (metered requests), the limit headers (admitted requests), the routing headers (requests that
    went upstream: ``x-odock-attempts``, ``x-odock-deployment``, ``x-odock-model``) and
    ``x-odock-overhead-ms``.
    """
    headers = response.headers
    ex = request.get(EXCHANGE)
    if ex is None:  # answered before the middleware (the Expect handler)
        headers["x-request-id"] = request_id_for(request)
        return
    headers["x-request-id"] = ex.request_id
    if ex.endpoint is None:  # not a native endpoint: nothing metered or admitted
        return
    meter = ex.meter
    if meter is not None:
        headers[RECORD_ID_HEADER] = meter.request_id
    admission = ex.admission
    if admission is not None:
        admission.write_headers(headers)
    if ex.attempts:  # the request went upstream through the attempt loop (attempts.py)
        stamp_routing(headers, ex)
    stamp_overhead(response, ex)


async def _flush_logs(_app: web.Application) -> None:
    logs.flush()  # queued request lines reach stderr before the worker exits


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the worker's event loop answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness alone: ``{"status": "ready"}`` or 503 with a fixed reason. The details (ids, pools,
    counts) are served on the metrics listener only (``GET /readyz/details``), never to clients."""
    code, body = request.app[STATE].public_status()
    return web.json_response(body, status=code)


def build_app(settings: Settings) -> web.Application:
    """The data-plane application for one worker."""
    metrics = DataPlaneMetrics(multiprocess=settings.metrics_dir is not None)
    natives: dict[Handler, Endpoint] = {}
    app = web.Application(
        middlewares=[gateway_middleware(metrics, natives)], client_max_size=settings.max_body_bytes
    )
    app[METRICS] = metrics
    app.cleanup_ctx.append(node_state_ctx(settings))
    app.on_response_prepare.append(stamp_headers)
    app.on_cleanup.append(_flush_logs)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    expect = continue_handler(settings.max_body_bytes)
    for path, handler in (
        ("/v1/models", list_models),
        ("/v1/models/{model}", get_model),
        ("/v1/vllm/models", list_vllm_models),
        ("/v1/vllm/models/{model}", get_vllm_model),
        ("/v1beta/models", list_gemini_models),
        (GEMINI_MODEL_ROUTE, get_gemini_model),
    ):
        app.router.add_get(path, handler, expect_handler=expect)
    for endpoint in ENDPOINTS:
        if (endpoint.method, endpoint.route) in LOCAL_ROUTES:
            continue
        native = make_handler(endpoint)
        natives[native] = endpoint
        app.router.add_route(endpoint.method, endpoint.route, native, expect_handler=expect)
    upload_expect = continue_handler(settings.max_upload_bytes + files.FORM_OVERHEAD)
    for endpoint, objects_handler in files.ROUTES:  # OpenAI's Files API (data_plane/objects/files.py)
        natives[objects_handler] = endpoint
        # Uploads are streamed to a spool, never read through client_max_size: their own limit.
        upload = endpoint is files.UPLOAD
        app.router.add_route(
            endpoint.method, endpoint.route, objects_handler, expect_handler=upload_expect if upload else expect
        )
    for endpoint, objects_handler in batches.ROUTES:  # OpenAI's Batch API (data_plane/objects/batches.py)
        natives[objects_handler] = endpoint
        app.router.add_route(endpoint.method, endpoint.route, objects_handler, expect_handler=expect)
    return app
